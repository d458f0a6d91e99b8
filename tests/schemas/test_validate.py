"""Annotations checked against their schema and flattened to stored columns."""

import pytest

from opencave.errors import InvalidRequest
from opencave.schemas import flatten_annotations, get_schema_type

TAG = get_schema_type("bound_tag")
NUCLEUS = get_schema_type("nucleus_detection")
PROOF = get_schema_type("compartment_proofread_status_strategy")


def test_nested_flat_and_split_points_mean_the_same():
    forms = [{"pt": {"position": [1, 2, 3]}, "tag": "a"},
             {"pt_position": [1, 2, 3], "tag": "a"},
             {"pt_position_x": 1, "pt_position_y": 2, "pt_position_z": 3.0, "tag": "a"}]
    rows = flatten_annotations(TAG, forms)
    assert rows[0] == rows[1] == rows[2] == {
        "pt_position_x": 1, "pt_position_y": 2, "pt_position_z": 3, "pt_supervoxel_id": None,
        "tag": "a"}


def test_given_supervoxels_are_kept_and_root_ids_ignored():
    (row,) = flatten_annotations(TAG, [{"pt": {"position": [1, 2, 3], "supervoxel_id": 99,
                                               "root_id": 5}, "tag": "a"}])
    assert row["pt_supervoxel_id"] == 99 and "pt_root_id" not in row


def test_optional_points_and_fields_may_be_missing():
    (row,) = flatten_annotations(NUCLEUS, [{"pt": {"position": [1, 2, 3]}}])
    assert row["bb_start_position_x"] is None and row["volume"] is None


def test_values_are_coerced_like_the_original():
    (row,) = flatten_annotations(PROOF, [{
        "pt": {"position": [1, 2, 3]}, "valid_id": "864691135000000001",
        "status_axon": "t", "status_dendrite": False, "strategy_axon": "none",
        "strategy_dendrite": "dendrite_clean"}])
    assert row["valid_id"] == 864691135000000001 and row["status_axon"] is True


def test_updates_carry_ids():
    (row,) = flatten_annotations(TAG, [{"id": 7, "pt": {"position": [1, 2, 3]}, "tag": "b"}],
                                 with_ids=True)
    assert row["id"] == 7


@pytest.mark.parametrize(("items", "message"), [
    ([], "empty"),
    ("not a list", "list of objects"),
    ([{"tag": "a"}], "annotation 0: the point 'pt' is required"),
    ([{"pt": {"position": [1, 2, 3]}}], "'tag' is required"),
    ([{"pt": {"position": [1, 2]}, "tag": "a"}], "three numbers"),
    ([{"pt": {"position": [1.5, 2, 3]}, "tag": "a"}], "integer voxel coordinates"),
    ([{"pt": {"where": [1, 2, 3]}, "tag": "a"}], "position"),
    ([{"pt": {"position": [1, 2, 3]}, "tag": "a", "extra": 1}], "unknown field"),
    ([{"pt": {"position": [1, 2, 3]}, "tag": 5}], "holds text"),
    ([{"id": 1, "pt": {"position": [1, 2, 3]}, "tag": "a"}], "assigned by the server"),
    ([{"pt": {"position": [1, 2, 3]}, "tag": "a", "created": "2020"}], "set by the server"),
    ([{"pt": {"position": [1, 2, 3]}, "tag": "a"}, "x"], "annotation 1 must be an object"),
])
def test_bad_annotations_name_the_row_and_the_field(items, message):
    with pytest.raises(InvalidRequest, match=message):
        flatten_annotations(TAG, items)


def test_enums_are_checked():
    status = get_schema_type("proofread_status")
    with pytest.raises(InvalidRequest, match="is not one of"):
        flatten_annotations(status, [{"pt": {"position": [1, 2, 3]}, "valid_id": 1,
                                      "status": "perfect"}])
