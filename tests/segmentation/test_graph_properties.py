"""Model-based property tests: random graphs and random edit sequences (merges, splits by
edges and by sources/sinks, undo, redo) at increasing timestamps, checked against
networkx components of the active edge set at every point in time."""

from __future__ import annotations

import os
from datetime import timedelta

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencave.errors import InvalidRequest
from opencave.segmentation import Operation, SegmentationGraph
from opencave.storage import LiveStore

from .helpers import LAYOUT, Model, actual_structure, at, build, partition, supervoxels

AFFINITIES = (0.25, 0.5, 1.0)


@st.composite
def random_graphs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    coords = st.tuples(*(st.integers(0, 3) for _ in range(3)))
    chunks = draw(st.lists(coords, min_size=1, max_size=5, unique=True))
    counts = draw(st.lists(st.integers(1, 4), min_size=len(chunks), max_size=len(chunks)))
    svs = supervoxels(chunks, counts)
    n = len(svs)
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=2 * n))
    edges = np.array([[svs[a], svs[b]] for a, b in pairs if a != b], dtype=np.uint64)
    edges = edges.reshape(-1, 2)
    aff = np.array([draw(st.sampled_from(AFFINITIES)) for _ in range(len(edges))])
    return svs, edges, aff


def _pick(data: st.DataObject, items: list, label: str):  # type: ignore[no-untyped-def]
    return items[data.draw(st.integers(0, len(items) - 1), label=label)]


class Scenario:
    """Drives the graph and the model side by side."""

    def __init__(self, graph: SegmentationGraph, model: Model, data: st.DataObject) -> None:
        self.graph, self.model, self.data = graph, model, data
        self.ops: list[Operation] = []
        self.times = [at(0)]

    def step(self, when) -> None:  # type: ignore[no-untyped-def]
        kind = self.data.draw(st.sampled_from(["merge", "remove", "split", "undo", "redo"]))
        before = self.graph.get_roots(self.model.svs, when - timedelta(microseconds=1))
        op = getattr(self, kind)(when)
        if op is None:
            return
        self.ops.append(op)
        self.model.commit(when)
        self.times.append(when)
        self._check_lineage(op, before, when)

    def merge(self, when):  # type: ignore[no-untyped-def]
        comps = sorted(self.model.components(), key=min)
        if len(comps) < 2:
            a, b = self.model.svs[0], self.model.svs[-1]
            if a != b:
                with pytest.raises(InvalidRequest):
                    self.graph.merge(a, b, user_id="u", timestamp=when)
            return None
        first = _pick(self.data, comps, "comp a")
        second = _pick(self.data, [c for c in comps if c != first], "comp b")
        a, b = _pick(self.data, sorted(first), "a"), _pick(self.data, sorted(second), "b")
        aff = self.data.draw(st.sampled_from(AFFINITIES))
        op = self.graph.merge(a, b, user_id="merger", timestamp=when, affinity=aff)
        self.model.active[(min(a, b), max(a, b))] = aff
        return op

    def remove(self, when):  # type: ignore[no-untyped-def]
        edges = sorted(self.model.active)
        if not edges:
            return None
        comp = self.model.component_of(_pick(self.data, edges, "edge")[0])
        inside = [e for e in edges if e[0] in comp]
        chosen = self.data.draw(st.lists(st.sampled_from(inside), min_size=1, unique=True))
        op = self.graph.remove_edges(chosen, user_id="splitter", timestamp=when)
        for e in chosen:
            del self.model.active[e]
        return op

    def split(self, when):  # type: ignore[no-untyped-def]
        comps = [sorted(c) for c in self.model.components() if len(c) >= 2]
        if not comps:
            return None
        comp = _pick(self.data, sorted(comps), "comp")
        order = self.data.draw(st.permutations(comp))
        k = self.data.draw(st.integers(1, len(comp) - 1))
        sources = order[: self.data.draw(st.integers(1, k))]
        sinks = order[k : k + self.data.draw(st.integers(1, len(comp) - k))]
        op = self.graph.split(sources, sinks, user_id="splitter", timestamp=when)
        self._check_cut(op, sources, sinks, comp)
        for a, b in op.removed_edges.tolist():
            del self.model.active[(a, b)]
        return op

    def _check_cut(self, op: Operation, sources, sinks, comp) -> None:  # type: ignore[no-untyped-def]
        g = self.model.graph().subgraph(comp).copy()
        removed = [tuple(e) for e in op.removed_edges.tolist()]
        assert all(e in self.model.active for e in removed)
        cut_value = sum(self.model.active[e] for e in removed)
        g.add_edges_from((("S", s) for s in sources), capacity=float("inf"))
        g.add_edges_from(((t, "T") for t in sinks), capacity=float("inf"))
        assert cut_value == pytest.approx(nx.minimum_cut_value(g.to_directed(), "S", "T"))
        g.remove_edges_from(removed)
        g.remove_nodes_from(["S", "T"])
        assert not any(nx.has_path(g, s, t) for s in sources for t in sinks)

    def undo(self, when):  # type: ignore[no-untyped-def]
        return self._replay(when, invert=True)

    def redo(self, when):  # type: ignore[no-untyped-def]
        return self._replay(when, invert=False)

    def _replay(self, when, invert: bool):  # type: ignore[no-untyped-def]
        if not self.ops:
            return None
        target = _pick(self.data, self.ops, "target")
        add = target.is_merge != invert
        edges = target.added_edges if target.is_merge else target.removed_edges
        affs = target.added_affinities if target.is_merge else target.removed_affinities
        todo = [
            (tuple(e), float(f))
            for e, f in zip(edges.tolist(), affs.tolist(), strict=True)
            if (tuple(e) in self.model.active) != add
        ]
        action = self.graph.undo if invert else self.graph.redo
        if not todo:
            with pytest.raises(InvalidRequest):
                action(target.id, user_id="u", timestamp=when)
            return None
        op = action(target.id, user_id="u", timestamp=when)
        for e, f in todo:
            if add:
                self.model.active[e] = f
            else:
                del self.model.active[e]
        assert (op.undo_of if invert else op.redo_of) == target.id
        return op

    def _check_lineage(self, op: Operation, before: np.ndarray, when) -> None:  # type: ignore[no-untyped-def]
        after = self.graph.get_roots(self.model.svs, when)
        changed = before != after
        assert set(op.old_root_ids.tolist()) == set(before[changed].tolist())
        assert set(op.new_root_ids.tolist()) == set(after[changed].tolist())
        assert not self.graph.is_latest_roots(op.old_root_ids, when).any()
        assert self.graph.is_latest_roots(op.new_root_ids, when).all()
        assert all(t == when for t in self.graph.root_timestamps(op.new_root_ids))
        stamps = self.graph.root_timestamps(op.old_root_ids, latest=True)
        assert all(t == when for t in stamps)
        just_before = when - timedelta(microseconds=1)
        past, _ = self.graph.past_ids(op.new_root_ids, just_before, when)
        svs = np.array(self.model.svs, dtype=np.uint64)
        for new in op.new_root_ids.tolist():
            mine = svs[after == new]
            assert set(past[new]) == set(self.graph.get_roots(mine, just_before).tolist())


def _check_time(graph: SegmentationGraph, model: Model, when) -> None:  # type: ignore[no-untyped-def]
    svs = np.array(model.svs, dtype=np.uint64)
    roots = graph.get_roots(svs, when)
    assert partition(roots, svs) == model.components(when)
    assert graph.is_latest_roots(np.unique(roots), when).all()
    for root in np.unique(roots).tolist():
        assert set(graph.get_leaves(root).tolist()) == set(svs[roots == root].tolist())
    assert actual_structure(graph, when, svs) == model.expected_structure(when)


@settings(
    max_examples=int(os.environ.get("OPENCAVE_SEG_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(graph_data=random_graphs(), data=st.data())
def test_random_edits_match_the_model(tmp_path_factory, graph_data, data) -> None:  # type: ignore[no-untyped-def]
    svs, edges, aff = graph_data
    directory = tmp_path_factory.mktemp("prop")
    live = LiveStore.in_directory(directory)
    graph = build(directory, svs, edges, aff, live=live)
    model = Model(svs, edges, aff)
    scenario = Scenario(graph, model, data)
    for i in range(data.draw(st.integers(1, 8), label="steps")):
        scenario.step(at(10 * (i + 1)))
    # Every committed state, and the time between states, answer like the model.
    for when in scenario.times:
        _check_time(graph, model, when)
        _check_time(graph, model, when + timedelta(seconds=5))
    # Delta roots: what stopped / started being latest between two random times.
    t1, t2 = sorted(data.draw(st.lists(st.sampled_from(scenario.times), min_size=2, max_size=2)))
    old, new = graph.delta_roots(t1, t2)
    roots1 = set(graph.get_roots(svs, t1).tolist())
    roots2 = set(graph.get_roots(svs, t2).tolist())
    assert roots1 - roots2 <= set(old.tolist())
    assert roots2 - roots1 <= set(new.tolist())
    assert not (set(new.tolist()) & roots1)
    # Past ids: every root at t2 comes from roots latest at t1.
    past, _ = graph.past_ids(sorted(roots2), t1, t2)
    for root in roots2:
        assert graph.is_latest_roots(past[root], t1).all()
        mine = svs[graph.get_roots(svs, t2) == root]
        assert set(graph.get_roots(mine, t1).tolist()) <= set(past[root])
    # A second object on the same database and directory answers identically.
    again = SegmentationGraph.open(
        LiveStore.in_directory(directory), directory / "test_graph", "test_graph"
    )
    for when in scenario.times:
        assert np.array_equal(again.get_roots(svs, when), graph.get_roots(svs, when))
    assert LAYOUT.n_layers == graph.n_layers
