"""Edits by (node, point): choosing a supervoxel from a root and a position, re-checking the
choice when the edit is applied, and the PyChunkedGraph shapes built on top (``pcg``)."""

from __future__ import annotations

import numpy as np
import pytest

from opencave.errors import InvalidRequest, NodeNotFound
from opencave.segmentation import pcg
from opencave.segmentation.locate import SupervoxelLocator
from opencave.segmentation.points import nearest_leaf, parse_points

from .helpers import GEOMETRY, LAYOUT, at, build, supervoxels

RES = np.asarray(GEOMETRY.resolution)
SIZE = np.asarray(GEOMETRY.chunk_size)


def centre_nm(chunk: tuple[int, int, int]) -> list[float]:
    return ((np.asarray(chunk) + 0.5) * SIZE * RES).tolist()


@pytest.fixture
def neuron(tmp_path):  # type: ignore[no-untyped-def]
    """A chain of 3 supervoxels in chunk (0,0,0) and 3 in chunk (2,0,0), plus a lone one."""
    svs = supervoxels([(0, 0, 0), (2, 0, 0), (3, 3, 3)], [3, 3, 1])
    edges = [[svs[i], svs[i + 1]] for i in range(5)]
    return build(tmp_path, svs, edges, [0.9, 0.9, 0.2, 0.9, 0.9]), svs


def test_a_point_picks_a_leaf_of_its_chunk_else_of_the_nearest(neuron) -> None:  # type: ignore[no-untyped-def]
    g, svs = neuron
    root = int(g.get_root(svs[0]))
    chosen, within = g.supervoxels_at([root, root, root], [
        centre_nm((0, 0, 0)), centre_nm((2, 0, 0)), centre_nm((3, 0, 0))])
    # smallest id in the containing chunk; (3,0,0) holds none: the nearest chunk is (2,0,0)
    assert chosen.tolist() == [svs[0], svs[3], svs[3]]
    assert within == {int(svs[0]): root, int(svs[3]): root}
    same, none = g.supervoxels_at([svs[4]], [centre_nm((0, 0, 0))])
    assert same.tolist() == [svs[4]] and none == {}  # a supervoxel stands for itself


def test_anchors_choose_within_the_chunk(neuron) -> None:  # type: ignore[no-untyped-def]
    g, svs = neuron
    anchors = (np.array([[1, 1, 1], [30, 30, 10], [60, 60, 20]] * 2 + [[5, 5, 5]])
               + np.repeat([[0, 0, 0], [0, 0, 0], [128, 0, 0]], [3, 3, 1], axis=0))
    SupervoxelLocator.write(g.base.directory, svs, anchors, LAYOUT, GEOMETRY)
    g2 = type(g).open(g.live, g.base.directory, g.table_id)
    near = ((np.array([60, 60, 20]) + 1) * RES).tolist()
    chosen, _ = g2.supervoxels_at([g.get_root(svs[0])], [near])
    assert chosen.tolist() == [svs[2]]


def test_nearest_leaf_rejects_an_empty_segment() -> None:
    with pytest.raises(InvalidRequest):
        nearest_leaf(np.zeros(0, np.uint64), LAYOUT, GEOMETRY, (0, 0, 0))


def test_split_by_root_and_points_then_a_stale_root_is_refused(neuron) -> None:  # type: ignore[no-untyped-def]
    g, svs = neuron
    root = int(g.get_root(svs[0]))
    body = {"sources": [[root, *centre_nm((0, 0, 0))]], "sinks": [[root, *centre_nm((2, 0, 0))]]}
    op = pcg.split_at_points(g, body, "u")
    assert op.source_ids.tolist() == [svs[0]] and op.sink_ids.tolist() == [svs[3]]
    assert op.removed_edges.tolist() == [[svs[2], svs[3]]]  # the weak link
    assert op.source_coords == [(np.array(centre_nm((0, 0, 0))) / RES).tolist()]
    n_ops = len(g.operations())
    with pytest.raises(InvalidRequest, match="not current"):
        pcg.split_at_points(g, body, "u")
    with pytest.raises(InvalidRequest, match="not current"):
        pcg.merge_at_points(g, [[root, *centre_nm((0, 0, 0))], [int(svs[6]), 0, 0, 0]], "u")
    assert len(g.operations()) == n_ops


def test_a_node_edited_between_choice_and_edit_is_refused(neuron) -> None:  # type: ignore[no-untyped-def]
    g, svs = neuron
    root = int(g.get_root(svs[0]))
    chosen, within = g.supervoxels_at([root], [centre_nm((0, 0, 0))])
    g.merge(svs[5], svs[6], user_id="other", timestamp=at(1))  # the root changes meanwhile
    with pytest.raises(InvalidRequest, match="not current"):
        g.split([chosen[0]], [svs[3]], user_id="u", timestamp=at(2), within=within)
    g.split([chosen[0]], [svs[3]], user_id="u", timestamp=at(2))  # without the check it runs


def test_points_that_meet_in_one_supervoxel(neuron) -> None:  # type: ignore[no-untyped-def]
    g, svs = neuron
    root = int(g.get_root(svs[0]))
    point = centre_nm((0, 0, 0))
    with pytest.raises(InvalidRequest, match="same supervoxel"):
        pcg.split_at_points(g, {"sources": [[root, *point]], "sinks": [[root, *point]]}, "u")


def test_merge_at_points_and_edit_result(neuron) -> None:  # type: ignore[no-untyped-def]
    g, svs = neuron
    op = pcg.merge_at_points(g, [[int(svs[0]), 8, 8, 40], [int(svs[6]), 16, 16, 80]], "u")
    assert pcg.edit_result(op) == {"operation_id": op.id, "new_root_ids": [int(g.get_root(svs[0]))]}
    assert op.source_coords == [[1.0, 1.0, 1.0]] and op.sink_coords == [[2.0, 2.0, 2.0]]
    details = pcg.operation_details(g, [op.id])[str(op.id)]
    assert details["added_edges"] == [[int(svs[0]), int(svs[6])]]
    assert details["roots"] == op.new_root_ids.tolist() and details["operation_status"] == 0
    with pytest.raises(NodeNotFound):
        pcg.merge_at_points(g, [[int(svs[0]), 0, 0, 0], [int(svs[6]) + 100, 0, 0, 0]], "u")


@pytest.mark.parametrize("body", [None, [], [[1, 2, 3]], [[1.0, 2, 3, 4]], [[True, 1, 2, 3]],
                                  [[-1, 1, 2, 3]], [[2**64, 1, 2, 3]], [[1, 2, "x", 4]],
                                  [[1, float("nan"), 2, 3]]])
def test_parse_points_rejects_malformed_entries(body) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest):
        parse_points(body, "body")


def test_subgraph_valid_nodes_and_info(neuron) -> None:  # type: ignore[no-untyped-def]
    g, svs = neuron
    root = int(g.get_root(svs[0]))
    edges, aff = g.subgraph(root)
    assert edges.tolist() == [[svs[i], svs[i + 1]] for i in range(5)]
    assert aff.tolist() == pytest.approx([0.9, 0.9, 0.2, 0.9, 0.9])
    box = ((0, 64), (0, 64), (0, 32))  # chunk (0,0,0) only
    assert g.subgraph(root, box)[0].tolist() == [[svs[0], svs[1]], [svs[1], svs[2]]]
    op = g.remove_edges([[svs[2], svs[3]]], user_id="u", timestamp=at(5))
    assert g.subgraph(root, timestamp=at(4))[0].shape == (5, 2)
    assert g.subgraph(int(op.new_root_ids[0]))[0].shape == (2, 2)
    new = int(op.new_root_ids[0])
    assert g.valid_nodes([root, new, 12345]).tolist() == sorted([root, new])
    assert g.valid_nodes([root, new], timestamp=at(4)).tolist() == [root]
    info = pcg.dataset_info(g)
    assert info["graph"]["n_layers"] == LAYOUT.n_layers
    assert info["scales"][0]["resolution"] == [8, 8, 40]
    assert info["scales"][0]["size"] == (np.array([4, 4, 4]) * SIZE).tolist()
