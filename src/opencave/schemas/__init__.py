"""Annotation schema types (``synapse``, ``nucleus_detection``, …): their fields, the columns
of tables built from them, and their JSON-schema form for the schema service."""

from .jsonschema import json_schema
from .model import AXES, Column, ColumnType, Kind, Role, SchemaField, SchemaType, position_column
from .registry import SCHEMA_TYPES, get_schema_type, schema_names
from .validate import flatten_annotations
from .values import coerce_value

__all__ = [
    "AXES",
    "SCHEMA_TYPES",
    "Column",
    "ColumnType",
    "Kind",
    "Role",
    "SchemaField",
    "SchemaType",
    "coerce_value",
    "flatten_annotations",
    "get_schema_type",
    "json_schema",
    "position_column",
    "schema_names",
]
