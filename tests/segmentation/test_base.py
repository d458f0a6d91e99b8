"""The base graph's storage: ids kept as runs, index arrays as narrow as their values allow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencave.segmentation.base import RunBuilder, SortedIds

from .helpers import build, supervoxels

#: Sorted unique ids with runs and gaps, as minted per chunk (and a few near 2**64).
sorted_ids = st.lists(st.integers(0, 2**64 - 1), max_size=40).map(
    lambda xs: np.unique(np.array(xs + [x + 1 for x in xs if x < 2**64 - 1], dtype=np.uint64))
)
probes = st.lists(st.integers(0, 2**64 - 1), max_size=20)


@settings(max_examples=300, deadline=None)
@given(sorted_ids, probes)
def test_runs_answer_like_the_array_they_stand_for(ids: np.ndarray, extra: list[int]) -> None:
    runs = SortedIds.of(ids)
    assert len(runs) == len(ids)
    assert np.array_equal(runs.at(np.arange(len(ids))), ids)
    values = np.concatenate([ids, np.array(extra, dtype=np.uint64)])
    for side in ("left", "right"):
        assert np.array_equal(runs.searchsorted(values, side=side),
                              np.searchsorted(ids, values, side=side)), side
    expected = np.array([int(np.flatnonzero(ids == v)[0]) if v in ids else -1 for v in values])
    assert np.array_equal(runs.positions(values), expected.astype(np.int64))


@given(sorted_ids, st.lists(st.integers(1, 5), max_size=6))
def test_runs_built_in_batches_equal_runs_built_at_once(ids: np.ndarray, cuts: list[int]) -> None:
    builder = RunBuilder()
    bounds = np.cumsum([0, *cuts])
    for lo, hi in zip(bounds, [*bounds[1:], len(ids)], strict=True):
        builder.add(ids[lo:hi])
    whole, batched = SortedIds.of(ids), builder.ids()
    assert np.array_equal(whole.run_start, batched.run_start)
    assert np.array_equal(whole.run_pos, batched.run_pos)


def test_a_built_graph_keeps_runs_and_positions_in_narrow_arrays(tmp_path: Path) -> None:
    svs = supervoxels([(0, 0, 0), (1, 0, 0), (3, 3, 3)], [40, 40, 3])
    edges = [[svs[i], svs[i + 1]] for i in range(len(svs) - 1)]
    graph = build(tmp_path, svs, edges)
    folder = graph.base.directory
    assert not (folder / "ids.npy").exists()
    assert json.loads((folder / "meta.json").read_text())["format"].endswith("/4")
    for name in ("parent", "children", "edge_a", "edge_b", "child_ptr", "edge_ptr_b",
                 "edge_order_b"):
        assert np.load(folder / f"{name}.npy").dtype == np.uint32, name
    # the edges by their smaller end are found by searching edge_a, not stored per supervoxel
    assert not (folder / "edge_ptr_a.npy").exists()
    # one run per chunk of supervoxels, then the higher layers' nodes
    assert len(graph.base.node_ids.run_start) < 20
    assert np.array_equal(graph.base.node_ids.at(np.arange(len(svs))), svs)
    assert len(np.unique(graph.get_roots(svs))) == 1
    every = np.arange(len(graph.base.node_ids))
    assert np.array_equal(graph.base.layers_at(every),
                          graph.layout.layer(graph.base.node_ids.at(every)))


def _store_as_earlier_formats(folder: Path, version: int) -> None:
    """Rewrite a graph directory as the earlier formats stored it: 3 kept the CSR of the
    edges by their smaller end (``edge_ptr_a``); 2 also node ids (not positions) in
    ``parent``, ``children`` and the edge ends; 1 also the ids themselves and ``int64``
    index arrays."""
    meta = json.loads((folder / "meta.json").read_text())
    meta["format"] = f"opencave-segmentation-base/{version}"
    edge_a = np.load(folder / "edge_a.npy")
    counts = np.bincount(edge_a, minlength=meta["n_supervoxels"])
    np.save(folder / "edge_ptr_a.npy", np.concatenate([[0], np.cumsum(counts)]).astype(np.uint32))
    if version == 3:
        (folder / "meta.json").write_text(json.dumps(meta))
        return
    runs = SortedIds.load(folder)
    parent = np.load(folder / "parent.npy").astype(np.int64)
    parent_ids = np.zeros(len(parent), np.uint64)
    parent_ids[parent > 0] = runs.at(parent[parent > 0] - 1)
    np.save(folder / "parent.npy", parent_ids)
    for name in ("children", "edge_a", "edge_b"):
        np.save(folder / f"{name}.npy", runs.at(np.load(folder / f"{name}.npy")))
    if version == 1:
        np.save(folder / "ids.npy", runs.at(np.arange(len(runs))))
        for name in ("child_ptr", "edge_ptr_a", "edge_ptr_b", "edge_order_b"):
            np.save(folder / f"{name}.npy", np.load(folder / f"{name}.npy").astype(np.int64))
    (folder / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_graph_stored_in_an_earlier_format_reads_the_same(tmp_path: Path,
                                                            version: int) -> None:
    svs = supervoxels([(0, 0, 0), (2, 0, 0)], [5, 5])
    graph = build(tmp_path, svs, [[svs[0], svs[1]], [svs[4], svs[5]], [svs[7], svs[8]]])
    roots = graph.get_roots(svs)
    leaves = graph.get_leaves(int(roots[0]))
    children = graph.get_children(int(roots[0]))
    edges = graph.base.incident_edges(np.arange(len(svs)))
    _store_as_earlier_formats(graph.base.directory, version)
    reopened = type(graph).open(graph.live, graph.base.directory, graph.table_id)
    assert reopened.base.meta.version == version
    assert np.array_equal(reopened.get_roots(svs), roots)
    assert np.array_equal(reopened.get_leaves(int(roots[0])), leaves)
    assert np.array_equal(reopened.get_children(int(roots[0])), children)
    for old, new in zip(reopened.base.incident_edges(np.arange(len(svs))), edges, strict=True):
        assert np.array_equal(old, new)
