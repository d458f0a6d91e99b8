"""The schema model: annotation types as plain values.

An annotation type (``synapse``, ``nucleus_detection``, …) is a :class:`SchemaType` — an
ordered tuple of :class:`SchemaField`. A field is a point (bound to the segmentation or not)
or a scalar. :meth:`SchemaType.columns` flattens a type into the columns every table of that
type has, in the order the original CAVE serves them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property


class Kind(StrEnum):
    """What a schema field holds."""

    BOUND_POINT = "BoundSpatialPoint"  # position + supervoxel_id + root_id
    SPATIAL_POINT = "SpatialPoint"  # position only
    STRING = "string"
    INTEGER = "integer"  # a plain integer value
    BIGINT = "bigint"  # an id-like 64-bit integer (root ids, valid_id, …)
    FLOAT = "float"
    BOOLEAN = "boolean"
    REFERENCE = "reference"  # target_id: the id of a row in the reference table
    USER_ID = "user_id"  # filled in by the server from the authenticated user

    @property
    def is_point(self) -> bool:
        return self in (Kind.BOUND_POINT, Kind.SPATIAL_POINT)


class ColumnType(StrEnum):
    """Storage types of flattened columns (Arrow/DuckDB/SQL)."""

    INT64 = "int64"
    FLOAT64 = "float64"
    STRING = "string"
    BOOL = "bool"
    TIMESTAMP = "timestamp"


class Role(StrEnum):
    """Why a column exists: decides how queries and writes treat it."""

    ID = "id"
    CRUD = "crud"  # created, deleted, superceded_id
    VALID = "valid"
    DATA = "data"  # a scalar schema field
    POSITION = "position"  # one axis of a point
    SUPERVOXEL = "supervoxel"
    ROOT = "root"


_SCALAR_TYPES = {
    Kind.STRING: ColumnType.STRING,
    Kind.INTEGER: ColumnType.INT64,
    Kind.BIGINT: ColumnType.INT64,
    Kind.FLOAT: ColumnType.FLOAT64,
    Kind.BOOLEAN: ColumnType.BOOL,
    Kind.REFERENCE: ColumnType.INT64,
    Kind.USER_ID: ColumnType.INT64,
}

AXES = ("x", "y", "z")


@dataclass(frozen=True)
class SchemaField:
    name: str
    kind: Kind
    description: str = ""
    required: bool = True
    choices: tuple[str | int, ...] | None = None
    default: object = None  # filled in on write when the field is missing


@dataclass(frozen=True)
class Column:
    """One flattened column of an annotation table."""

    name: str
    type: ColumnType
    role: Role
    nullable: bool = False
    point: str | None = None  # the schema field a position/supervoxel/root column belongs to
    axis: str | None = None  # x, y or z for positions

    @property
    def is_numeric(self) -> bool:
        return self.type in (ColumnType.INT64, ColumnType.FLOAT64)


@dataclass(frozen=True)
class SchemaType:
    """An annotation schema type, e.g. ``synapse``."""

    name: str
    class_name: str
    fields: tuple[SchemaField, ...]
    description: str = ""
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_reference(self) -> bool:
        """Reference types annotate rows of another table through ``target_id``."""
        return any(f.kind is Kind.REFERENCE for f in self.fields)

    @property
    def bound_points(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.kind is Kind.BOUND_POINT)

    @property
    def points(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.kind.is_point)

    def field(self, name: str) -> SchemaField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @cached_property
    def _columns(self) -> tuple[Column, ...]:
        return tuple(_flatten(self.fields))

    def columns(self) -> tuple[Column, ...]:
        """All stored columns in served order: ``id, created, deleted, superceded_id, valid``,
        then the fields in declaration order (points as ``<pt>_position_x/_y/_z``), then the
        segmentation columns ``<pt>_supervoxel_id, <pt>_root_id`` of each bound point."""
        return self._columns

    def column(self, name: str) -> Column:
        for c in self._columns:
            if c.name == name:
                return c
        raise KeyError(name)


def position_column(point: str, axis: str) -> str:
    return f"{point}_position_{axis}"


def _flatten(fields: tuple[SchemaField, ...]) -> list[Column]:
    columns = [
        Column("id", ColumnType.INT64, Role.ID),
        Column("created", ColumnType.TIMESTAMP, Role.CRUD),
        Column("deleted", ColumnType.TIMESTAMP, Role.CRUD, nullable=True),
        Column("superceded_id", ColumnType.INT64, Role.CRUD, nullable=True),
        Column("valid", ColumnType.BOOL, Role.VALID),
    ]
    segmentation = []
    for f in fields:
        if f.kind.is_point:
            columns += [
                Column(
                    position_column(f.name, axis),
                    ColumnType.INT64,
                    Role.POSITION,
                    nullable=not f.required,
                    point=f.name,
                    axis=axis,
                )
                for axis in AXES
            ]
            if f.kind is Kind.BOUND_POINT:
                segmentation += [
                    Column(f"{f.name}_supervoxel_id", ColumnType.INT64, Role.SUPERVOXEL,
                           nullable=True, point=f.name),
                    Column(f"{f.name}_root_id", ColumnType.INT64, Role.ROOT,
                           nullable=True, point=f.name),
                ]
        else:
            columns.append(Column(f.name, _SCALAR_TYPES[f.kind], Role.DATA,
                                  nullable=not f.required))
    return columns + segmentation
