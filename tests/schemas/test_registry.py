"""The schema types and the columns of tables built from them."""

import pytest

from opencave.errors import SchemaNotFound
from opencave.schemas import Kind, Role, get_schema_type, schema_names


def test_the_core_types_exist():
    for name in ("synapse", "nucleus_detection", "cell_type_local", "cell_type_reference",
                 "compartment_proofread_status_strategy", "bound_tag", "reference_tag",
                 "reference_tag_float", "reference_integer"):
        assert name in schema_names()


def test_synapse_columns_in_served_order():
    names = [c.name for c in get_schema_type("synapse").columns()]
    assert names == [
        "id", "created", "deleted", "superceded_id", "valid",
        "pre_pt_position_x", "pre_pt_position_y", "pre_pt_position_z",
        "post_pt_position_x", "post_pt_position_y", "post_pt_position_z",
        "ctr_pt_position_x", "ctr_pt_position_y", "ctr_pt_position_z",
        "size",
        "pre_pt_supervoxel_id", "pre_pt_root_id", "post_pt_supervoxel_id", "post_pt_root_id",
    ]


def test_unbound_points_have_no_segmentation_columns():
    nucleus = get_schema_type("nucleus_detection")
    assert nucleus.bound_points == ("pt",)
    assert nucleus.points == ("pt", "bb_start", "bb_end")
    assert not any(c.name.startswith("bb_start_") and c.role is Role.ROOT
                   for c in nucleus.columns())
    assert nucleus.column("bb_start_position_x").nullable


def test_reference_types_point_at_another_table():
    reference = get_schema_type("cell_type_reference")
    assert reference.is_reference
    assert reference.field("target_id").kind is Kind.REFERENCE
    assert not get_schema_type("synapse").is_reference


def test_unknown_type_names_the_known_ones():
    with pytest.raises(SchemaNotFound, match=r"known types: .*'synapse'"):
        get_schema_type("synapse_v2")
