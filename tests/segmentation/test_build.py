"""Building the base hierarchy and reading it: roots, children, leaves, skip connections."""

from __future__ import annotations

import numpy as np
import pytest

from opencave.errors import Conflict, InvalidRequest, NodeNotFound
from opencave.segmentation import IdLayout, SegmentationGraph
from opencave.storage import LiveStore

from .helpers import GEOMETRY, LAYOUT, T0, at, build, supervoxels


@pytest.fixture
def graph(tmp_path):  # type: ignore[no-untyped-def]
    # Chunks (0,0,0), (1,0,0) and (2,0,0), three supervoxels each.
    svs = supervoxels([(0, 0, 0), (1, 0, 0), (2, 0, 0)], 3)
    edges = [
        [svs[0], svs[1]],  # a fragment inside chunk 0 ...
        [svs[3], svs[6]],  # ... and one joining chunks 1 and 2 (first common: layer 4)
        [svs[4], svs[5]],
        [svs[2], svs[4]],  # joins chunks 0 and 1 (first common chunk: layer 3)
    ]
    return build(tmp_path, svs, edges), svs


def test_roots_group_connected_supervoxels(graph) -> None:  # type: ignore[no-untyped-def]
    g, svs = graph
    roots = g.get_roots(svs)
    assert roots.dtype == np.uint64
    groups = {frozenset(svs[roots == r].tolist()) for r in np.unique(roots)}
    assert groups == {
        frozenset(svs[[0, 1]].tolist()),
        frozenset(svs[[2, 4, 5]].tolist()),
        frozenset(svs[[3, 6]].tolist()),
        frozenset([int(svs[7])]),
        frozenset([int(svs[8])]),
    }
    assert np.all(LAYOUT.layer(roots) == LAYOUT.n_layers)
    assert np.all(LAYOUT.segment(roots) >= 7_000_000_000)
    assert g.get_root(svs[0]) == roots[0]


def test_skip_connections(graph) -> None:  # type: ignore[no-untyped-def]
    g, svs = graph
    # A fragment inside one chunk is sv -> L2 -> root.
    l2 = g.get_root(svs[0], stop_layer=2)
    assert int(LAYOUT.layer(l2)) == 2
    assert g.get_children(g.get_root(svs[0])).tolist() == [l2]
    assert set(g.get_children(l2).tolist()) == set(svs[[0, 1]].tolist())
    # A lone supervoxel still has a layer-2 parent (as in PyChunkedGraph).
    assert int(LAYOUT.layer(g.get_root(svs[8], stop_layer=4))) == 2
    # Chunks 0 and 1 meet at layer 3: root -> L3 -> two L2 nodes.
    l3 = g.get_root(svs[2], stop_layer=3)
    assert int(LAYOUT.layer(l3)) == 3
    assert len(g.get_children(l3)) == 2
    assert g.get_children(g.get_root(svs[2])).tolist() == [l3]
    # Chunks 1 and 2 first share a layer-4 chunk: layer 3 is skipped.
    node = g.get_root(svs[3], stop_layer=5)
    assert int(LAYOUT.layer(node)) == 4
    assert set(LAYOUT.layer(g.get_children(node)).tolist()) == {2}
    assert g.get_root(svs[3], stop_layer=3) == g.get_root(svs[3], stop_layer=2)


def test_leaves_stop_layer_and_bounds(graph) -> None:  # type: ignore[no-untyped-def]
    g, svs = graph
    root = g.get_root(svs[2])
    assert g.get_leaves(root).tolist() == sorted(svs[[2, 4, 5]].tolist())
    l2 = g.get_leaves(root, stop_layer=2)
    assert set(l2.tolist()) == set(g.get_roots(svs[[2, 4, 5]], stop_layer=2).tolist())
    # Only chunk (1,0,0): x in [64, 128) base voxels with 64-voxel chunks.
    box = ((64, 128), (0, 64), (0, 32))
    assert g.get_leaves(root, bounds=box).tolist() == sorted(svs[[4, 5]].tolist())
    assert g.get_leaves(root, bounds=((500, 600), (0, 64), (0, 32))).tolist() == []
    assert g.get_leaves(svs[0]).tolist() == [svs[0]]
    assert g.get_children(svs[0]).tolist() == []


def test_id_zero_unknown_ids_and_early_timestamps(graph) -> None:  # type: ignore[no-untyped-def]
    g, svs = graph
    assert g.get_roots([0, svs[0]])[0] == 0
    assert g.get_roots([]).shape == (0,)
    missing = int(LAYOUT.encode(1, 3, 3, 3, 1))
    with pytest.raises(NodeNotFound) as err:
        g.get_roots([svs[0], missing])
    assert str(missing) in err.value.message
    with pytest.raises(InvalidRequest):
        g.get_roots(svs, at(-1))
    with pytest.raises(InvalidRequest):
        g.get_roots(svs, stop_layer=99)
    with pytest.raises(NodeNotFound):
        g.get_leaves(missing)
    roots = g.get_roots(svs, T0)
    assert np.array_equal(g.get_roots(roots), roots)  # a root is its own root


def test_builds_are_deterministic(tmp_path) -> None:  # type: ignore[no-untyped-def]
    svs = supervoxels([(0, 0, 0), (3, 1, 2), (1, 1, 1)], [4, 2, 3])
    rng = np.random.default_rng(3)
    edges = svs[rng.integers(0, len(svs), (12, 2))]
    first = build(tmp_path / "a", svs, edges)
    second = build(tmp_path / "b", svs[::-1], edges[::-1])
    assert np.array_equal(first.get_roots(svs), second.get_roots(svs))
    assert np.array_equal(first.get_roots(svs, stop_layer=3), second.get_roots(svs, stop_layer=3))


def test_bad_inputs_are_rejected(tmp_path) -> None:  # type: ignore[no-untyped-def]
    svs = supervoxels([(0, 0, 0)], 3)
    with pytest.raises(InvalidRequest):
        build(tmp_path / "a", svs, [[svs[0], int(LAYOUT.encode(1, 1, 0, 0, 1))]])
    with pytest.raises(InvalidRequest):
        build(tmp_path / "b", np.append(svs, LAYOUT.encode(2, 0, 0, 0, 1)), [])
    small = IdLayout(n_layers=4, spatial_bits=3)  # 8 chunks per axis, 4 fit under one root
    with pytest.raises(InvalidRequest):
        SegmentationGraph.create(
            LiveStore.in_directory(tmp_path / "c"),
            tmp_path / "c" / "g",
            table_id="c",
            layout=small,
            geometry=GEOMETRY,
            supervoxel_ids=small.encode(1, 5, 0, 0, [1]),
            edges=[],
            timestamp=T0,
        )
    with pytest.raises(InvalidRequest):
        build(tmp_path / "d", svs, [[svs[0], svs[1]]], affinities=[-1.0])
    with pytest.raises(InvalidRequest):
        build(tmp_path / "e", svs, [[svs[0], svs[1], svs[2]]])


def test_duplicate_edges_and_self_loops(tmp_path) -> None:  # type: ignore[no-untyped-def]
    svs = supervoxels([(0, 0, 0)], 3)
    g = build(
        tmp_path,
        svs,
        [[svs[0], svs[1]], [svs[1], svs[0]], [svs[2], svs[2]]],
        affinities=[0.2, 0.7, 1.0],
    )
    assert g.base.meta.n_edges == 1
    assert float(g.base.edge_aff[0]) == pytest.approx(0.7)
    assert len(np.unique(g.get_roots(svs))) == 2


def test_create_refuses_to_overwrite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    svs = supervoxels([(0, 0, 0)], 2)
    live = LiveStore.in_directory(tmp_path)
    build(tmp_path, svs, [], live=live)
    with pytest.raises(Conflict):
        build(tmp_path, svs, [], live=live)


def test_progress_bar_and_custom_root_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    svs = supervoxels([(0, 0, 0), (1, 1, 1)], 2)
    g = SegmentationGraph.create(
        LiveStore.in_directory(tmp_path),
        tmp_path / "g",
        table_id="p",
        layout=LAYOUT,
        geometry=GEOMETRY,
        supervoxel_ids=svs,
        edges=[[svs[0], svs[3]]],
        timestamp=T0,
        root_segment_start=5,
        progress=True,
    )
    assert sorted(LAYOUT.segment(np.unique(g.get_roots(svs))).tolist()) == [5, 6, 7]
    assert g.oldest_timestamp() == T0 == g.base_timestamp


def test_layer2_batches_do_not_change_the_result(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from opencave.segmentation.build import build_base

    chunks = [(x, y, z) for x in range(3) for y in range(2) for z in range(2)]
    svs = supervoxels(chunks, 5)
    rng = np.random.default_rng(7)
    edges = svs[rng.integers(0, len(svs), (80, 2))]
    common = dict(
        table_id="t",
        layout=LAYOUT,
        geometry=GEOMETRY,
        supervoxel_ids=svs,
        edges=edges,
        affinities=None,
        timestamp_us=0,
        root_segment_start=1,
    )
    build_base(tmp_path / "one", **common)
    build_base(tmp_path / "many", **common, batch_nodes=7)
    for name in ("run_start", "run_pos", "parent", "children", "child_ptr", "edge_a", "edge_b"):
        one = np.load(tmp_path / "one" / f"{name}.npy")
        many = np.load(tmp_path / "many" / f"{name}.npy")
        assert np.array_equal(one, many), name
