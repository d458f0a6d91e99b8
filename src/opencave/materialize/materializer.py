"""Creating versions: every table of a datastack as of a timestamp, root ids looked up in the
segmentation at that timestamp — at a cost proportional to what changed.

Invariant that makes it incremental: in every version, each unmasked row of each segment has
root ids valid at the version's timestamp. A new version at T therefore starts from the
previous version's snapshot, asks the segmentation which roots expired since then
(``delta_roots``), rewrites only the rows pointing at them (new root ids, into one new delta
segment sorted like the others) and masks their old copies. Rows are never copied
otherwise, so every version can be kept.

Publication is atomic: files first (each renamed into place when complete), then one
transaction records the snapshots and flips the version to AVAILABLE. A killed run leaves an
invisible RUNNING row and unreferenced files; running again replaces both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..annotation import AnnotationTable, AnnotationTables
from ..info import InfoService
from ..schemas import Role
from ..storage.files import DataDir, unique_name
from ..storage.segments import Segment, arrow_schema, read_id_set, write_id_set, write_table_segment
from ..timestamps import as_utc, from_micros, to_micros
from .engine import QueryEngine
from .query import Query, compile_query
from .relations import Relation
from .snapshots import SnapshotPart, TableSnapshot
from .versions import Version, Versions

RootLookup = Callable[[np.ndarray, datetime], np.ndarray]


class SegmentationView:
    """What materialization needs from the segmentation graph."""

    def __init__(self, get_roots: RootLookup,
                 delta_roots: Callable[[datetime, datetime], tuple[np.ndarray, np.ndarray]]):
        self.get_roots = get_roots
        self.delta_roots = delta_roots

    @classmethod
    def of(cls, graph: object) -> SegmentationView:
        return cls(
            lambda ids, ts: graph.get_roots(ids, timestamp=ts),  # type: ignore[attr-defined]
            lambda t0, t1: graph.delta_roots(t0, t1),  # type: ignore[attr-defined]
        )


@dataclass
class MaterializationReport:
    version: Version
    rows_rewritten: dict[str, int] = field(default_factory=dict)
    bytes_written: int = 0


class Materializer:
    def __init__(self, data_dir: DataDir, info: InfoService, tables: AnnotationTables,
                 versions: Versions, segmentation: Callable[[str], SegmentationView],
                 engine: QueryEngine) -> None:
        self.data_dir = data_dir
        self.info = info
        self.tables = tables
        self.versions = versions
        self.segmentation = segmentation
        self.engine = engine

    def materialize(self, datastack: str, timestamp: datetime, *, version: int | None = None,
                    expires_on: datetime | None = None) -> MaterializationReport:
        timestamp = as_utc(timestamp)
        ds = self.info.datastack(datastack)
        number = version if version is not None else self.versions.next_number(datastack)
        previous = self.versions.at_or_before(datastack, timestamp)
        if previous is not None and previous.time_stamp == timestamp:
            previous = self._earlier(datastack, previous)
        running = self.versions.begin(
            datastack, number, timestamp,
            parent_version=previous.version if previous else None, expires_on=expires_on,
        )
        report = MaterializationReport(running)
        try:
            seg = self.segmentation(ds.segmentation_table)
            prior = self.versions.snapshots(previous) if previous else {}
            snapshots = []
            for table in self.tables.list(ds.aligned_volume.name):
                if table.created > timestamp:
                    continue
                snap, rewritten, written = self._snapshot(
                    table, timestamp, prior.get(table.table_name),
                    previous.time_stamp if previous else None, seg, running,
                )
                snapshots.append(snap)
                report.rows_rewritten[table.table_name] = rewritten
                report.bytes_written += written
            report.version = self.versions.publish(running, snapshots)
        except BaseException:
            self.versions.fail(running)
            raise
        return report

    def _earlier(self, datastack: str, version: Version) -> Version | None:
        earlier = [v for v in self.versions.available(datastack)
                   if v.time_stamp < version.time_stamp]
        return earlier[-1] if earlier else None

    def _snapshot(self, table: AnnotationTable, timestamp: datetime,
                  prior: TableSnapshot | None, prior_time: datetime | None,
                  seg: SegmentationView, version: Version) -> tuple[TableSnapshot, int, int]:
        parts, valid_at = self._starting_parts(table, prior, prior_time)
        changed_rows: list[pa.Table] = []
        masks: dict[int, np.ndarray] = {}
        roots = [c.name for c in table.schema.columns() if c.role is Role.ROOT]
        if roots:
            for index, part in enumerate(parts):
                stale = self._stale_rows(table, part, valid_at[index], timestamp, seg, roots)
                if stale is not None and stale.num_rows:
                    changed_rows.append(_refresh_roots(table, stale, timestamp, seg))
                    masks[index] = stale.column("id").to_numpy()
        written = 0
        new_parts = []
        for index, part in enumerate(parts):
            if index in masks:
                part, size = self._extend_mask(part, masks[index], table, version)
                written += size
            new_parts.append(part)
        rewritten = sum(t.num_rows for t in changed_rows)
        if changed_rows:
            segment, size = self._write_delta(table, pa.concat_tables(changed_rows), timestamp)
            new_parts.append(SnapshotPart(segment))
            written += size
        snapshot = TableSnapshot(table.table_name, to_micros(timestamp), tuple(new_parts), 0)
        count = self._count(table, snapshot)
        return TableSnapshot(snapshot.table, snapshot.timestamp, snapshot.parts, count), \
            rewritten, written

    def _starting_parts(self, table: AnnotationTable, prior: TableSnapshot | None,
                        prior_time: datetime | None) -> tuple[list[SnapshotPart], list[int]]:
        """The previous version's parts (roots valid at its timestamp) plus bulk segments it
        does not know yet (roots valid when they were loaded)."""
        parts = list(prior.parts) if prior else []
        valid_at = [to_micros(prior_time) for _ in parts] if prior_time else []
        known = {p.segment.path for p in parts}
        for segment in self.tables.segments(table):
            if segment.path not in known:
                parts.append(SnapshotPart(segment))
                valid_at.append(segment.roots_at if segment.roots_at is not None else -1)
        return parts, valid_at

    def _stale_rows(self, table: AnnotationTable, part: SnapshotPart, valid_at: int,
                    timestamp: datetime, seg: SegmentationView,
                    roots: list[str]) -> pa.Table | None:
        """Unmasked rows of ``part`` whose root ids expired between ``valid_at`` and now."""
        target = to_micros(timestamp)
        if valid_at == target:
            return None
        params: list[object] = [str(self.data_dir.absolute(part.segment.path))]
        source = "read_parquet(?) AS s"
        if part.masked:
            source += " ANTI JOIN read_parquet(?) AS m ON s.id = m.id"
            params.append(str(self.data_dir.absolute(part.masked)))
        columns = ", ".join(f's."{c.name}"' for c in table.schema.columns())
        tables: dict[str, pa.Table] = {}
        if 0 <= valid_at < target:
            old, _new = seg.delta_roots(from_micros(valid_at), timestamp)
            if len(old) == 0:
                return None
            tables["expired"] = pa.table({"r": np.asarray(old, dtype=np.int64)})
            condition = " OR ".join(f's."{r}" IN (SELECT r FROM expired)' for r in roots)
        else:  # roots from an unknown or later time: look every row up again
            condition = "TRUE"
        return self.engine.run(f"SELECT {columns} FROM {source} WHERE {condition}", params,
                               tables=tables)

    def _extend_mask(self, part: SnapshotPart, ids: np.ndarray, table: AnnotationTable,
                     version: Version) -> tuple[SnapshotPart, int]:
        previous = (read_id_set(self.data_dir.absolute(part.masked))
                    if part.masked else np.empty(0, dtype=np.int64))
        path = self.data_dir.version_dir(version.datastack, version.version) / unique_name(
            f"{table.table_name}-mask", ".parquet")
        count = write_id_set(path, np.concatenate([previous, ids]))
        return SnapshotPart(part.segment, self.data_dir.relative(path), count), path.stat().st_size

    def _write_delta(self, table: AnnotationTable, rows: pa.Table,
                     timestamp: datetime) -> tuple[Segment, int]:
        path = self.data_dir.table_dir(table.aligned_volume, table.table_name) / unique_name(
            "delta", ".parquet")
        rows = rows.cast(arrow_schema(table.schema))
        count = write_table_segment(path, rows, table.cluster_key)
        segment = Segment(self.data_dir.relative(path), count, table.cluster_key,
                          to_micros(timestamp))
        return segment, path.stat().st_size

    def _count(self, table: AnnotationTable, snapshot: TableSnapshot) -> int:
        relation = Relation(table.table_name, table.schema.columns(), table.voxel_resolution,
                            snapshot)
        return self.engine.count(compile_query(Query((relation,)), self.data_dir))


def _refresh_roots(table: AnnotationTable, rows: pa.Table, timestamp: datetime,
                   seg: SegmentationView) -> pa.Table:
    """Look every bound point's supervoxel up again at ``timestamp``."""
    for point in table.schema.bound_points:
        sv_name, root_name = f"{point}_supervoxel_id", f"{point}_root_id"
        svs = pc.fill_null(rows.column(sv_name), 0).to_numpy().astype(np.uint64)
        new_roots = lookup_roots(seg, svs, timestamp)
        index = rows.schema.get_field_index(root_name)
        rows = rows.set_column(index, root_name, pa.array(new_roots.astype(np.int64)))
    return rows


def lookup_roots(seg: SegmentationView, supervoxels: np.ndarray,
                 timestamp: datetime) -> np.ndarray:
    """Root ids at ``timestamp`` (supervoxel 0, a point outside the segmentation, has root
    0), each distinct supervoxel looked up once: many rows share one."""
    unique, inverse = np.unique(np.asarray(supervoxels, dtype=np.uint64), return_inverse=True)
    return np.asarray(seg.get_roots(unique, timestamp), dtype=np.uint64)[inverse]
