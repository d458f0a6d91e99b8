"""Persistence: reopening from disk and database, and several objects on one database."""

from __future__ import annotations

import numpy as np

from opencave.segmentation import SegmentationGraph
from opencave.storage import LiveStore

from .helpers import at, build, supervoxels


def _scenario(tmp_path):  # type: ignore[no-untyped-def]
    svs = supervoxels([(0, 0, 0), (1, 0, 0), (0, 1, 0)], 3)
    edges = [[svs[0], svs[1]], [svs[1], svs[3]], [svs[3], svs[4]], [svs[6], svs[7]]]
    live = LiveStore.in_directory(tmp_path)
    g = build(tmp_path, svs, edges, live=live)
    g.merge(svs[4], svs[6], user_id="u", timestamp=at(1))
    g.split([svs[0]], [svs[7]], user_id="u", timestamp=at(2))
    g.undo(2, user_id="u", timestamp=at(3))
    return g, svs, live


def test_reopen_gives_identical_answers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g, svs, live = _scenario(tmp_path)
    live.dispose()
    again = SegmentationGraph.open(
        LiveStore.in_directory(tmp_path), tmp_path / g.table_id, g.table_id
    )
    for t in (0, 1, 1.5, 2, 3, 4):
        assert np.array_equal(again.get_roots(svs, at(t)), g.get_roots(svs, at(t)))
        assert np.array_equal(
            again.get_roots(svs, at(t), stop_layer=2), g.get_roots(svs, at(t), stop_layer=2)
        )
    root = g.get_root(svs[0])
    assert set(again.lineage_graph([root]).edges) == set(g.lineage_graph([root]).edges)
    assert [op.to_json() for op in again.operations()] == [op.to_json() for op in g.operations()]
    # Counters survived: the next edit mints fresh ids in both objects' eyes.
    op = again.merge(svs[2], svs[8], user_id="u", timestamp=at(5))
    assert not set(op.new_root_ids.tolist()) & set(g.delta_roots(at(0), at(4))[1].tolist())


def test_a_second_object_sees_edits_of_the_first(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g, svs, _ = _scenario(tmp_path)
    other = SegmentationGraph.open(
        LiveStore.in_directory(tmp_path), tmp_path / g.table_id, g.table_id
    )
    op = g.merge(svs[2], svs[5], user_id="u", timestamp=at(4))
    assert other.get_root(svs[2]) == other.get_root(svs[5]) == int(op.new_root_ids[0])
    assert other.operation(op.id).user_id == "u"
    back = other.remove_edges([[svs[2], svs[5]]], user_id="w", timestamp=at(5))
    assert g.get_root(svs[2]) != g.get_root(svs[5])
    assert g.is_latest_roots(back.new_root_ids).all()
    assert [o.id for o in g.operations()] == [o.id for o in other.operations()] == [1, 2, 3, 4, 5]


def test_unknown_directory_or_table(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from opencave.errors import InvalidRequest, NotFound

    g, _, live = _scenario(tmp_path)
    with pytest.raises(NotFound):
        SegmentationGraph.open(live, tmp_path / "nowhere", "x")
    with pytest.raises(InvalidRequest):
        SegmentationGraph.open(live, tmp_path / g.table_id, "another_table")
