"""Merges, splits, explicit edge removals, undo and redo on small hand-made graphs."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from opencave.errors import InvalidRequest, NodeNotFound, NotFound
from opencave.segmentation.overlay import nodes_table, operations_table

from .helpers import LAYOUT, T0, at, build, supervoxels


@pytest.fixture
def chain(tmp_path):  # type: ignore[no-untyped-def]
    """Six supervoxels in a chain over chunks 0 and 1, with one weak link (0.1) between
    positions 2 and 3; plus a lone supervoxel."""
    svs = supervoxels([(0, 0, 0), (1, 0, 0)], [3, 4])
    edges = [[svs[i], svs[i + 1]] for i in range(5)]
    aff = [1.0, 1.0, 0.1, 1.0, 1.0]
    return build(tmp_path, svs, edges, aff), svs


def test_merge_creates_a_new_root_with_lineage(chain) -> None:  # type: ignore[no-untyped-def]
    g, svs = chain
    before = g.get_roots(svs)
    op = g.merge(
        svs[0], svs[6], user_id="alice", timestamp=at(10), coordinates=[[1, 2, 3], [4, 5, 6]]
    )
    after = g.get_roots(svs)
    assert len(np.unique(after)) == 1
    assert op.id == 1 and op.kind == "merge" and op.is_merge
    assert op.added_edges.tolist() == [sorted([int(svs[0]), int(svs[6])])]
    assert set(op.old_root_ids.tolist()) == {int(before[0]), int(before[6])}
    assert op.new_root_ids.tolist() == [int(after[0])]
    assert op.source_coords == [[1.0, 2.0, 3.0]] and op.sink_coords == [[4.0, 5.0, 6.0]]
    # History is kept: the past still answers with the old roots.
    assert np.array_equal(g.get_roots(svs, at(9)), before)
    assert np.array_equal(g.get_roots(svs, at(10)), after)
    assert not g.is_latest_roots(op.old_root_ids).any()
    assert g.is_latest_roots(op.old_root_ids, at(9)).all()
    assert g.root_timestamps(op.new_root_ids) == [at(10)]
    assert g.operation(op.id).to_json() == op.to_json()


def test_merge_inside_one_chunk_makes_a_new_layer2_node(tmp_path) -> None:  # type: ignore[no-untyped-def]
    svs = supervoxels([(0, 0, 0)], 4)
    g = build(tmp_path, svs, [[svs[0], svs[1]], [svs[2], svs[3]]])
    old_l2 = g.get_roots(svs, stop_layer=2)
    g.merge(svs[1], svs[2], user_id="u", timestamp=at(1))
    new_l2 = g.get_roots(svs, stop_layer=2)
    assert len(np.unique(new_l2)) == 1 and new_l2[0] not in old_l2
    assert set(g.get_children(new_l2[0]).tolist()) == set(svs.tolist())
    assert np.array_equal(g.get_roots(svs, at(0), stop_layer=2), old_l2)


def test_merge_errors_write_nothing(chain) -> None:  # type: ignore[no-untyped-def]
    g, svs = chain
    with pytest.raises(InvalidRequest):
        g.merge(svs[0], svs[1], user_id="u")  # same segment
    with pytest.raises(InvalidRequest):
        g.merge(svs[0], svs[0], user_id="u")
    with pytest.raises(NodeNotFound):
        g.merge(svs[0], int(LAYOUT.encode(1, 5, 5, 5, 1)), user_id="u")
    with pytest.raises(InvalidRequest):
        g.merge(svs[0], g.get_root(svs[6]), user_id="u")  # a root, not a supervoxel
    with pytest.raises(InvalidRequest):
        g.merge(svs[0], svs[6], user_id="")
    with pytest.raises(InvalidRequest):
        g.merge(svs[0], svs[6], user_id="u", affinity=0)
    g.merge(svs[0], svs[6], user_id="u", timestamp=at(5))
    with pytest.raises(InvalidRequest):
        g.undo(1, user_id="u", timestamp=at(4))  # earlier than the last operation
    assert [op.id for op in g.operations()] == [1]


def test_split_cuts_the_weakest_link(chain) -> None:  # type: ignore[no-untyped-def]
    g, svs = chain
    root = g.get_root(svs[0])
    op = g.split(
        [svs[0]],
        [svs[5]],
        user_id="bob",
        timestamp=at(1),
        source_coords=[[0, 0, 0]],
        sink_coords=[[9, 9, 9]],
    )
    assert op.kind == "split" and not op.is_merge
    assert op.removed_edges.tolist() == [[int(svs[2]), int(svs[3])]]
    assert op.removed_affinities.tolist() == pytest.approx([0.1])
    assert op.old_root_ids.tolist() == [root]
    assert len(op.new_root_ids) == 2
    roots = g.get_roots(svs[:6])
    assert len(set(roots[:3])) == 1 and len(set(roots[3:])) == 1 and roots[0] != roots[3]
    assert op.source_ids.tolist() == [int(svs[0])] and op.sink_coords == [[9.0, 9.0, 9.0]]


def test_split_errors_write_nothing(chain) -> None:  # type: ignore[no-untyped-def]
    g, svs = chain
    with pytest.raises(InvalidRequest):
        g.split([svs[0]], [svs[0]], user_id="u")
    with pytest.raises(InvalidRequest):
        g.split([svs[0]], [svs[6]], user_id="u")  # different roots
    with pytest.raises(InvalidRequest):
        g.split([], [svs[1]], user_id="u")
    with pytest.raises(InvalidRequest):
        g.split([svs[0]], [svs[1]], user_id="u", source_coords=[[1, 2, 3], [4, 5, 6]])
    assert g.operations() == []


def test_unseparable_split(tmp_path) -> None:  # type: ignore[no-untyped-def]
    svs = supervoxels([(0, 0, 0)], 3)
    g = build(tmp_path, svs, [[svs[0], svs[1]], [svs[1], svs[2]]], [np.inf, np.inf])
    with pytest.raises(InvalidRequest):
        g.split([svs[0]], [svs[2]], user_id="u")
    assert g.operations() == []


def test_remove_edges(chain) -> None:  # type: ignore[no-untyped-def]
    g, svs = chain
    with pytest.raises(InvalidRequest):
        g.remove_edges([[svs[0], svs[2]]], user_id="u")  # not an edge
    with pytest.raises(InvalidRequest):
        g.remove_edges([[svs[0], svs[1]], [svs[6], svs[6]]], user_id="u")
    op = g.remove_edges([[svs[1], svs[0]]], user_id="u", timestamp=at(1))
    assert op.kind == "split" and op.removed_edges.tolist() == [[int(svs[0]), int(svs[1])]]
    assert len(op.new_root_ids) == 2
    assert g.get_root(svs[0]) != g.get_root(svs[1])


def test_removal_that_does_not_disconnect_still_makes_a_new_root(tmp_path) -> None:  # type: ignore[no-untyped-def]
    svs = supervoxels([(0, 0, 0)], 3)
    g = build(tmp_path, svs, [[svs[0], svs[1]], [svs[1], svs[2]], [svs[0], svs[2]]])
    old = g.get_root(svs[0])
    op = g.remove_edges([[svs[0], svs[2]]], user_id="u", timestamp=at(1))
    assert op.old_root_ids.tolist() == [old]
    assert len(op.new_root_ids) == 1 and op.new_root_ids[0] != old
    # The layer-2 node's content is unchanged, so it is reused under the new root.
    assert g.get_root(svs[0], stop_layer=2) == g.get_root(svs[0], at(0), stop_layer=2)


def test_undo_and_redo(chain) -> None:  # type: ignore[no-untyped-def]
    g, svs = chain
    merge = g.merge(svs[0], svs[6], user_id="u", timestamp=at(1))
    merged = g.get_root(svs[0])
    undo = g.undo(merge.id, user_id="v", timestamp=at(2))
    assert undo.kind == "undo" and undo.undo_of == merge.id
    assert undo.removed_edges.tolist() == merge.added_edges.tolist()
    assert undo.old_root_ids.tolist() == [merged] and len(undo.new_root_ids) == 2
    assert g.get_root(svs[0]) != g.get_root(svs[6])
    # Undo mints new ids rather than resurrecting the old roots.
    assert not set(undo.new_root_ids.tolist()) & set(merge.old_root_ids.tolist())
    with pytest.raises(InvalidRequest):
        g.undo(merge.id, user_id="v", timestamp=at(3))  # already undone
    redo = g.redo(merge.id, user_id="v", timestamp=at(3))
    assert redo.kind == "redo" and redo.redo_of == merge.id and redo.is_merge
    assert g.get_root(svs[0]) == g.get_root(svs[6])
    with pytest.raises(InvalidRequest):
        g.undo(undo.id, user_id="v", timestamp=at(4))  # would re-add an edge that is active
    split = g.split([svs[0]], [svs[5]], user_id="u", timestamp=at(5))
    restored = g.undo(split.id, user_id="u", timestamp=at(6))
    assert restored.is_merge and restored.added_affinities.tolist() == pytest.approx([0.1])
    assert g.get_root(svs[0]) == g.get_root(svs[5])
    with pytest.raises(NotFound):
        g.undo(999, user_id="u")


def test_operation_log_queries(chain) -> None:  # type: ignore[no-untyped-def]
    g, svs = chain
    first = g.merge(svs[0], svs[6], user_id="alice", timestamp=at(1))
    second = g.split([svs[0]], [svs[5]], user_id="bob", timestamp=at(2))
    assert [op.id for op in g.operations()] == [first.id, second.id]
    assert [op.id for op in g.operations(since=at(2))] == [second.id]
    root = g.get_root(svs[0])
    assert [op.id for op in g.operations([root])] == [first.id, second.id]
    other = g.get_root(svs[6])
    assert g.operation(second.id).user_id == "bob"
    assert g.operation(first.id).to_json()["kind"] == "merge"
    log = g.change_log(root, filtered=False)
    assert log["n_mergers"] == 1 and log["n_splits"] == 1
    assert log["user_info"] == {
        "alice": {"n_splits": 0, "n_mergers": 1},
        "bob": {"n_splits": 1, "n_mergers": 0},
    }
    assert log["operations_ids"] == [first.id, second.id]
    table = g.tabular_change_log([root, other])[root]
    assert table["operation_id"].tolist() == [first.id, second.id]
    assert table["is_merge"].tolist() == [True, False]
    assert table["before_root_ids"].tolist()[1] == second.old_root_ids.tolist()
    assert set(table.columns) >= {"timestamp", "user_id", "after_root_ids"}
    filtered = g.tabular_change_log([root], filtered=True)[root]
    assert "in_neuron" not in filtered.columns
    with pytest.raises(NotFound):
        g.operation(42)


def test_failed_edit_leaves_no_trace(chain) -> None:  # type: ignore[no-untyped-def]
    g, svs = chain
    # Occupy the id the merge will mint for its new root, so the edit fails mid-transaction.
    root_chunk = LAYOUT.root_chunk()
    taken = int(np.max(LAYOUT.segment(g.get_roots(svs)))) + 1
    bogus = {
        "table_id": g.table_id,
        "node_id": root_chunk | taken,
        "layer": 6,
        "created": 0,
        "operation_id": 0,
        "children": b"",
    }
    with g.live.begin() as conn:
        conn.execute(nodes_table.insert(), [bogus])
    before = g.get_roots(svs)
    with pytest.raises(sa.exc.IntegrityError):
        g.merge(svs[0], svs[6], user_id="u", timestamp=at(1))
    with g.live.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(operations_table)).scalar() == 0
    assert np.array_equal(g.get_roots(svs), before)
    assert g.operations() == []
    with g.live.begin() as conn:
        conn.execute(nodes_table.delete().where(nodes_table.c.node_id == bogus["node_id"]))
    op = g.merge(svs[0], svs[6], user_id="u", timestamp=at(1))
    assert op.id == 1 and op.new_root_ids.tolist() == [bogus["node_id"]]


def test_edits_default_to_now_and_stay_ordered(chain) -> None:  # type: ignore[no-untyped-def]
    g, svs = chain
    first = g.merge(svs[0], svs[6], user_id="u")
    second = g.undo(first.id, user_id="u")
    assert T0 < first.timestamp <= second.timestamp
