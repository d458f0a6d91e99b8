"""Client values converted to a column's type — the one place that decides what is
accepted, following what PostgreSQL did for the original service: booleans accept
``'t'``/``'f'``/``'true'``/``'1'``…, integers accept integral floats and numeric strings,
timestamps accept ISO strings and POSIX seconds, text accepts only strings."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from ..errors import InvalidRequest
from ..timestamps import parse_timestamp
from .model import Column, ColumnType

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_TRUE = {"t", "true", "1", "yes", "y", "on"}
_FALSE = {"f", "false", "0", "no", "n", "off"}


def coerce_value(column: Column, value: Any, *, where: str) -> Any:
    """Convert one client value to the column's type, or explain what is accepted."""
    kind = column.type
    if value is None:
        raise InvalidRequest(f"{where}: null is only accepted as an equality value")
    if kind is ColumnType.BOOL:
        return _as_bool(value, where)
    if kind is ColumnType.INT64:
        return _as_int(value, where, column.name)
    if kind is ColumnType.FLOAT64:
        return _as_float(value, where, column.name)
    if kind is ColumnType.TIMESTAMP:
        return _as_timestamp(value, where)
    if isinstance(value, str):
        return value
    raise InvalidRequest(f"{where}: column {column.name!r} holds text; got {value!r}")


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidRequest(f"{where}: expected a boolean (true/false, 't'/'f'); got {value!r}")


def _as_int(value: Any, where: str, name: str) -> int:
    result: int | None = None
    if isinstance(value, bool):
        result = None
    elif isinstance(value, int):
        result = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        result = int(value)
    elif isinstance(value, str):
        try:
            result = int(value.strip())
        except ValueError:
            result = None
    if result is None:
        raise InvalidRequest(f"{where}: column {name!r} holds integers; got {value!r}")
    if not INT64_MIN <= result <= INT64_MAX:
        raise InvalidRequest(f"{where}: {result} does not fit in a 64-bit integer")
    return result


def _as_float(value: Any, where: str, name: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            result = math.nan
    else:
        result = math.nan
    if math.isnan(result):
        raise InvalidRequest(f"{where}: column {name!r} holds numbers; got {value!r}")
    return result


def _as_timestamp(value: Any, where: str) -> datetime:
    return parse_timestamp(value, field=where)
