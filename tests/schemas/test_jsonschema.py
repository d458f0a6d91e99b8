"""The JSON-schema form, in the shape caveclient's table manager reads."""

from opencave.schemas import get_schema_type, json_schema


def test_bound_points_reference_the_bound_point_definition():
    doc = json_schema(get_schema_type("synapse"))
    assert doc["$ref"] == "#/definitions/SynapseSchema"
    props = doc["definitions"]["SynapseSchema"]["properties"]
    assert props["pre_pt"]["$ref"] == "#/definitions/BoundSpatialPoint"
    assert props["ctr_pt"]["$ref"] == "#/definitions/SpatialPoint"
    assert set(doc["definitions"]) == {"SynapseSchema", "BoundSpatialPoint", "SpatialPoint"}


def test_scalar_forms_decide_which_filters_the_client_offers():
    props = json_schema(get_schema_type("nucleus_detection"))["definitions"][
        "NucleusDetection"]["properties"]
    assert props["volume"] == {"title": "volume", "type": ["number", "null"],
                               "format": "float",
                               "description": "the volume of the nucleus detected in um^3"}
    strategy = json_schema(get_schema_type("compartment_proofread_status_strategy"))
    props = strategy["definitions"]["CompartmentProofreadStatusStrategy"]["properties"]
    assert props["status_axon"]["type"] == "boolean"
    assert props["valid_id"] == {"type": "integer"}


def test_enums_and_required_fields():
    doc = json_schema(get_schema_type("proofread_status"))["definitions"]["ProofreadStatus"]
    assert doc["properties"]["status"]["enum"] == ["non", "clean", "extended"]
    assert doc["required"] == ["pt", "status", "valid_id"]
    assert doc["additionalProperties"] is True
