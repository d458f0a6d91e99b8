"""The materialization service: versions, table metadata and queries of a datastack, as the
API serves them. It resolves names to relations and hands queries to the engine."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..annotation import AnnotationTable, AnnotationTables
from ..errors import InvalidRequest, TableNotFound, describe_choices
from ..info import InfoService
from ..schemas import ColumnType
from ..storage.files import DataDir
from .engine import QueryEngine, ResultStream
from .query import CompiledQuery, Query, compile_query, parse_query
from .relations import Relation
from .snapshots import TableSnapshot
from .versions import Version, Versions


@dataclass
class QueryResult:
    """Rows to stream plus the response headers caveclient reads."""

    stream: ResultStream | pa.Table
    headers: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class MaterializationService:
    def __init__(self, data: DataDir, info: InfoService, tables: AnnotationTables,
                 versions: Versions, engine: QueryEngine, *, row_cap: int | None = None):
        self.data = data
        self.info = info
        self.tables = tables
        self.versions = versions
        self.engine = engine
        self.row_cap = row_cap
        self._snapshots: OrderedDict[int, dict[str, TableSnapshot]] = OrderedDict()
        self._lock = threading.Lock()

    # --- versions --------------------------------------------------------------------

    def version_numbers(self, datastack: str, *, expired: bool = False) -> list[int]:
        self.info.datastack(datastack)
        return [v.version for v in self.versions.available(datastack, include_expired=expired)]

    def version(self, datastack: str, version: int) -> Version:
        self.info.datastack(datastack)
        return self.versions.get(datastack, version)

    def versions_metadata(self, datastack: str, *, expired: bool = False) -> list[dict[str, Any]]:
        self.info.datastack(datastack)
        return [v.to_json() for v in self.versions.available(datastack, include_expired=expired)]

    # --- tables ----------------------------------------------------------------------

    def table_names(self, datastack: str, version: int) -> list[str]:
        return sorted(self._snapshots_of(self.version(datastack, version)))

    def table_metadata(self, datastack: str, version: int, table: str) -> dict[str, Any]:
        self._snapshot(self.version(datastack, version), table)
        return self._annotation_table(datastack, table).metadata()

    def tables_metadata(self, datastack: str, version: int) -> list[dict[str, Any]]:
        names = self.table_names(datastack, version)
        return [self._annotation_table(datastack, name).metadata() for name in names]

    def row_count(self, datastack: str, version: int, table: str) -> int:
        return self._snapshot(self.version(datastack, version), table).row_count

    # --- queries ---------------------------------------------------------------------

    def query_table(self, datastack: str, version: int, table: str, body: Mapping[str, Any],
                    *, random_sample: Any = None, count: bool = False) -> QueryResult:
        v = self.version(datastack, version)
        relation = self._relation(datastack, v, table)
        query = parse_query(body, [relation], random_sample=random_sample)
        return self._run(query, count=count, notices=[self._annotation_table(datastack, table)])

    def join_query(self, datastack: str, version: int, body: Mapping[str, Any], *,
                   random_sample: Any = None, count: bool = False) -> QueryResult:
        spec = body.get("tables")
        if (not isinstance(spec, list) or len(spec) != 2
                or not all(isinstance(t, list) and len(t) == 2 for t in spec)):
            raise InvalidRequest(
                "a join query needs \"tables\": [[table_a, column_a], [table_b, column_b]]"
            )
        v = self.version(datastack, version)
        relations = [self._relation(datastack, v, str(name)) for name, _ in spec]
        if relations[0].name == relations[1].name:
            raise InvalidRequest("a join query needs two different tables")
        query = parse_query(body, relations, join_columns=[str(c) for _, c in spec],
                            random_sample=random_sample)
        notices = [self._annotation_table(datastack, r.name) for r in relations]
        return self._run(query, count=count, notices=notices)

    def unique_string_values(self, datastack: str, table: str) -> dict[str, list[str]]:
        """Distinct values of each text column, at the latest version."""
        self.info.datastack(datastack)
        latest = self.versions.latest(datastack)
        if latest is None:
            return {}
        relation = self._relation(datastack, latest, table)
        out: dict[str, list[str]] = {}
        for column in relation.columns:
            if column.type is ColumnType.STRING:
                query = Query((relation,), select={relation.name: (column,)})
                compiled = compile_query(query, self.data)
                values = self.engine.table(_distinct(compiled)).column(0).to_pylist()
                out[column.name] = sorted(v for v in values if v is not None)
        return out

    # --- internals -------------------------------------------------------------------

    def _run(self, query: Query, *, count: bool, notices: list[AnnotationTable]) -> QueryResult:
        warnings = [t.notice_text for t in notices if t.notice_text]
        limit = query.limit
        if self.row_cap is not None and (limit is None or limit > self.row_cap):
            limit = self.row_cap
        query = query.with_limit(limit)
        compiled = compile_query(query, self.data)
        headers = {
            "dataframe_resolution": ", ".join(str(float(r)) for r in query.resolution),
            "column_names": json.dumps(_column_names(compiled)),
        }
        if count:
            return QueryResult(pa.table({"count": [self.engine.count(compiled)]}), headers,
                               warnings)
        if limit is not None and self.engine.count(compiled) >= limit:
            warnings.append(f'201 - "Limited query to {limit} rows')
        return QueryResult(self.engine.stream(compiled), headers, warnings)

    def _annotation_table(self, datastack: str, table: str) -> AnnotationTable:
        ds = self.info.datastack(datastack)
        return self.tables.get(ds.aligned_volume.name, table)

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

    def _relation(self, datastack: str, version: Version, table: str) -> Relation:
        snapshot = self._snapshot(version, table)
        meta = self._annotation_table(datastack, table)
        return Relation(table, meta.schema.columns(), meta.voxel_resolution, snapshot,
                        meta.cluster_key)


def _distinct(compiled: CompiledQuery) -> CompiledQuery:
    sql = f"SELECT DISTINCT * FROM ({compiled.sql})"
    return CompiledQuery(sql, compiled.params, compiled.columns, compiled.count_sql,
                         compiled.count_params)


def _column_names(compiled: CompiledQuery) -> dict[str, dict[str, str]]:
    """``{table: {stored column: returned column}}``, like the original's header."""
    names: dict[str, dict[str, str]] = {}
    for out in compiled.columns:
        base = out.column.name[:-2] if out.column.axis else out.column.name
        shown = out.name[:-2] if out.column.axis else out.name
        names.setdefault(out.relation, {})[base] = shown
    return names
