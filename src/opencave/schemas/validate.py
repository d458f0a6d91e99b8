"""Annotations as clients post them, checked against their schema and flattened into the
table's stored columns.

Accepted forms for a point field ``pt``: nested ``{"pt": {"position": [x, y, z],
"supervoxel_id": …}}`` (what ``post_annotation`` sends), ``{"pt_position": [x, y, z]}``
and ``{"pt_position_x": x, "pt_position_y": y, "pt_position_z": z}`` (a DataFrame with split
positions). Positions are integer voxel coordinates at the table's resolution. Each problem
is a 400 naming the annotation (by position in the batch) and the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidRequest, describe_choices
from .model import AXES, Kind, SchemaField, SchemaType, position_column
from .values import coerce_value

_SERVER_FIELDS = {"created", "deleted", "superceded_id"}


def flatten_annotations(schema: SchemaType, items: Any, *, with_ids: bool = False
                        ) -> list[dict[str, Any]]:
    """Validate a batch; returns one dict of stored column values per annotation (``id``
    only when ``with_ids``, i.e. for updates). Server-filled columns (ids, timestamps,
    ``valid``, user ids, root ids) are left out."""
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        raise InvalidRequest("annotations must be a list of objects")
    if not items:
        raise InvalidRequest("the batch is empty: send at least one annotation")
    return [_flatten(schema, item, index, with_ids) for index, item in enumerate(items)]


def _flatten(schema: SchemaType, item: Any, index: int, with_ids: bool) -> dict[str, Any]:
    where = f"annotation {index}"
    if not isinstance(item, Mapping):
        raise InvalidRequest(f"{where} must be an object with the fields of {schema.name!r}")
    remaining = dict(item)
    remaining.pop("valid", None)
    out: dict[str, Any] = {}
    if with_ids:
        if "id" not in remaining:
            raise InvalidRequest(f"{where}: an update needs the id of the annotation to replace")
        out["id"] = _integer(remaining.pop("id"), f"{where} field 'id'")
    elif "id" in remaining:
        raise InvalidRequest(f"{where}: 'id' is assigned by the server; to change an "
                             "annotation use update_annotation")
    for name in _SERVER_FIELDS & set(remaining):
        raise InvalidRequest(f"{where}: {name!r} is set by the server")
    for field in schema.fields:
        if field.kind.is_point:
            out.update(_point(field, remaining, where))
        elif field.kind is Kind.USER_ID:
            remaining.pop(field.name, None)
        else:
            out[field.name] = _scalar(schema, field, remaining.pop(field.name, None), where)
    if remaining:
        raise InvalidRequest(
            f"{where}: unknown field(s) {describe_choices(remaining)} for schema "
            f"{schema.name!r}; its fields are {describe_choices(f.name for f in schema.fields)}"
        )
    return out


def _point(field: SchemaField, remaining: dict[str, Any], where: str) -> dict[str, Any]:
    name = field.name
    nested = remaining.pop(name, None)
    flat = remaining.pop(f"{name}_position", None)
    split = [remaining.pop(position_column(name, a), None) for a in AXES]
    supervoxel = remaining.pop(f"{name}_supervoxel_id", None)
    remaining.pop(f"{name}_root_id", None)
    position: Any = None
    if nested is not None:
        if not isinstance(nested, Mapping) or "position" not in nested:
            raise InvalidRequest(f"{where} field {name!r}: a point is {{\"position\": [x, y, z]}}")
        extra = set(nested) - {"position", "supervoxel_id", "root_id"}
        if extra:
            raise InvalidRequest(f"{where} field {name!r}: unknown key(s) "
                                 f"{describe_choices(extra)} in a point")
        position = nested["position"]
        supervoxel = nested.get("supervoxel_id", supervoxel)
    elif flat is not None:
        position = flat
    elif any(v is not None for v in split):
        position = split
    out: dict[str, Any] = {}
    if position is None:
        if field.required:
            raise InvalidRequest(f"{where}: the point {name!r} is required")
        coords: list[int | None] = [None, None, None]
    else:
        coords = list(_position(position, f"{where} field {name!r}"))
    for axis, value in zip(AXES, coords, strict=True):
        out[position_column(name, axis)] = value
    if field.kind is Kind.BOUND_POINT:
        out[f"{name}_supervoxel_id"] = (None if supervoxel is None else
                                         _integer(supervoxel, f"{where} field {name!r}"))
    return out


def _position(value: Any, where: str) -> tuple[int, int, int]:
    try:
        x, y, z = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{where}: a position is three numbers [x, y, z]; got "
                             f"{value!r}") from None
    if not all(math.isfinite(v) and v.is_integer() for v in (x, y, z)):
        raise InvalidRequest(f"{where}: positions are integer voxel coordinates at the "
                             f"table's voxel_resolution; got {value!r}")
    return int(x), int(y), int(z)


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise InvalidRequest(f"{where}: expected an integer, got {value!r}")
    try:
        number = float(value)
        if not number.is_integer():
            raise ValueError
        return int(value) if isinstance(value, int) else int(number)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{where}: expected an integer, got {value!r}") from None


def _scalar(schema: SchemaType, field: SchemaField, value: Any, where: str) -> Any:
    if value is None:
        if field.default is not None:
            return field.default
        if field.required:
            raise InvalidRequest(f"{where}: the field {field.name!r} is required")
        return None
    column = schema.column(field.name)
    converted = coerce_value(column, value, where=f"{where} field {field.name!r}")
    if field.choices is not None and converted not in field.choices:
        raise InvalidRequest(f"{where} field {field.name!r}: {value!r} is not one of "
                             f"{describe_choices(field.choices)}")
    return converted
