"""Filters as values: parsed from a query body, validated against the relations' columns,
and compiled to SQL with bound parameters (no request text ever becomes SQL).

Values are converted to the column's type by :func:`opencave.schemas.coerce_value`, the one
place that decides what clients may send (``'t'`` for a boolean, …).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..errors import InvalidRequest, describe_choices
from ..schemas import Column, ColumnType, coerce_value
from .relations import Relation


class Op(StrEnum):
    IN = "in"
    NOT_IN = "not_in"
    EQUAL = "equal"
    GREATER = "greater"
    LESS = "less"
    GREATER_EQUAL = "greater_equal"
    LESS_EQUAL = "less_equal"
    REGEX = "regex"
    SPATIAL = "spatial"


#: Body keys and the operator each means. ``filter_out_dict`` (the original server's name)
#: and ``filter_notin_dict`` (what caveclient sends) are both exclusions.
FILTER_KEYS: dict[str, Op] = {
    "filter_in_dict": Op.IN,
    "filter_out_dict": Op.NOT_IN,
    "filter_notin_dict": Op.NOT_IN,
    "filter_equal_dict": Op.EQUAL,
    "filter_greater_dict": Op.GREATER,
    "filter_less_dict": Op.LESS,
    "filter_greater_equal_dict": Op.GREATER_EQUAL,
    "filter_less_equal_dict": Op.LESS_EQUAL,
    "filter_regex_dict": Op.REGEX,
    "filter_spatial_dict": Op.SPATIAL,
}

_COMPARISONS = {Op.GREATER: ">", Op.LESS: "<", Op.GREATER_EQUAL: ">=", Op.LESS_EQUAL: "<="}
_SQL_TYPES = {
    ColumnType.INT64: "BIGINT",
    ColumnType.FLOAT64: "DOUBLE",
    ColumnType.STRING: "VARCHAR",
    ColumnType.BOOL: "BOOLEAN",
    ColumnType.TIMESTAMP: "TIMESTAMPTZ",
}


@dataclass(frozen=True)
class Filter:
    """One condition on one relation. ``columns`` are stored column names: one for scalar
    filters, the three axes for a spatial box."""

    relation: str
    columns: tuple[str, ...]
    op: Op
    value: Any
    type: ColumnType

    def sql(self, alias: str, lists: ValueLists) -> tuple[str, list[Any]]:
        """The condition as SQL over ``alias`` with its parameters (``IN`` lists bound once,
        in ``lists``)."""
        cols = [f'{alias}."{c}"' for c in self.columns]
        col = cols[0]
        sql_type = _SQL_TYPES[self.type]
        if self.op is Op.SPATIAL:
            (lo, hi) = self.value
            parts = [f"{c} BETWEEN ? AND ?" for c in cols]
            return " AND ".join(parts), [v for pair in zip(lo, hi, strict=True) for v in pair]
        if self.op is Op.IN:
            if len(self.value) == 1:
                # One neuron's synapses: a constant comparison prunes row groups by their
                # min/max before the scan, where a semi-join over the list cannot (~9 ms of
                # a 25 ms Q1 at 10^8). Several values are a semi-join over the list bound
                # once, whose values the engine lets DuckDB push into the scan as an exact
                # IN filter (engine.IN_FILTER_ROWS).
                return f"{col} = ?::{sql_type}", [self.value[0]]
            return f"{col} IN (SELECT v FROM {lists.name(self.value, sql_type)})", []
        if self.op is Op.NOT_IN:
            return f"{col} NOT IN (SELECT v FROM {lists.name(self.value, sql_type)})", []
        if self.op is Op.EQUAL:
            if self.value is None:
                return f"{col} IS NULL", []
            return f"{col} = ?::{sql_type}", [self.value]
        if self.op is Op.REGEX:
            return f"regexp_matches({col}, ?)", [self.value]
        return f"{col} {_COMPARISONS[self.op]} ?::{sql_type}", [self.value]


@dataclass
class ValueLists:
    """A statement's ``IN`` lists, each bound once as a named CTE however many of its parts
    filter by it: binding a list parameter costs per value, and a 1,436-value filter read
    from a dozen parts and masks spent 44-103 ms of the query binding the same list again."""

    #: the CTEs (``name AS (...)``), in the order of their parameters
    definitions: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    _names: dict[tuple[str, tuple[Any, ...]], str] = field(default_factory=dict)

    def name(self, values: tuple[Any, ...], sql_type: str) -> str:
        """The CTE whose column ``v`` holds ``values``."""
        key = (sql_type, values)
        if key not in self._names:
            name = self._names[key] = f"in_list_{len(self._names)}"
            self.definitions.append(f"{name} AS (SELECT unnest(?::{sql_type}[]) AS v)")
            self.params.append(list(values))
        return self._names[key]


def parse_filters(body: Mapping[str, Any], relations: Mapping[str, Relation]) -> list[Filter]:
    """All filters of a query body. Keys of each filter dict name a relation; inner keys name
    its columns (positions by their point name, e.g. ``pt_position``)."""
    filters: list[Filter] = []
    for key, op in FILTER_KEYS.items():
        per_table = body.get(key)
        if per_table is None:
            continue
        if not isinstance(per_table, Mapping):
            raise InvalidRequest(f"{key} must map table names to {{column: value}} objects")
        for table_name, conditions in per_table.items():
            relation = _relation(relations, table_name, key)
            if conditions is None:
                continue
            if not isinstance(conditions, Mapping):
                raise InvalidRequest(f"{key}[{table_name!r}] must be a {{column: value}} object")
            for column_name, value in conditions.items():
                filters.append(_parse_one(relation, key, op, column_name, value))
    return filters


def _relation(relations: Mapping[str, Relation], name: object, key: str) -> Relation:
    if isinstance(name, str) and name in relations:
        return relations[name]
    raise InvalidRequest(
        f"{key} names table {name!r}, which is not part of this query; tables in the query: "
        f"{describe_choices(relations)}",
        table=str(name),
    )


def _parse_one(relation: Relation, key: str, op: Op, column_name: str, value: Any) -> Filter:
    where = f"{key}[{relation.name!r}][{column_name!r}]"
    if op is Op.SPATIAL:
        axes = relation.points(column_name, purpose=where)
        return Filter(relation.name, tuple(c.name for c in axes), op, _box(value, where),
                      ColumnType.INT64)
    if column_name in relation.point_columns:
        raise InvalidRequest(f"{where}: positions can only be filtered with filter_spatial_dict")
    column = relation.column(column_name, purpose=where)
    return Filter(relation.name, (column.name,), op, _operand(column, op, value, where),
                  column.type)


def _operand(column: Column, op: Op, value: Any, where: str) -> Any:
    if op in (Op.IN, Op.NOT_IN):
        values = value if isinstance(value, list | tuple) else [value]
        return tuple(coerce_value(column, v, where=where) for v in values)
    if isinstance(value, list | tuple):
        raise InvalidRequest(
            f"{where}: expected one value, got a list; use filter_in_dict for lists"
        )
    if op is Op.REGEX:
        if column.type is not ColumnType.STRING:
            raise InvalidRequest(f"{where}: regex filters apply to text columns only, and "
                                 f"{column.name!r} holds {column.type.value}")
        if not isinstance(value, str):
            raise InvalidRequest(f"{where}: a regex must be a string")
        try:
            re.compile(value)
        except re.error as exc:
            raise InvalidRequest(f"{where}: invalid regular expression: {exc}") from None
        return value
    if op in _COMPARISONS and column.type not in (
        ColumnType.INT64, ColumnType.FLOAT64, ColumnType.TIMESTAMP
    ):
        raise InvalidRequest(f"{where}: inequality filters apply to numeric and timestamp "
                             f"columns; {column.name!r} holds {column.type.value}")
    if op is Op.EQUAL and value is None:
        return None
    return coerce_value(column, value, where=where)


def _box(value: Any, where: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``[[min_x, min_y, min_z], [max_x, max_y, max_z]]`` in the table's voxels; corners may
    come in any order."""
    try:
        lo, hi = value
        lo = [float(v) for v in lo]
        hi = [float(v) for v in hi]
        if len(lo) != 3 or len(hi) != 3 or not all(map(math.isfinite, lo + hi)):
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidRequest(
            f"{where}: a spatial filter is [[min_x, min_y, min_z], [max_x, max_y, max_z]] in "
            f"the table's voxel units; got {value!r}"
        ) from None
    low = tuple(math.ceil(min(a, b)) for a, b in zip(lo, hi, strict=True))
    high = tuple(math.floor(max(a, b)) for a, b in zip(lo, hi, strict=True))
    return low, high  # type: ignore[return-value]
