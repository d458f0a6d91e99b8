"""Queries as values: parsed from a request body, validated against the relations they read,
compiled to one DuckDB statement with bound parameters.

The statement reads each relation through a CTE over its snapshot (segments minus masked
ids, rows alive at the snapshot's timestamp), applies filters (DuckDB pushes them into the
scans, where sorted keys skip row groups), joins, converts positions to the requested
resolution and orders by id when a page (limit/offset) is asked for, so pages are
deterministic.

Segments and masks are read from their serving copies (see :mod:`opencave.storage.segments`),
in the copy sorted by the key the query filters on; filters on the sort keys apply to the
masks too, so a lookup of one neuron touches a few rows of each part, not whole masks.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

from ..errors import InvalidRequest, describe_choices
from ..schemas import Column, ColumnType, Role
from ..storage.files import DataDir
from ..storage.segments import Segment, id_bounds, read_record_rows, serving_path, sorted_copy
from ..timestamps import from_micros
from .filters import Filter, Op, ValueLists, parse_filters
from .relations import Relation
from .snapshots import Mask, SnapshotPart

_COMPUTED = {
    # In a snapshot every visible row is valid and not yet superseded.
    "valid": "TRUE",
    "superceded_id": "NULL::BIGINT",
}


@dataclass(frozen=True)
class OutputColumn:
    name: str
    relation: str
    column: Column


@dataclass(frozen=True)
class Query:
    relations: tuple[Relation, ...]
    join_columns: tuple[str, ...] = ()
    filters: tuple[Filter, ...] = ()
    select: Mapping[str, tuple[Column, ...]] = field(default_factory=dict)
    suffixes: Mapping[str, str] = field(default_factory=dict)
    limit: int | None = None
    offset: int | None = None
    random_sample: int | None = None
    desired_resolution: tuple[float, float, float] | None = None
    #: Keep rows of the first table that have no match in the second (views only).
    left_join: bool = False

    @property
    def is_join(self) -> bool:
        return len(self.relations) > 1

    @property
    def resolution(self) -> tuple[float, float, float]:
        """The resolution positions come back in: the desired one, else the first table's."""
        return self.desired_resolution or self.relations[0].voxel_resolution

    def with_limit(self, limit: int | None) -> Query:
        return replace(self, limit=limit)


@dataclass(frozen=True)
class CompiledQuery:
    sql: str
    params: list[Any]
    columns: tuple[OutputColumn, ...]
    count_sql: str
    count_params: list[Any]
    #: In-memory Arrow tables the statement reads (live changes), registered by name.
    tables: dict[str, Any] = field(default_factory=dict)
    #: Serving copies the statement reads: database alias → file, attached read-only.
    attachments: dict[str, str] = field(default_factory=dict)
    #: Its cost is bounded whatever the datastack's size (see :func:`is_lookup`).
    lookup: bool = False
    #: Its rows are decided by its text, values and files alone: it reads only immutable
    #: files (no live changes) and samples nothing at random.
    reproducible: bool = False


def parse_query(
    body: Mapping[str, Any],
    relations: Sequence[Relation],
    *,
    join_columns: Sequence[str] = (),
    random_sample: Any = None,
) -> Query:
    """Validate a query body against the relations it reads."""
    by_name = {r.name: r for r in relations}
    join = len(relations) > 1
    filters = parse_filters(body, by_name)
    return Query(
        relations=tuple(relations),
        join_columns=tuple(join_columns),
        filters=tuple(filters),
        select=_parse_select(body, by_name, join=join),
        suffixes=_parse_suffixes(body, relations),
        limit=_non_negative(body.get("limit"), "limit", minimum=1),
        offset=_non_negative(body.get("offset"), "offset", minimum=0),
        random_sample=_non_negative(random_sample, "random_sample", minimum=1),
        desired_resolution=parse_resolution(body.get("desired_resolution")),
    )


def parse_resolution(value: Any) -> tuple[float, float, float] | None:
    if value is None:
        return None
    try:
        x, y, z = (float(v) for v in value)
        if not all(math.isfinite(v) and v > 0 for v in (x, y, z)):
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidRequest(
            f"desired_resolution must be three positive numbers (nm per voxel for x, y, z), "
            f"e.g. [1, 1, 1] or [4, 4, 40]; got {value!r}"
        ) from None
    return (x, y, z)


def _non_negative(value: Any, name: str, *, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise InvalidRequest(f"{name} must be an integer ≥ {minimum}; got {value!r}")
    try:
        number = int(value)
        if number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidRequest(f"{name} must be an integer ≥ {minimum}; got {value!r}") from None
    if number < minimum:
        raise InvalidRequest(f"{name} must be an integer ≥ {minimum}; got {value!r}")
    return number


def _parse_select(body: Mapping[str, Any], relations: Mapping[str, Relation], *,
                  join: bool) -> dict[str, tuple[Column, ...]]:
    names = list(relations)
    select_map = body.get("select_column_map")
    select_list = body.get("select_columns")
    if select_map is not None and not isinstance(select_map, Mapping):
        raise InvalidRequest("select_column_map must map table names to lists of columns")
    if isinstance(select_list, Mapping):  # live queries send a map under this key
        select_map, select_list = select_list, None
    if select_list is not None and not isinstance(select_list, list):
        raise InvalidRequest("select_columns must be a list of column names")
    if select_map is not None:
        chosen: dict[str, tuple[Column, ...]] = {}
        for table, columns in select_map.items():
            if table not in relations:
                raise InvalidRequest(
                    f"select_column_map names table {table!r}, which is not in this query; "
                    f"tables: {describe_choices(names)}"
                )
            if not isinstance(columns, list):
                raise InvalidRequest(f"select_column_map[{table!r}] must be a list of columns")
            chosen[table] = tuple(relations[table].select(columns, join=join))
        return {t: chosen.get(t, ()) for t in names}
    if select_list is not None:
        if not join:
            only = names[0]
            return {only: tuple(relations[only].select(select_list, join=join))}
        return _select_list_across(select_list, relations)
    return {}


def _select_list_across(select_list: list[Any],
                        relations: Mapping[str, Relation]) -> dict[str, tuple[Column, ...]]:
    """A plain list in a join: each name goes to the first table that has it (the original's
    deprecated behaviour)."""
    wanted: dict[str, list[str]] = {t: [] for t in relations}
    for name in select_list:
        owner = next((t for t, r in relations.items()
                      if name in r.by_name or name in r.point_columns), None)
        if owner is None:
            raise InvalidRequest(
                f"select_columns: no table in this query has a column {name!r}"
            )
        wanted[owner].append(name)
    return {t: tuple(relations[t].select(cols, join=True)) for t, cols in wanted.items()}


def _parse_suffixes(body: Mapping[str, Any], relations: Sequence[Relation]) -> dict[str, str]:
    names = [r.name for r in relations]
    raw = body.get("suffix_map")
    if raw is None and body.get("suffixes") is not None:
        raw = body["suffixes"]
    if raw is None:
        return {n: ("" if i == 0 else f"_{n}") for i, n in enumerate(names)}
    if isinstance(raw, list):
        if len(raw) != len(names):
            raise InvalidRequest(f"suffixes must have one entry per table ({len(names)})")
        raw = dict(zip(names, raw, strict=True))
    if not isinstance(raw, Mapping):
        raise InvalidRequest("suffix_map must map table names to suffix strings")
    suffixes = {n: "" if i == 0 else f"_{n}" for i, n in enumerate(names)}
    for table, suffix in raw.items():
        if table not in suffixes:
            raise InvalidRequest(f"suffix_map names table {table!r}, not in this query; "
                                 f"tables: {describe_choices(names)}")
        if not isinstance(suffix, str):
            raise InvalidRequest(f"suffix_map[{table!r}] must be a string")
        suffixes[table] = suffix
    if len(set(suffixes.values())) != len(suffixes):
        raise InvalidRequest(f"suffixes must differ between tables; got {suffixes}")
    return suffixes


# --- compilation -------------------------------------------------------------------------


def compile_query(query: Query, data_dir: DataDir) -> CompiledQuery:
    params: list[Any] = []
    ctes = []
    sources = Sources(data_dir)
    lists = ValueLists()
    aliases = {r.name: f"t{i}" for i, r in enumerate(query.relations)}
    # Filters go into each table's CTE (pushed into its scans), except on the optional side
    # of a left join, where they must filter the joined rows instead.
    outer = query.relations[1].name if query.left_join else None
    for relation in query.relations:
        inner = [f for f in query.filters if f.relation == relation.name != outer]
        cte_sql = _relation_cte(relation, inner, sources, params, lists,
                                aliases[relation.name])
        condition = _conditions(inner, "r", params, lists)
        ctes.append(
            f"{aliases[relation.name]} AS (SELECT * FROM ({cte_sql}) AS r WHERE {condition})"
        )
    from_sql = _from_clause(query, aliases)
    outputs, select_sql, select_params = _projection(query, aliases)
    params += select_params
    joined = [f for f in query.filters if f.relation == outer]
    where = _conditions(joined, aliases[outer], params, lists) if outer else "TRUE"
    # The value lists come first in the text, so their parameters do too.
    params = lists.params + params
    with_sql = ", ".join(lists.definitions + ctes)
    body = f"WITH {with_sql} SELECT {select_sql} FROM {from_sql} WHERE {where}"
    if query.random_sample:
        # Sample the filtered rows (exactly n of them, or all if fewer), then page.
        body = f"SELECT * FROM ({body}) USING SAMPLE reservoir({int(query.random_sample)} ROWS)"
        order: list[str] | None = None
    else:
        order = [aliases[r.name] for r in query.relations]
    page_sql, page_params = _page(query, order)
    # Counting needs no order: without ORDER BY a LIMIT stops the scan early.
    count_page_sql, count_page_params = _page(query, None)
    return CompiledQuery(
        sql=body + page_sql,
        params=params + page_params,
        columns=tuple(outputs),
        count_sql=f"SELECT count(*) FROM ({body}{count_page_sql})",
        count_params=params + count_page_params,
        tables=sources.tables,
        attachments=sources.attachments,
        lookup=is_lookup(query),
        reproducible=not (query.random_sample or sources.tables
                          or any(r.live is not None for r in query.relations)),
    )


def compile_page_ids(query: Query, data_dir: DataDir, rows: int
                     ) -> tuple[str, list[Any], Sources]:
    """A statement for where a single-table page lies in id order, read from the id column
    and the masks alone: the first and last id of the page (``first``, ``last``), how many
    rows it found (``found``) and the bound below which it looked (``bound``; NULL when it
    saw every row).

    Each part contributes its ``rows`` smallest ids of rows alive and passing the filters,
    then drops those its masks hide; below the smallest last id of a part that had more rows
    (the bound), every visible row is among them, so the page is exact when it is whole or
    when nothing was left out (no bound)."""
    if query.is_join:
        raise ValueError("page ids are for single-table queries")
    relation = query.relations[0]
    params: list[Any] = []
    sources = Sources(data_dir)
    lists = ValueLists()
    filters = list(query.filters)
    ctes, limits, visible = [], [], []
    key = _scan_key(relation, filters)
    branches = _branches(relation, filters, sources, lists, "t0", masked=False)
    for index, (branch, values) in enumerate(branches):
        params.extend(values)
        condition = _conditions(filters, "r", params, lists)
        ctes.append(f"c{index} AS (SELECT r.id FROM ({branch}) AS r WHERE {condition} "
                    "ORDER BY r.id LIMIT ?)")
        params.append(rows)
        limits.append(f"SELECT CASE WHEN count(*) >= ? THEN max(id) END AS b FROM c{index}")
        visible.append(f"SELECT s.id FROM c{index} AS s")
    mask_params: list[Any] = []
    for index, part in enumerate(_parts(relation)):  # the live rows' branch has no masks
        visible[index] += _masked(relation, index, part, key, filters, sources, mask_params,
                                  lists, "t0", among=f"c{index}")
    params += [rows] * len(limits) + mask_params
    if not ctes:  # an empty table
        ctes, limits, visible = ["c AS (SELECT NULL::BIGINT AS id WHERE FALSE)"], [
            "SELECT NULL::BIGINT AS b"], ["SELECT id FROM c"]
    ctes.append(f"bound AS (SELECT min(b) AS b FROM ({' UNION ALL '.join(limits)}))")
    page = (f"SELECT v.id FROM ({' UNION ALL '.join(visible)}) AS v, bound "
            "WHERE bound.b IS NULL OR v.id <= bound.b ORDER BY v.id LIMIT ? OFFSET ?")
    params += [query.limit, query.offset or 0]
    sql = (f"WITH {', '.join([*lists.definitions, *ctes])} "
           "SELECT min(id) AS first, max(id) AS last, count(*) AS found, "
           f"(SELECT b FROM bound) AS bound FROM ({page})")
    return sql, lists.params + params, sources


def _parts(relation: Relation) -> tuple[SnapshotPart, ...]:
    return relation.snapshot.parts if relation.snapshot is not None else ()


#: A query that picks its rows by at most this many values of a serving key is a lookup,
LOOKUP_VALUES = 64
#: and so is one that reads only tables of at most this many rows (the nucleus and cell-type
#: tables have ~10^5 at full scale).
LOOKUP_TABLE_ROWS = 500_000


def is_lookup(query: Query) -> bool:
    """Whether the query's cost is bounded whatever the size of the datastack: it reads one
    table by at most :data:`LOOKUP_VALUES` values of a key it is sorted by (a neuron's
    synapses, a few cells), or only small tables (a cell-type query joined to nuclei). Such
    queries can run beside long scans without waiting for them."""
    if all(_small(r) for r in query.relations):
        return True
    if query.is_join:
        return False
    keys = query.relations[0].serving_keys
    for f in query.filters:
        if f.columns[0] not in keys:
            continue
        if f.op is Op.IN and len(f.value) <= LOOKUP_VALUES:
            return True
        if f.op is Op.EQUAL and f.value is not None:
            return True
    return False


def _small(relation: Relation) -> bool:
    """Whether a scan of the relation reads at most :data:`LOOKUP_TABLE_ROWS` rows (its
    parts' and its live changes')."""
    if relation.snapshot is None:
        return False
    live = relation.live.rows if relation.live is not None else None
    rows = sum(p.segment.num_rows for p in relation.snapshot.parts)
    return rows + (live.num_rows if live is not None else 0) <= LOOKUP_TABLE_ROWS


def _conditions(filters: list[Filter], alias: str, params: list[Any],
                lists: ValueLists) -> str:
    parts = []
    for f in filters:
        sql, values = f.sql(alias, lists)
        parts.append(sql)
        params.extend(values)
    return " AND ".join(parts) if parts else "TRUE"


@dataclass
class Sources:
    """What a statement reads besides SQL text: serving copies to attach, Arrow tables to
    register."""

    data_dir: DataDir
    attachments: dict[str, str] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)

    def stored(self, relative: str, key: str, params: list[Any]) -> str:
        """A FROM item for a segment or mask file, in its copy sorted by ``key``: the serving
        copy when there is one, else the Parquet file (data written before serving copies)."""
        path = self.data_dir.absolute(relative)
        serving = serving_path(path)
        if not serving.exists():
            params.append(str(path))
            return "read_parquet(?)"
        alias = "f_" + hashlib.sha1(str(serving).encode()).hexdigest()[:20]
        self.attachments[alias] = str(serving)
        return f'{alias}."{sorted_copy(key)}"'

    def segment(self, segment: Segment, cluster_key: str, key: str, params: list[Any],
                values: Sequence[Any] | None = None) -> str:
        """A FROM item for a part's segment in its copy sorted by ``key``: :meth:`stored`,
        unless the segment's Parquet record is sorted by that key in place of its copy
        (:func:`~opencave.storage.segments.serving_layout`). Then the rows of the record's
        few row groups that hold ``values`` (the values of ``key`` the query keeps, when
        few), else the record itself."""
        if segment.sort_key == cluster_key or key != segment.sort_key:
            return self.stored(segment.path, key, params)
        path = self.data_dir.absolute(segment.path)
        rows = read_record_rows(path, key, values) if values is not None else None
        if rows is None:
            params.append(str(path))
            return "read_parquet(?)"
        name = f"record_{len(self.tables)}"
        self.tables[name] = rows
        return name


def _scan_key(relation: Relation, filters: list[Filter]) -> str:
    """The sort key to read a relation by: the first serving key the query pins with an
    equality or ``IN`` filter (its copy keeps the matching rows together), else the
    cluster key."""
    pinned = {f.columns[0] for f in filters if f.op in (Op.EQUAL, Op.IN)}
    return next((k for k in relation.serving_keys if k in pinned), relation.serving_keys[0])


def _pinned_values(filters: Sequence[Filter], key: str) -> tuple[Any, ...] | None:
    """The values of ``key`` a query keeps, when an ``IN`` filter of at most
    :data:`LOOKUP_VALUES` values or an equality pins them (filters are a conjunction: the
    rows outside them are none of the result)."""
    for f in filters:
        if f.columns[0] != key:
            continue
        if f.op is Op.IN and len(f.value) <= LOOKUP_VALUES:
            return tuple(f.value)
        if f.op is Op.EQUAL and f.value is not None:
            return (f.value,)
    return None


def _on_mask(filters: list[Filter], held: Sequence[str], params: list[Any],
             lists: ValueLists) -> str:
    """The query's filters on columns a mask holds (``held``: its ids and keys), over alias
    ``r``: they apply to the mask as well (it holds the segment's own values, so this drops
    only non-matches)."""
    return _conditions([f for f in filters if set(f.columns) <= set(held)], "r", params,
                       lists)


def anti_join_masks(part: SnapshotPart, key: str, sources: Sources, params: list[Any],
                    condition: Callable[[Mask], str], *, among: str | None = None) -> str:
    """``ANTI JOIN`` of the ids in a part's masks (segment alias ``s``), each mask read in
    its copy sorted by ``key`` and narrowed by ``condition(mask)`` over alias ``r`` — and to
    the ids of the relation ``among`` when given (a few candidates: DuckDB then filters the
    mask's scan by their range instead of probing every mask row)."""
    if not part.masks:
        return ""
    narrow = f" SEMI JOIN {among} AS w ON r.id = w.id" if among else ""
    scans = []
    for mask in part.masks:
        source = sources.stored(mask.path, key, params)
        scans.append(f"SELECT r.id FROM {source} AS r{narrow} WHERE {condition(mask)}")
    return f" ANTI JOIN ({' UNION ALL '.join(scans)}) AS m ON s.id = m.id"


def _relation_cte(relation: Relation, filters: list[Filter], sources: Sources,
                  params: list[Any], lists: ValueLists, alias: str) -> str:
    """The relation's visible rows: each part (segment minus masks, persisted and live)
    plus live rows, alive at the snapshot's timestamp."""
    branches = []
    for sql, values in _branches(relation, filters, sources, lists, alias, masked=True):
        branches.append(sql)
        params.extend(values)
    if not branches:  # an empty table: one typed, empty branch keeps the schema
        return "SELECT " + ", ".join(
            f"NULL::{_duck_type(c)} AS \"{c.name}\"" for c in relation.columns
        ) + " WHERE FALSE"
    return " UNION ALL ".join(branches)


def _branches(relation: Relation, filters: list[Filter], sources: Sources, lists: ValueLists,
              alias: str, *, masked: bool) -> list[tuple[str, list[Any]]]:
    """One SELECT per part of the relation (its segment, minus its masks when ``masked``)
    and one for its live rows, each of the rows alive at the snapshot's timestamp, with its
    parameters."""
    snapshot = relation.snapshot
    if snapshot is None:
        raise InvalidRequest(f"table {relation.name!r} has no data in this version")
    columns = ", ".join(_stored_expression(c) for c in relation.columns)
    timestamp = from_micros(snapshot.timestamp)
    alive = "WHERE s.created <= ? AND (s.deleted IS NULL OR s.deleted > ?)"
    live = relation.live
    key = _scan_key(relation, filters)
    values = _pinned_values(filters, key)
    branches = []
    for index, part in enumerate(snapshot.parts):
        ranges = _mask_id_ranges(relation.name, part, filters, sources) if masked else [[]]
        for in_range in ranges:
            params: list[Any] = []
            source = sources.segment(part.segment, relation.serving_keys[0], key, params,
                                     values) + " AS s"
            if masked:  # the masks too, in the range: they hold their rows' ids
                source += _masked(relation, index, part, key, [*filters, *in_range], sources,
                                  params, lists, alias)
            bounds: list[Any] = []
            where = f" AND {_conditions(in_range, 's', bounds, lists)}" if in_range else ""
            branches.append((f"SELECT {columns} FROM {source} {alive}{where}",
                             [*params, timestamp, timestamp, *bounds]))
    if live is not None and live.rows is not None and live.rows.num_rows:
        name = f"{alias}_rows"
        sources.tables[name] = live.rows
        branches.append((f"SELECT {columns} FROM {name} AS s {alive}", [timestamp, timestamp]))
    return branches


#: Mask ids one anti-join may hash (~40 bytes each, within a share of the server's memory
#: limit): a part whose masks hold more, not narrowed by the query's filters, is read a range
#: of ids at a time. Else DuckDB's join, out of memory, spills the whole part to disk (at
#: 3.4e8 the bulk's masks at v1718 hold 4.6e7 ids, and the whole table filled the disk).
MASK_JOIN_IDS = 5_000_000


def _mask_id_ranges(relation: str, part: SnapshotPart, filters: list[Filter],
                    sources: Sources) -> list[list[Filter]]:
    """Ranges of ids, as filters (``low < id <= high``, the first and last open), that split
    the part's masks into at most :data:`MASK_JOIN_IDS` ids each, assuming their ids spread
    evenly; ``[[]]`` (one range: all) when the masks are smaller or the query's equality and
    ``IN`` filters narrow them (a lookup hashes its few rows instead)."""
    total = sum(mask.count for mask in part.masks)
    if total <= MASK_JOIN_IDS or any(
            f.op in (Op.EQUAL, Op.IN) and set(f.columns) <= set(mask.columns)
            for f in filters for mask in part.masks):
        return [[]]
    bounds = [id_bounds(sources.data_dir.absolute(mask.path)) for mask in part.masks]
    if None in bounds:
        return [[]]
    low, high = min(b[0] for b in bounds), max(b[1] for b in bounds)
    count = -(-total // MASK_JOIN_IDS)
    edges = sorted({low + (high - low) * i // count for i in range(1, count)})
    ranges = []
    for above, up_to in pairwise([None, *edges, None]):
        in_range = []
        if above is not None:
            in_range.append(Filter(relation, ("id",), Op.GREATER, above, ColumnType.INT64))
        if up_to is not None:
            in_range.append(Filter(relation, ("id",), Op.LESS_EQUAL, up_to, ColumnType.INT64))
        ranges.append(in_range)
    return ranges


def _masked(relation: Relation, index: int, part: SnapshotPart, key: str,
            filters: list[Filter], sources: Sources, params: list[Any], lists: ValueLists,
            alias: str, among: str | None = None) -> str:
    """The anti-joins hiding what the part's masks, persisted and live, hide (see
    :func:`anti_join_masks` for ``among``)."""
    sql = anti_join_masks(part, key, sources, params,
                          lambda mask: _on_mask(filters, mask.columns, params, lists), among=among)
    live = relation.live
    if live is not None and index in live.masks:
        name = f"{alias}_mask_{index}"
        sources.tables[name] = live.masks[index]
        condition = _on_mask(filters, live.masks[index].column_names, params, lists)
        sql += f" ANTI JOIN (SELECT r.id FROM {name} AS r WHERE {condition}) AS x ON s.id = x.id"
    return sql


def _stored_expression(column: Column) -> str:
    if column.name in _COMPUTED:
        return f'{_COMPUTED[column.name]} AS "{column.name}"'
    return f's."{column.name}"'


def _duck_type(column: Column) -> str:
    return {
        ColumnType.INT64: "BIGINT",
        ColumnType.FLOAT64: "DOUBLE",
        ColumnType.STRING: "VARCHAR",
        ColumnType.BOOL: "BOOLEAN",
        ColumnType.TIMESTAMP: "TIMESTAMPTZ",
    }[column.type]


def _from_clause(query: Query, aliases: Mapping[str, str]) -> str:
    if not query.is_join:
        return aliases[query.relations[0].name]
    if len(query.relations) != 2 or len(query.join_columns) != 2:
        raise InvalidRequest("a join query takes exactly two tables: "
                             "[[table_a, column_a], [table_b, column_b]]")
    left, right = query.relations
    lcol = left.column(query.join_columns[0], purpose="tables (join column)")
    rcol = right.column(query.join_columns[1], purpose="tables (join column)")
    if lcol.type != rcol.type:
        raise InvalidRequest(
            f"cannot join {left.name}.{lcol.name} ({lcol.type.value}) to "
            f"{right.name}.{rcol.name} ({rcol.type.value})"
        )
    a, b = aliases[left.name], aliases[right.name]
    how = "LEFT JOIN" if query.left_join else "JOIN"
    return f'{a} {how} {b} ON {a}."{lcol.name}" = {b}."{rcol.name}"'


def _selected(query: Query, relation: Relation) -> tuple[Column, ...]:
    if query.select:
        return query.select.get(relation.name, ())
    return tuple(relation.output_columns(join=query.is_join))


def _output_base(column: Column) -> str:
    return column.name[:-2] if column.role is Role.POSITION else column.name


def output_columns(query: Query) -> list[OutputColumn]:
    """The columns a query returns, named as the client sees them: the tables' selected
    columns in order, positions as ``<point>_position_x/_y/_z``, and a table's suffix added
    only to names that more than one table returns."""
    selected = {r.name: _selected(query, r) for r in query.relations}
    base_counts: dict[str, int] = {}
    for columns in selected.values():
        for base in {_output_base(c) for c in columns}:
            base_counts[base] = base_counts.get(base, 0) + 1
    outputs: list[OutputColumn] = []
    for relation in query.relations:
        suffix = query.suffixes.get(relation.name, "")
        for column in selected[relation.name]:
            base = _output_base(column)
            renamed = base + suffix if base_counts[base] > 1 else base
            name = f"{renamed}_{column.axis}" if column.role is Role.POSITION else renamed
            outputs.append(OutputColumn(name, relation.name, column))
    if not outputs:
        raise InvalidRequest("the selection is empty: select at least one column")
    return outputs


def _projection(query: Query, aliases: Mapping[str, str]
                ) -> tuple[list[OutputColumn], str, list[Any]]:
    outputs = output_columns(query)
    relations = {r.name: r for r in query.relations}
    expressions: list[str] = []
    params: list[Any] = []
    for out in outputs:
        alias = aliases[out.relation]
        column = out.column
        if column.role is Role.POSITION:
            axis = "xyz".index(column.axis or "x")
            factor = relations[out.relation].voxel_resolution[axis] / query.resolution[axis]
            expressions.append(_position_expression(alias, column.name, factor, out.name,
                                                    params))
        else:
            expressions.append(f'{alias}."{column.name}" AS "{out.name}"')
    return outputs, ", ".join(expressions), params


def _position_expression(alias: str, column: str, factor: float, name: str,
                         params: list[Any]) -> str:
    ref = f'{alias}."{column}"'
    if factor == 1:
        return f'{ref} AS "{name}"'
    if float(factor).is_integer():
        params.append(int(factor))
        return f'{ref} * ?::BIGINT AS "{name}"'
    params.append(float(factor))
    return f'{ref} * ?::DOUBLE AS "{name}"'


def _page(query: Query, order: list[str] | None) -> tuple[str, list[Any]]:
    """LIMIT/OFFSET, ordered by the tables' ids so that pages are deterministic."""
    if query.limit is None and query.offset is None:
        return "", []
    sql = f" ORDER BY {', '.join(f'{a}.id' for a in order)}" if order else ""
    params: list[Any] = []
    if query.limit is not None:
        sql += " LIMIT ?"
        params.append(query.limit)
    if query.offset is not None:
        sql += " OFFSET ?"
        params.append(query.offset)
    return sql, params
