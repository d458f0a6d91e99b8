"""Creating versions: every table of a datastack as of a timestamp, root ids looked up in the
segmentation at that timestamp — at a cost proportional to what changed.

Invariant that makes it incremental: in every version, each unmasked row of each segment has
root ids valid at the version's timestamp. A new version at T therefore starts from the
previous version's snapshot and applies the changes since then (:mod:`.changes`): rows whose
roots expired, rows deleted or written through the API. Changed rows go into one new delta
segment (sorted like the others); their old copies are masked. Rows are never copied
otherwise — but for compaction (:mod:`.compaction`), which merges small parts at a cost of
what it merges — so every version can be kept.

Publication is atomic: files first (each renamed into place when complete), then one
transaction records the snapshots and flips the version to AVAILABLE. A killed run leaves an
invisible RUNNING row and unreferenced files; running again replaces both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

import pyarrow as pa

from ..annotation import AnnotationTable, AnnotationTables
from ..errors import Conflict
from ..info import InfoService
from ..storage.files import DataDir, unique_name
from ..storage.segments import (
    WRITE_MEMORY,
    Segment,
    file_bytes,
    serving_layout,
    serving_path,
    write_table_segment,
)
from ..timestamps import as_utc, from_micros, to_micros
from .changes import Base, ChangeFinder, Changes
from .compaction import Compactor, visible_rows, write_mask_file
from .engine import QueryEngine
from .query import Sources, anti_join_masks
from .snapshots import Mask, SnapshotPart, TableSnapshot
from .versions import Version, Versions
from .view import SegmentationView

_RUNS: dict[str, threading.Lock] = {}
_RUNS_LOCK = threading.Lock()


def _every_row(mask: Mask) -> str:
    return "TRUE"  # every row of a mask


@dataclass
class MaterializationReport:
    version: Version
    rows_rewritten: dict[str, int] = field(default_factory=dict)
    bytes_written: int = 0


class Materializer:
    def __init__(self, data_dir: DataDir, info: InfoService, tables: AnnotationTables,
                 versions: Versions, segmentation: Callable[[str], SegmentationView],
                 engine: QueryEngine, changes: ChangeFinder, compactor: Compactor, *,
                 memory_limit: str | None = WRITE_MEMORY) -> None:
        """``memory_limit``: DuckDB's while a delta is sorted and written."""
        self.data_dir = data_dir
        self.info = info
        self.tables = tables
        self.versions = versions
        self.segmentation = segmentation
        self.engine = engine
        self.finder = changes
        self.compactor = compactor
        self.memory_limit = memory_limit

    def materialize(self, datastack: str, timestamp: datetime, *, version: int | None = None,
                    expires_on: datetime | None = None) -> MaterializationReport:
        """Create and publish a version of ``datastack`` at ``timestamp``; one at a time per
        datastack in this process (the version row guards across processes)."""
        with _RUNS_LOCK:
            run = _RUNS.setdefault(datastack, threading.Lock())
        if not run.acquire(blocking=False):
            raise Conflict(f"a version of {datastack!r} is being created; try again later")
        try:
            return self._materialize(datastack, timestamp, version, expires_on)
        finally:
            run.release()

    def _materialize(self, datastack: str, timestamp: datetime, version: int | None,
                     expires_on: datetime | None) -> MaterializationReport:
        timestamp = as_utc(timestamp)
        ds = self.info.datastack(datastack)
        number = version if version is not None else self.versions.next_number(datastack)
        previous = self._previous(datastack, timestamp)
        running = self.versions.begin(
            datastack, number, timestamp,
            parent_version=previous.version if previous else None, expires_on=expires_on,
        )
        report = MaterializationReport(running)
        try:
            seg = self.segmentation(ds.segmentation_table)
            prior = self.versions.snapshots(previous) if previous else {}
            snapshots = []
            segments: set[str] = set()  # the segments this run writes
            for table in self.tables.list(ds.aligned_volume.name):
                if table.created > timestamp:
                    continue
                snap, rewritten, written = self._snapshot(
                    table, timestamp, self.finder.base(table, prior.get(table.table_name)),
                    seg, running, segments)
                snapshots.append(snap)
                report.rows_rewritten[table.table_name] = rewritten
                report.bytes_written += written
            self._remove_replaced(running, segments, snapshots)
            report.version = self.versions.publish(running, snapshots)
        except BaseException:
            self.versions.fail(running)
            raise
        return report

    def _previous(self, datastack: str, timestamp: datetime) -> Version | None:
        """The newest available version strictly before ``timestamp``."""
        earlier = [v for v in self.versions.available(datastack) if v.time_stamp < timestamp]
        return earlier[-1] if earlier else None

    def _remove_replaced(self, version: Version, segments: set[str],
                         snapshots: list[TableSnapshot]) -> None:
        """Remove what this run wrote and replaced before publishing — a delta merged at
        once, masks merged into their chain: no snapshot names them, so no
        reader can know them (left alone, every version would leave some behind)."""
        used = set().union(*(s.files() for s in snapshots))
        directory = self.data_dir.version_dir(version.datastack, version.version)
        masks = {self.data_dir.relative(p) for p in directory.glob("*.parquet")}
        paths = [self.data_dir.absolute(p) for p in (segments | masks) - used]
        DataDir.remove(paths + [serving_path(p) for p in paths])

    def _snapshot(self, table: AnnotationTable, timestamp: datetime, base: Base,
                  seg: SegmentationView, version: Version, segments: set[str]
                  ) -> tuple[TableSnapshot, int, int]:
        changes = self.finder.changes(table, base, timestamp, seg)
        parts, written = self._persist(table, base, changes, timestamp, version, segments)
        snapshot = TableSnapshot(table.table_name, to_micros(timestamp), tuple(parts), 0,
                                 base.loaded)
        rewritten = 0 if changes.rows is None else changes.rows.num_rows
        return (replace(snapshot, row_count=self._count(table, snapshot)), rewritten, written)

    def _persist(self, table: AnnotationTable, base: Base, changes: Changes,
                 timestamp: datetime, version: Version, segments: set[str]
                 ) -> tuple[list[SnapshotPart], int]:
        """The table's parts at ``timestamp`` and the bytes written; adds the segments it
        writes to ``segments``."""
        written = 0
        parts = []
        for index, part in enumerate(base.parts):
            if index in changes.masks:
                part, size = self._extend_mask(part, changes.masks[index], table, version)
                written += size
            parts.append(part)
        if changes.rows is not None and changes.rows.num_rows:
            segment, size = self._write_delta(table, changes.rows, timestamp)
            parts.append(SnapshotPart(segment))
            segments.add(segment.path)
            written += size
        compaction = self.compactor.compact(table, parts, timestamp)
        segments.update(compaction.merged)
        return compaction.parts, written + compaction.bytes_written

    def _extend_mask(self, part: SnapshotPart, rows: pa.Table, table: AnnotationTable,
                     version: Version) -> tuple[SnapshotPart, int]:
        """Append a mask of the newly hidden ``rows`` to the part's chain (its newer end
        then merges if it outgrew an older mask), so the cost follows what changed since
        the previous version."""
        directory = self.data_dir.version_dir(version.datastack, version.version)
        mask, size = write_mask_file(self.data_dir, directory, table, rows)
        part, merged = self.compactor.compact_masks(
            table, SnapshotPart(part.segment, (*part.masks, mask)), directory)
        return part, size + merged

    def _write_delta(self, table: AnnotationTable, rows: pa.Table,
                     timestamp: datetime) -> tuple[Segment, int]:
        path = self.data_dir.table_dir(table.aligned_volume, table.table_name) / unique_name(
            "delta", ".parquet")
        order, keys = serving_layout(table.serving_keys, rows.num_rows)
        count = write_table_segment(path, rows, order, keys, memory_limit=self.memory_limit)
        segment = Segment(self.data_dir.relative(path), count, order, to_micros(timestamp))
        return segment, file_bytes(path)

    def _count(self, table: AnnotationTable, snapshot: TableSnapshot) -> int:
        """Visible rows, from the parts' counts: masks are disjoint sets of each segment's
        rows, so a part shows its rows minus its masks' — less any unmasked row not alive
        at the snapshot's time (found with the zone maps of ``created`` and ``deleted``;
        nearly always none, and then the masks are not even read). Never a table scan."""
        stored = sum(visible_rows(p) for p in snapshot.parts)
        if not snapshot.parts or not self._dead_rows(table, snapshot, masked=False):
            return stored
        return stored - self._dead_rows(table, snapshot, masked=True)

    def _dead_rows(self, table: AnnotationTable, snapshot: TableSnapshot, *,
                   masked: bool) -> int:
        """Rows of the snapshot's parts not alive at its time (unmasked ones if ``masked``)."""
        sources = Sources(self.data_dir)
        params: list[object] = []
        at = from_micros(snapshot.timestamp)
        branches = []
        for part in snapshot.parts:
            source = sources.stored(part.segment.path, table.cluster_key, params) + " AS s"
            if masked:
                source += anti_join_masks(part, table.cluster_key, sources, params, _every_row)
            branches.append(f"SELECT s.id FROM {source} WHERE s.created > ? OR s.deleted <= ?")
            params += [at, at]
        dead = self.engine.run(f"SELECT count(*) AS n FROM ({' UNION ALL '.join(branches)})",
                               params, attachments=sources.attachments)
        return int(dead.column("n")[0].as_py())
