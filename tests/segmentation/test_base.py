"""The base graph's storage: ids kept as runs, index arrays as narrow as their values allow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


def test_a_built_graph_keeps_runs_not_ids_and_narrow_index_arrays(tmp_path: Path) -> None:
    svs = supervoxels([(0, 0, 0), (1, 0, 0), (3, 3, 3)], [40, 40, 3])
    edges = [[svs[i], svs[i + 1]] for i in range(len(svs) - 1)]
    graph = build(tmp_path, svs, edges)
    folder = graph.base.directory
    assert not (folder / "ids.npy").exists()
    assert json.loads((folder / "meta.json").read_text())["format"].endswith("/2")
    for name in ("child_ptr", "edge_ptr_a", "edge_ptr_b", "edge_order_b"):
        assert np.load(folder / f"{name}.npy").dtype == np.uint32, name
    # one run per chunk of supervoxels, then the higher layers' nodes
    assert len(graph.base.node_ids.run_start) < 20
    assert np.array_equal(graph.base.node_ids.at(np.arange(len(svs))), svs)
    assert len(np.unique(graph.get_roots(svs))) == 1


def test_a_graph_stored_in_format_1_reads_the_same(tmp_path: Path) -> None:
    svs = supervoxels([(0, 0, 0), (2, 0, 0)], [5, 5])
    graph = build(tmp_path, svs, [[svs[0], svs[1]], [svs[4], svs[5]], [svs[7], svs[8]]])
    roots = graph.get_roots(svs)
    leaves = graph.get_leaves(int(roots[0]))
    folder = graph.base.directory
    np.save(folder / "ids.npy", graph.base.node_ids.at(np.arange(graph.base.meta.n_nodes)))
    for name in ("child_ptr", "edge_ptr_a", "edge_ptr_b", "edge_order_b"):
        np.save(folder / f"{name}.npy", np.load(folder / f"{name}.npy").astype(np.int64))
    reopened = type(graph).open(graph.live, folder, graph.table_id)
    assert np.array_equal(reopened.get_roots(svs), roots)
    assert np.array_equal(reopened.get_leaves(int(roots[0])), leaves)
