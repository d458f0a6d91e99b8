"""JSON-schema form of the schema types, shaped like the original service's output
(marshmallow-jsonschema, draft-07), which caveclient's table manager reads: a property whose
``$ref`` is ``#/definitions/BoundSpatialPoint`` becomes ``<f>_root_id`` and
``<f>_position_bbox`` filters, and ``format`` (else ``type``) decides whether inequality
filters are offered."""

from __future__ import annotations

from typing import Any

from .model import Kind, SchemaField, SchemaType

_DRAFT = "http://json-schema.org/draft-07/schema#"

_POINT_DEFINITIONS: dict[Kind, dict[str, Any]] = {
    Kind.SPATIAL_POINT: {
        "properties": {"position": {"type": "array"}},
        "required": ["position"],
        "type": "object",
        "additionalProperties": False,
    },
    Kind.BOUND_POINT: {
        "properties": {
            "position": {"type": "array"},
            "root_id": {"type": "integer"},
            "supervoxel_id": {"type": "integer"},
        },
        "required": ["position"],
        "type": "object",
        "additionalProperties": False,
    },
}

# (json type, format) per scalar kind; None format means "no format key".
_SCALAR_FORMS: dict[Kind, tuple[str, str | None]] = {
    Kind.STRING: ("string", None),
    Kind.INTEGER: ("number", "integer"),
    Kind.USER_ID: ("number", "integer"),
    Kind.FLOAT: ("number", "float"),
    Kind.BOOLEAN: ("boolean", None),
}

_VALID_PROPERTY = {
    "title": "valid",
    "type": ["boolean", "null"],
    "default": False,
    "description": "is this annotation valid",
}


def json_schema(schema: SchemaType) -> dict[str, Any]:
    """The draft-07 document for one schema type."""
    definitions: dict[str, Any] = {}
    for kind in (Kind.SPATIAL_POINT, Kind.BOUND_POINT):
        if any(f.kind is kind for f in schema.fields):
            definitions[kind.value] = _POINT_DEFINITIONS[kind]
    properties = {f.name: _property(f) for f in schema.fields}
    properties["valid"] = _VALID_PROPERTY
    definitions[schema.class_name] = {
        "properties": dict(sorted(properties.items())),
        "required": sorted(f.name for f in schema.fields if f.required),
        "type": "object",
        "additionalProperties": True,
    }
    return {
        "$schema": _DRAFT,
        "definitions": definitions,
        "$ref": f"#/definitions/{schema.class_name}",
    }


def _property(f: SchemaField) -> dict[str, Any]:
    if f.kind.is_point:
        return {"type": "object", "$ref": f"#/definitions/{f.kind.value}",
                "description": f.description}
    if f.kind in (Kind.REFERENCE, Kind.BIGINT):
        return {"type": "integer"}
    json_type, fmt = _SCALAR_FORMS[f.kind]
    prop: dict[str, Any] = {
        "title": f.name,
        "type": json_type if f.required else [json_type, "null"],
    }
    if fmt is not None:
        prop["format"] = fmt
    if f.default is not None:
        prop["default"] = f.default
    prop["description"] = f.description
    if f.choices is not None:
        prop["enum"] = list(f.choices)
        prop["enumNames"] = []
    return prop
