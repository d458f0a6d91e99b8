"""Views: named, read-only queries registered per datastack and served like tables.

A view is a *specification*, not SQL text: one table, or two joined (inner or left), with a
column selection, suffixes and fixed filters — the same vocabulary as a join query, so it
is validated like one and never turns request text into SQL. Querying a view at a version
runs its specification on that version's tables plus the caller's filters, which name the
view's own columns (``cell_type``, ``pt_root_id``, ``pt_position`` for a box, …).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..errors import Conflict, InvalidRequest, ViewNotFound, describe_choices
from ..schemas import ColumnType, Role
from ..storage import LIVE_METADATA, LiveStore, UTCDateTime
from ..timestamps import now
from .filters import FILTER_KEYS, Filter, Op, parse_filters
from .query import OutputColumn, Query, output_columns, parse_query, parse_resolution
from .relations import Relation

views_table = sa.Table(
    "views", LIVE_METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("datastack", sa.String, nullable=False),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("notice_text", sa.Text),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.UniqueConstraint("datastack", "name"),
)

_SCHEMA_TYPES = {ColumnType.INT64: "integer", ColumnType.FLOAT64: "float",
                 ColumnType.STRING: "string", ColumnType.BOOL: "boolean",
                 ColumnType.TIMESTAMP: "string"}


@dataclass(frozen=True)
class View:
    id: int
    datastack: str
    name: str
    description: str
    tables: tuple[tuple[str, str], ...]  # (table, join column); one or two
    left_join: bool = False
    select_column_map: Mapping[str, Sequence[str]] | None = None
    suffix_map: Mapping[str, str] | None = None
    filters: Mapping[str, Any] | None = None  # filter dicts keyed by table
    notice_text: str | None = None
    created: datetime | None = None

    @classmethod
    def from_spec(cls, datastack: str, name: str, spec: Mapping[str, Any], *, id: int = 0,
                  description: str = "", notice_text: str | None = None,
                  created: datetime | None = None) -> View:
        tables = spec.get("tables")
        if (not isinstance(tables, list) or not 1 <= len(tables) <= 2
                or not all(isinstance(t, list) and len(t) == 2 for t in tables)):
            raise InvalidRequest('a view needs "tables": [[table, join_column]] or two of them')
        return cls(id=id, datastack=datastack, name=name, description=description,
                   notice_text=notice_text, tables=tuple((str(t), str(c)) for t, c in tables),
                   left_join=bool(spec.get("left_join", False)),
                   select_column_map=spec.get("select_column_map"),
                   suffix_map=spec.get("suffix_map"), filters=spec.get("filters"),
                   created=created)

    @property
    def table_names(self) -> list[str]:
        return [t for t, _ in self.tables]

    def metadata(self, voxel_resolution: tuple[float, float, float]) -> dict[str, Any]:
        vx, vy, vz = voxel_resolution
        return {"id": self.id, "table_name": self.name, "datastack_name": self.datastack,
                "description": self.description, "notice_text": self.notice_text,
                "live_compatible": False, "voxel_resolution_x": vx,
                "voxel_resolution_y": vy, "voxel_resolution_z": vz}

    def base_query(self, relations: Sequence[Relation]) -> Query:
        """The view's own query over the given relations (in ``tables`` order)."""
        body: dict[str, Any] = dict(self.filters or {})
        if self.select_column_map:
            body["select_column_map"] = {k: list(v) for k, v in self.select_column_map.items()}
        if self.suffix_map:
            body["suffix_map"] = dict(self.suffix_map)
        join_columns = [c for _, c in self.tables] if len(self.tables) > 1 else []
        return replace(parse_query(body, relations, join_columns=join_columns),
                       left_join=self.left_join)

    def spec(self) -> dict[str, Any]:
        return {"tables": [list(t) for t in self.tables], "left_join": self.left_join,
                "select_column_map": self.select_column_map, "suffix_map": self.suffix_map,
                "filters": self.filters}


def view_schema(outputs: Sequence[OutputColumn]) -> dict[str, dict[str, str]]:
    """``{column: {"type": …}}`` as the original publishes it: points once, by their position
    column name, as ``SpatialPoint``."""
    schema: dict[str, dict[str, str]] = {}
    for out in outputs:
        if out.column.role is Role.POSITION:
            schema.setdefault(out.name[:-2], {"type": "SpatialPoint"})
        else:
            entry = {"type": _SCHEMA_TYPES[out.column.type]}
            if out.column.type is ColumnType.TIMESTAMP:
                entry["format"] = "date-time"
            schema[out.name] = entry
    return schema


def view_query(view: View, relations: Sequence[Relation], body: Mapping[str, Any],
               random_sample: Any = None) -> Query:
    """The view's query narrowed by a caller's body: filters and ``select_columns`` name view
    columns; ``limit``, ``offset`` and ``desired_resolution`` as for tables."""
    base = view.base_query(relations)
    outputs = output_columns(base)
    filters = list(base.filters) + _caller_filters(view.name, outputs, relations, body)
    select = base.select
    if body.get("select_columns"):
        select = _caller_select(view.name, outputs, relations, body["select_columns"])
    plain = parse_query({k: body[k] for k in ("limit", "offset") if k in body}, relations,
                        join_columns=base.join_columns, random_sample=random_sample)
    return replace(base, filters=tuple(filters), select=select, limit=plain.limit,
                   offset=plain.offset, random_sample=plain.random_sample,
                   desired_resolution=parse_resolution(body.get("desired_resolution")))


def _by_view_name(outputs: Sequence[OutputColumn]) -> dict[str, list[OutputColumn]]:
    """View column name → output columns (three for a point)."""
    names: dict[str, list[OutputColumn]] = {}
    for out in outputs:
        key = out.name[:-2] if out.column.role is Role.POSITION else out.name
        names.setdefault(key, []).append(out)
    return names


def _caller_filters(name: str, outputs: Sequence[OutputColumn],
                    relations: Sequence[Relation], body: Mapping[str, Any]) -> list[Filter]:
    columns = _by_view_name(outputs)
    by_relation = {r.name: r for r in relations}
    filters: list[Filter] = []
    for key in FILTER_KEYS:
        per_view = body.get(key)
        if not per_view:
            continue
        if not isinstance(per_view, Mapping) or set(per_view) - {name}:
            raise InvalidRequest(f"{key} must be keyed by the view name {name!r}")
        for column, value in (per_view.get(name) or {}).items():
            target = _view_column(name, columns, column, key)
            relation = by_relation[target[0].relation]
            stored = (target[0].column.point + "_position" if target[0].column.point
                      and target[0].column.role is Role.POSITION else target[0].column.name)
            filters += parse_filters({key: {relation.name: {stored: value}}}, by_relation)
    return filters


def _view_column(name: str, columns: Mapping[str, list[OutputColumn]], column: str,
                 key: str) -> list[OutputColumn]:
    if column in columns:
        return columns[column]
    if FILTER_KEYS[key] is Op.SPATIAL and column.endswith("_position"):
        trimmed = column.removesuffix("_position")  # caveclient adds _position to points
        if trimmed in columns:
            return columns[trimmed]
    raise InvalidRequest(f"{key}: view {name!r} has no column {column!r}; its columns are "
                         f"{describe_choices(columns, 60)}")


def _caller_select(name: str, outputs: Sequence[OutputColumn], relations: Sequence[Relation],
                   wanted: Any) -> dict[str, tuple[Any, ...]]:
    if not isinstance(wanted, list):
        raise InvalidRequest("select_columns must be a list of the view's columns")
    columns = _by_view_name(outputs)
    picked: set[tuple[str, str]] = set()
    for column in wanted:
        for out in _view_column(name, columns, str(column), "select_columns"):
            picked.add((out.relation, out.column.name))
            if out.column.role is Role.ROOT:  # roots come with their supervoxels
                picked.add((out.relation, out.column.name.removesuffix("root_id")
                            + "supervoxel_id"))
    return {r.name: tuple(o.column for o in outputs
                          if o.relation == r.name and (r.name, o.column.name) in picked)
            for r in relations}


class Views:
    """The registry of views in the live store."""

    def __init__(self, live: LiveStore) -> None:
        self.live = live

    def add(self, view: View) -> View:
        """Register a view (check it first, e.g. with ``MaterializationService.check_view``)."""
        with self.live.begin() as conn:
            exists = conn.execute(sa.select(views_table.c.id).where(
                views_table.c.datastack == view.datastack, views_table.c.name == view.name)
            ).first()
            if exists:
                raise Conflict(f"view {view.name!r} already exists in {view.datastack!r}")
            conn.execute(views_table.insert().values(
                datastack=view.datastack, name=view.name, description=view.description,
                notice_text=view.notice_text, spec=view.spec(), created=now()))
        return self.get(view.datastack, view.name)

    def list(self, datastack: str) -> list[View]:
        with self.live.connect() as conn:
            rows = conn.execute(sa.select(views_table).where(
                views_table.c.datastack == datastack).order_by(views_table.c.name)).mappings()
            return [_view(r) for r in rows]

    def get(self, datastack: str, name: str) -> View:
        views = {v.name: v for v in self.list(datastack)}
        if name not in views:
            raise ViewNotFound(f"no view {name!r} in {datastack!r}; views: "
                               f"{describe_choices(views)}", view=name)
        return views[name]


def _view(row: Any) -> View:
    return View.from_spec(row["datastack"], row["name"], row["spec"], id=row["id"],
                          description=row["description"], notice_text=row["notice_text"],
                          created=row["created"])
