"""The materialization service: versions, table metadata and queries of a datastack — at a
version or as of any timestamp — as the API serves them. It checks who may see what,
resolves names to relations and hands queries to the engine."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from ..annotation import AnnotationTable, AnnotationTables
from ..auth import ANONYMOUS, SYSTEM, Access, Level, User
from ..errors import InvalidRequest, TableNotFound, ViewNotFound, describe_choices
from ..info import Datastack
from ..schemas import ColumnType, Role
from ..storage.files import DataDir
from ..timestamps import now, parse_timestamp, to_micros
from .changes import ChangeFinder
from .diff import diff as diff_relations
from .engine import QueryEngine, ResultStream
from .filters import Filter, Op
from .pages import narrow_join, read_page
from .query import CompiledQuery, Query, compile_query, output_columns, parse_query
from .relations import Relation
from .results import ResultCache
from .snapshots import TableSnapshot
from .versions import Version, Versions
from .view import SegmentationView
from .views import View, Views, view_query, view_schema

#: A limit up to this many rows is answered from the page read whole (~20 MB of synapses
#: at most).
WHOLE_PAGE_ROWS = 100_000
#: Says whether a result came from the result cache.
RESULT_CACHE_HEADER = "X-Result-Cache"


@dataclass
class QueryResult:
    """Rows to stream plus the response headers caveclient reads."""

    stream: ResultStream
    headers: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class MaterializationService:
    def __init__(self, data: DataDir, access: Access, tables: AnnotationTables,
                 versions: Versions, engine: QueryEngine, changes: ChangeFinder,
                 segmentation: Callable[[str], SegmentationView], views: Views, *,
                 row_cap: int | None = None, results: ResultCache | None = None):
        self.data = data
        self.views_registry = views
        self.access = access
        self.tables = tables
        self.versions = versions
        self.engine = engine
        self.changes = changes
        self.segmentation = segmentation
        self.row_cap = row_cap
        self.results = results
        self._snapshots: OrderedDict[int, dict[str, TableSnapshot]] = OrderedDict()
        self._lock = threading.Lock()

    # --- versions --------------------------------------------------------------------

    def version_numbers(self, datastack: str, *, expired: bool = False,
                        user: User = ANONYMOUS) -> list[int]:
        self.access.datastack(user, datastack)
        return [v.version for v in self.versions.available(datastack, include_expired=expired)]

    def version(self, datastack: str, version: int, *, user: User = ANONYMOUS) -> Version:
        self.access.datastack(user, datastack)
        return self.versions.get(datastack, version)

    def versions_metadata(self, datastack: str, *, expired: bool = False,
                          user: User = ANONYMOUS) -> list[dict[str, Any]]:
        self.access.datastack(user, datastack)
        return [v.to_json() for v in self.versions.available(datastack, include_expired=expired)]

    # --- tables ----------------------------------------------------------------------

    def table_names(self, datastack: str, version: int, *, user: User = ANONYMOUS) -> list[str]:
        ds = self.access.datastack(user, datastack)
        level = self.access.datastack_level(user, ds)
        names = sorted(self._snapshots_of(self.version(datastack, version, user=user)))
        return [n for n in names
                if self.access.may_read(user, self._annotation_table(ds, n), level)]

    def table_metadata(self, datastack: str, version: int, table: str, *,
                       user: User = ANONYMOUS) -> dict[str, Any]:
        """Metadata of a table of the datastack. A table created after the version still
        answers (caveclient reads it after live queries of new tables); querying it at that
        version does not."""
        ds = self.access.datastack(user, datastack)
        self.versions.get(datastack, version)
        return self._readable_table(user, ds, table).metadata()

    def tables_metadata(self, datastack: str, version: int, *,
                        user: User = ANONYMOUS) -> list[dict[str, Any]]:
        ds = self.access.datastack(user, datastack)
        names = self.table_names(datastack, version, user=user)
        return [self._annotation_table(ds, name).metadata() for name in names]

    def row_count(self, datastack: str, version: int, table: str, *,
                  user: User = ANONYMOUS) -> int:
        ds = self.access.datastack(user, datastack)
        self._readable_table(user, ds, table)
        return self._snapshot(self.versions.get(datastack, version), table).row_count

    # --- queries ---------------------------------------------------------------------

    def query_table(self, datastack: str, version: int, table: str, body: Mapping[str, Any],
                    *, random_sample: Any = None, count: bool = False,
                    user: User = ANONYMOUS) -> QueryResult:
        ds = self.access.datastack(user, datastack)
        v = self.versions.get(datastack, version)
        relation = self._relation(user, ds, v, table)
        query = parse_query(body, [relation], random_sample=random_sample)
        return self._run(query, count=count)

    def join_query(self, datastack: str, version: int, body: Mapping[str, Any], *,
                   random_sample: Any = None, count: bool = False,
                   user: User = ANONYMOUS) -> QueryResult:
        spec = body.get("tables")
        if (not isinstance(spec, list) or len(spec) != 2
                or not all(isinstance(t, list) and len(t) == 2 for t in spec)):
            raise InvalidRequest(
                "a join query needs \"tables\": [[table_a, column_a], [table_b, column_b]]"
            )
        ds = self.access.datastack(user, datastack)
        v = self.versions.get(datastack, version)
        relations = [self._relation(user, ds, v, str(name)) for name, _ in spec]
        return self._join(body, relations, [str(c) for _, c in spec],
                          random_sample=random_sample, count=count)

    def live_query(self, datastack: str, body: Mapping[str, Any], *,
                   random_sample: Any = None, allow_invalid_root_ids: bool = False,
                   user: User = ANONYMOUS) -> QueryResult:
        """A query as of any timestamp (``live_live_query``): the nearest earlier version
        plus everything that changed since, root ids as of the timestamp."""
        ds = self.access.datastack(user, datastack)
        timestamp = self._live_timestamp(body.get("timestamp"))
        table = body.get("table")
        if not isinstance(table, str):
            raise InvalidRequest("a live query needs \"table\": the table to query")
        joins = body.get("join_tables") or []
        if joins and (len(joins) != 1 or not isinstance(joins[0], list) or len(joins[0]) != 4):
            raise InvalidRequest("join_tables takes one join: [[table_a, column_a, table_b, "
                                 "column_b]]")
        names = [table] if not joins else [str(joins[0][0]), str(joins[0][2])]
        relations = [self.live_relation(user, ds, name, timestamp) for name in names]
        query = parse_query(body, relations, join_columns=(
            [str(joins[0][1]), str(joins[0][3])] if joins else ()), random_sample=random_sample)
        if not allow_invalid_root_ids:
            self._require_valid_roots(ds, query.filters, timestamp)
        return self._run(query, count=False)

    def diff(self, datastack: str, table: str, before: int | datetime, after: int | datetime,
             *, user: User = ANONYMOUS) -> pa.Table:
        """Rows added, removed and whose root ids changed between two versions or
        timestamps (see :mod:`.diff`)."""
        ds = self.access.datastack(user, datastack)
        relations = [self._relation_at(user, ds, table, side) for side in (before, after)]
        return diff_relations(self.engine, self.data, relations[0], relations[1])

    def _relation_at(self, user: User, ds: Datastack, table: str,
                     when: int | datetime) -> Relation:
        if isinstance(when, datetime):
            return self.live_relation(user, ds, table, self._live_timestamp(when))
        return self._relation(user, ds, self.versions.get(ds.name, when), table)

    # --- views -----------------------------------------------------------------------

    def views(self, datastack: str, version: int, *,
              user: User = ANONYMOUS) -> dict[str, dict[str, Any]]:
        """Views answerable at this version (their tables exist and are readable)."""
        return {view.name: view.metadata(self._view_parts(user, datastack, version, view)[1])
                for view in self._available_views(user, datastack, version)}

    def view_schemas(self, datastack: str, version: int, *,
                     user: User = ANONYMOUS) -> dict[str, dict[str, Any]]:
        return {view.name: self._view_schema(user, datastack, version, view)
                for view in self._available_views(user, datastack, version)}

    def view_metadata(self, datastack: str, version: int, name: str, *,
                      user: User = ANONYMOUS) -> dict[str, Any]:
        view = self._view_at(user, datastack, version, name)
        return view.metadata(self._view_parts(user, datastack, version, view)[1])

    def view_schema(self, datastack: str, version: int, name: str, *,
                    user: User = ANONYMOUS) -> dict[str, Any]:
        return self._view_schema(user, datastack, version,
                                 self._view_at(user, datastack, version, name))

    def query_view(self, datastack: str, version: int, name: str, body: Mapping[str, Any],
                   *, random_sample: Any = None, count: bool = False,
                   user: User = ANONYMOUS) -> QueryResult:
        view = self._view_at(user, datastack, version, name)
        relations, _ = self._view_parts(user, datastack, version, view)
        query = view_query(view, relations, body, random_sample)
        return self._run(query, count=count, extra_notice=view.notice_text)

    def check_view(self, view: View, version: int) -> dict[str, Any]:
        """Validate a view against a version's tables (as the system, which may read every
        table); returns its schema."""
        return self._view_schema(SYSTEM, view.datastack, version, view)

    def _available_views(self, user: User, datastack: str, version: int) -> list[View]:
        ds = self.access.datastack(user, datastack)
        present = set(self._snapshots_of(self.versions.get(datastack, version)))
        level = self.access.datastack_level(user, ds)
        return [v for v in self.views_registry.list(datastack)
                if set(v.table_names) <= present
                and all(self.access.may_read(user, self._annotation_table(ds, t), level)
                        for t in v.table_names)]

    def _view_at(self, user: User, datastack: str, version: int, name: str) -> View:
        view = self.views_registry.get(datastack, name)
        if view not in self._available_views(user, datastack, version):
            raise ViewNotFound(f"view {name!r} cannot be queried at version {version}: one "
                               "of its tables is missing there or not readable", view=name)
        return view

    def _view_parts(self, user: User, datastack: str, version: int,
                    view: View) -> tuple[list[Relation], tuple[float, float, float]]:
        ds = self.access.datastack(user, datastack)
        v = self.versions.get(datastack, version)
        relations = [self._relation(user, ds, v, t) for t in view.table_names]
        return relations, relations[0].voxel_resolution

    def _view_schema(self, user: User, datastack: str, version: int,
                     view: View) -> dict[str, Any]:
        relations, _ = self._view_parts(user, datastack, version, view)
        return view_schema(output_columns(view.base_query(relations)))

    def live_relation(self, user: User, ds: Datastack, table: str,
                      timestamp: datetime) -> Relation:
        meta = self._readable_table(user, ds, table)
        if meta.created > timestamp:
            raise TableNotFound(f"table {table!r} did not exist yet at {timestamp.isoformat()}",
                                table=table)
        previous = self.versions.at_or_before(ds.name, timestamp)
        prior = self._snapshots_of(previous).get(table) if previous else None
        base = self.changes.base(meta, prior)
        changes = self.changes.changes(meta, base, timestamp,
                                       self.segmentation(ds.segmentation_table))
        snapshot = TableSnapshot(table, to_micros(timestamp), base.parts, 0)
        return Relation.of_table(meta, snapshot, live=changes)

    def unique_string_values(self, datastack: str, table: str, *,
                             user: User = ANONYMOUS) -> dict[str, list[str]]:
        """Distinct values of each text column, at the latest version."""
        ds = self.access.datastack(user, datastack)
        latest = self.versions.latest(datastack)
        if latest is None:
            return {}
        relation = self._relation(user, ds, latest, table)
        out: dict[str, list[str]] = {}
        for column in relation.columns:
            if column.type is ColumnType.STRING:
                query = Query((relation,), select={relation.name: (column,)})
                compiled = compile_query(query, self.data)
                values = self.engine.table(_distinct(compiled)).column(0).to_pylist()
                out[column.name] = sorted(v for v in values if v is not None)
        return out

    # --- internals -------------------------------------------------------------------

    def _join(self, body: Mapping[str, Any], relations: list[Relation], columns: list[str],
              *, random_sample: Any, count: bool) -> QueryResult:
        if relations[0].name == relations[1].name:
            raise InvalidRequest("a join query needs two different tables")
        query = parse_query(body, relations, join_columns=columns, random_sample=random_sample)
        return self._run(query, count=count)

    def _run(self, query: Query, *, count: bool,
             extra_notice: str | None = None) -> QueryResult:
        warnings = [r.notice for r in query.relations if r.notice]
        if extra_notice:
            warnings.append(extra_notice)
        limit = query.limit
        if self.row_cap is not None and (limit is None or limit > self.row_cap):
            limit = self.row_cap
        query = narrow_join(self.engine, query.with_limit(limit), self.data)
        compiled = compile_query(query, self.data)
        headers = {
            "dataframe_resolution": ", ".join(str(float(r)) for r in query.resolution),
            "column_names": json.dumps(_column_names(compiled)),
            RESULT_CACHE_HEADER: "off",  # counts and small pages are read, not kept
        }
        if count:
            counted = pa.table({"count": [self.engine.count(compiled)]})
            return QueryResult(ResultStream.of(counted), headers, warnings)
        if limit is None:
            return QueryResult(self._stream(compiled, headers), headers, warnings)
        # Whether the limit cut the result decides the warning, which goes out before the
        # rows: a small page is read whole first, where counting would run the query twice
        # (limit=10 on the 10^8-row synapse table through caveclient: 1.59 s -> 1.06 s).
        if limit <= WHOLE_PAGE_ROWS:
            page = read_page(self.engine, query, compiled, self.data)
            cut, rows = page.num_rows >= limit, ResultStream.of(page)
        else:
            cut = self.engine.count(compiled) >= limit
            rows = self._stream(compiled, headers)
        if cut:
            warnings.append(f'201 - "Limited query to {limit} rows')
        return QueryResult(rows, headers, warnings)

    def _stream(self, compiled: CompiledQuery, headers: dict[str, str]) -> ResultStream:
        """The query's rows: read from the result cache when it holds them, else run (and
        kept as they stream when they may be). ``headers`` get ``X-Result-Cache``: hit or
        miss; it stays off when the result is not kept (a live query, a random sample, a
        lookup, or no cache)."""
        key = self.results.key(compiled) if self.results is not None else None
        if self.results is None or key is None:
            return self.engine.stream(compiled)
        stream, headers[RESULT_CACHE_HEADER] = self.results.answer(
            key, lambda: self.engine.stream(compiled))
        return stream

    @staticmethod
    def _live_timestamp(value: Any) -> datetime:
        if value is None:
            return now()
        timestamp = parse_timestamp(value)
        if timestamp > now():
            raise InvalidRequest(f"timestamp {value!r} is in the future")
        return timestamp

    def _require_valid_roots(self, ds: Datastack, filters: tuple[Filter, ...],
                             timestamp: datetime) -> None:
        """Root ids filtered on must exist at the timestamp (else the answer would silently
        be empty); ``allow_invalid_root_ids`` skips this."""
        wanted: set[int] = set()
        for f in filters:
            if f.op in (Op.IN, Op.EQUAL) and f.columns[0].endswith("_root_id"):
                values = f.value if f.op is Op.IN else (f.value,)
                wanted.update(int(v) for v in values if v)
        if not wanted:
            return
        ids = np.array(sorted(wanted), dtype=np.uint64)
        graph = self.segmentation(ds.segmentation_table)
        latest = np.asarray(graph.is_latest_roots(ids, timestamp), dtype=bool)
        if not latest.all():
            bad = ids[~latest][:10].tolist()
            raise InvalidRequest(
                f"root id(s) {bad} are not valid at {timestamp.isoformat()}: they were "
                "replaced by edits or did not exist yet; map them first (get_latest_roots or "
                "get_past_ids) or pass allow_invalid_root_ids=True", root_ids=bad)

    def _annotation_table(self, ds: Datastack, table: str) -> AnnotationTable:
        return self.tables.get(ds.aligned_volume.name, table)

    def _readable_table(self, user: User, ds: Datastack, table: str) -> AnnotationTable:
        meta = self._annotation_table(ds, table)
        self.access.require_table(user, meta, self.access.datastack_level(user, ds), Level.VIEW)
        return meta

    def _snapshots_of(self, version: Version) -> dict[str, TableSnapshot]:
        with self._lock:
            cached = self._snapshots.get(version.id)
            if cached is not None:
                self._snapshots.move_to_end(version.id)
                return cached
        snapshots = self.versions.snapshots(version)
        with self._lock:
            self._snapshots[version.id] = snapshots
            while len(self._snapshots) > 64:
                self._snapshots.popitem(last=False)
        return snapshots

    def _snapshot(self, version: Version, table: str) -> TableSnapshot:
        snapshots = self._snapshots_of(version)
        if table not in snapshots:
            raise TableNotFound(
                f"no table {table!r} in version {version.version} of {version.datastack!r}; "
                f"tables: {describe_choices(snapshots, 60)}",
                table=table,
            )
        return snapshots[table]

    def _relation(self, user: User, ds: Datastack, version: Version, table: str) -> Relation:
        snapshot = self._snapshot(version, table)
        meta = self._readable_table(user, ds, table)
        return Relation.of_table(meta, snapshot)


def _distinct(compiled: CompiledQuery) -> CompiledQuery:
    return replace(compiled, sql=f"SELECT DISTINCT * FROM ({compiled.sql})")


def _column_names(compiled: CompiledQuery) -> dict[str, dict[str, str]]:
    """``{table: {stored column: returned column}}``, like the original's header."""
    names: dict[str, dict[str, str]] = {}
    for out in compiled.columns:
        positional = out.column.role is Role.POSITION
        base = out.column.name[:-2] if positional else out.column.name
        shown = out.name[:-2] if positional else out.name
        names.setdefault(out.relation, {})[base] = shown
    return names
