"""Root-id history: lineage graph, past/future ids, latest roots, timestamps, delta roots."""

from __future__ import annotations

import numpy as np
import pytest

from opencave.errors import InvalidRequest, NodeNotFound

from .helpers import LAYOUT, T0, at, build, supervoxels


@pytest.fixture
def history(tmp_path):  # type: ignore[no-untyped-def]
    """A (2 svs), B and C (1 sv each) in three chunks.
    t1: merge A+B -> R1; t2: merge R1+C -> R2; t3: remove the A-B edge -> R3 (A), R4 (B+C)."""
    svs = supervoxels([(0, 0, 0), (1, 0, 0), (2, 0, 0)], [2, 1, 1])
    a1, a2, b, c = svs.tolist()
    g = build(tmp_path, svs, [[a1, a2]])
    base = {name: g.get_root(sv) for name, sv in (("A", a1), ("B", b), ("C", c))}
    op1 = g.merge(a1, b, user_id="u", timestamp=at(1))
    op2 = g.merge(b, c, user_id="u", timestamp=at(2))
    op3 = g.remove_edges([[a1, b]], user_id="u", timestamp=at(3))
    roots = dict(
        base,
        R1=int(op1.new_root_ids[0]),
        R2=int(op2.new_root_ids[0]),
        R3=g.get_root(a1),
        R4=g.get_root(c),
    )
    return g, roots, (op1, op2, op3)


def test_operations_link_old_and_new_roots(history) -> None:  # type: ignore[no-untyped-def]
    _, r, (op1, op2, op3) = history
    assert set(op1.old_root_ids.tolist()) == {r["A"], r["B"]}
    assert set(op2.old_root_ids.tolist()) == {r["R1"], r["C"]}
    assert op3.old_root_ids.tolist() == [r["R2"]]
    assert set(op3.new_root_ids.tolist()) == {r["R3"], r["R4"]}


def test_lineage_graph(history) -> None:  # type: ignore[no-untyped-def]
    g, r, (op1, op2, op3) = history
    graph = g.lineage_graph([r["R2"]])
    expected = {
        (r["A"], r["R1"]),
        (r["B"], r["R1"]),
        (r["R1"], r["R2"]),
        (r["C"], r["R2"]),
        (r["R2"], r["R3"]),
        (r["R2"], r["R4"]),
    }
    assert set(graph.edges) == expected
    assert graph.nodes[r["R1"]] == {"timestamp": at(1).timestamp(), "operation_id": op2.id}
    assert graph.nodes[r["A"]] == {"timestamp": T0.timestamp(), "operation_id": op1.id}
    assert graph.nodes[r["R4"]]["operation_id"] == op3.id
    # The window stops the walk: nothing after t2, nothing before t1.
    window = g.lineage_graph([r["R2"]], at(1), at(2))
    assert set(window.edges) == {(r["R1"], r["R2"]), (r["C"], r["R2"])}
    assert window.nodes[r["R2"]]["operation_id"] == op2.id


def test_past_and_future_ids(history) -> None:  # type: ignore[no-untyped-def]
    g, r, _ = history
    past, future = g.past_ids([r["R4"]], T0, at(3))
    assert set(past[r["R4"]]) == {r["A"], r["B"], r["C"]}
    assert future == {}  # R4 came out of a split: no past id maps to it unambiguously
    past, future = g.past_ids([r["R2"]], T0, at(2))
    assert set(past[r["R2"]]) == {r["A"], r["B"], r["C"]}
    assert future == {r["A"]: r["R2"], r["B"]: r["R2"], r["C"]: r["R2"]}
    past, _ = g.past_ids([r["R2"]], at(1), at(2))
    assert set(past[r["R2"]]) == {r["R1"], r["C"]}
    past, future = g.past_ids([r["R1"]], at(1), at(1.5))
    assert past == {r["R1"]: [r["R1"]]} and future == {r["R1"]: r["R1"]}
    # R1 only merged into R2 by t2: its future is unambiguous.
    past, future = g.past_ids([r["R1"]], at(1), at(2))
    assert future == {r["R1"]: r["R2"]}


def test_latest_roots(history) -> None:  # type: ignore[no-untyped-def]
    g, r, _ = history
    assert set(g.latest_roots(r["A"]).tolist()) == {r["R3"], r["R4"]}
    assert g.latest_roots(r["A"], at(1)).tolist() == [r["R1"]]
    assert g.latest_roots(r["R4"]).tolist() == [r["R4"]]
    with pytest.raises(InvalidRequest):
        g.latest_roots(r["R4"], at(2))


def test_latest_and_timestamps(history) -> None:  # type: ignore[no-untyped-def]
    g, r, _ = history
    ids = [r["A"], r["R1"], r["R4"]]
    assert g.root_timestamps(ids) == [T0, at(1), at(3)]
    assert g.root_timestamps(ids, latest=True, timestamp=at(3)) == [at(1), at(2), at(3)]
    assert g.root_timestamps([r["R1"]], latest=True, timestamp=at(1.5)) == [at(1.5)]
    unknown = int(LAYOUT.encode(LAYOUT.n_layers, 0, 0, 0, 123))
    assert g.is_latest_roots([r["A"], r["R4"], 0, unknown]).tolist() == [False, True, False, False]
    assert g.is_latest_roots([r["A"], r["R1"]], at(1)).tolist() == [False, True]
    assert g.is_latest_roots([r["R1"]], at(0.5)).tolist() == [False]  # not created yet
    with pytest.raises(InvalidRequest):
        g.is_latest_roots([int(LAYOUT.encode(1, 0, 0, 0, 1))])
    with pytest.raises(NodeNotFound):
        g.root_timestamps([unknown])


def test_delta_roots(history) -> None:  # type: ignore[no-untyped-def]
    g, r, _ = history
    old, new = g.delta_roots(T0, at(1))
    assert set(old.tolist()) == {r["A"], r["B"]} and new.tolist() == [r["R1"]]
    old, new = g.delta_roots(at(1), at(2))
    assert set(old.tolist()) == {r["R1"], r["C"]} and new.tolist() == [r["R2"]]
    old, new = g.delta_roots(at(3), at(10))
    assert old.shape == new.shape == (0,)
    assert old.dtype == np.uint64
    old, new = g.delta_roots(T0)
    assert set(new.tolist()) == {r["R1"], r["R2"], r["R3"], r["R4"]}
    with pytest.raises(InvalidRequest):
        g.delta_roots(at(2), at(1))
