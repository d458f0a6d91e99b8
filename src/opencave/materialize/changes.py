"""What changed in a table between a snapshot and a later instant T — the one computation
behind both new versions (which persist it) and live queries (which use it in memory).

Starting from parts whose unmasked rows have root ids valid at a known time, the changes
at T are:

- rows whose root ids expired since then (the segmentation's ``delta_roots``): masked in
  their part, re-added with the expired root ids looked up at T (a row's other roots did
  not expire, so they are still valid);
- rows deleted (or superseded) through the API since then: masked;
- rows written through the API since then and still alive at T: added, roots at T.

Cost: proportional to those rows: each root column is searched in the part's serving copy
sorted by it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..annotation import AnnotationTable, AnnotationTables
from ..annotation.rows import LiveRows
from ..schemas import Role
from ..storage.files import DataDir
from ..storage.segments import arrow_schema
from ..timestamps import from_micros, to_micros
from .engine import QueryEngine
from .query import Sources, anti_join_masks
from .snapshots import Mask, SnapshotPart, TableSnapshot
from .view import SegmentationView, lookup_roots


@dataclass(frozen=True)
class Base:
    """Where a table starts: ``parts`` (each with the time its unmasked rows' roots are
    valid at, -1 when unknown) and the instant up to which API writes are reflected."""

    parts: tuple[SnapshotPart, ...]
    valid_at: tuple[int, ...]
    since: datetime | None
    loaded: tuple[str, ...] = ()  # the bulk-loaded segments the parts account for


@dataclass
class Changes:
    #: Per part index, the rows to mask out of it: ``id`` and the part's serving keys.
    masks: dict[int, pa.Table] = field(default_factory=dict)
    rows: pa.Table | None = None
    refreshed: int = 0

    @property
    def empty(self) -> bool:
        return not self.masks and (self.rows is None or self.rows.num_rows == 0)


class ChangeFinder:
    def __init__(self, data: DataDir, tables: AnnotationTables, rows: LiveRows,
                 engine: QueryEngine) -> None:
        self.data = data
        self.tables = tables
        self.rows = rows
        self.engine = engine

    def base(self, table: AnnotationTable, prior: TableSnapshot | None) -> Base:
        """A previous snapshot's parts (roots valid at its time) plus bulk segments it does
        not include yet (roots valid when loaded)."""
        parts = list(prior.parts) if prior else []
        valid_at = [prior.timestamp] * len(parts) if prior else []
        known = prior.loaded_segments() if prior else set()
        loaded = sorted(known)
        for segment in self.tables.segments(table):
            if segment.path not in known:
                parts.append(SnapshotPart(segment))
                valid_at.append(segment.roots_at if segment.roots_at is not None else -1)
                loaded.append(segment.path)
        since = from_micros(prior.timestamp) if prior else None
        return Base(tuple(parts), tuple(valid_at), since, tuple(loaded))

    def changes(self, table: AnnotationTable, base: Base, timestamp: datetime,
                seg: SegmentationView) -> Changes:
        deleted, _ = self.rows.deletions(table, after=base.since, until=timestamp)
        roots = [c.name for c in table.schema.columns() if c.role is Role.ROOT]
        expired = _ExpiredRoots(seg, timestamp)
        changes = Changes()
        added: list[pa.Table] = []
        for index, part in enumerate(base.parts):
            stale = expired.since(base.valid_at[index]) if roots else _NONE
            touched = self._touched_rows(table, part, stale, roots, deleted)
            if touched is None or touched.num_rows == 0:
                continue
            changes.masks[index] = touched.select(["id", *table.serving_keys])
            kept = touched.filter(pc.invert(pc.is_in(touched.column("id"),
                                                     pa.array(deleted, pa.int64()))))
            changes.refreshed += kept.num_rows
            added.append(refresh_roots(table, _typed(table, kept), timestamp, seg, stale))
        live = self.rows.rows(table, created_after=base.since, created_until=timestamp)
        if live.num_rows:
            alive = pc.or_kleene(pc.is_null(live.column("deleted")),
                                 pc.greater(live.column("deleted"), pa.scalar(timestamp)))
            added.append(refresh_roots(table, _typed(table, live.filter(alive)), timestamp,
                                       seg))
        if added:
            changes.rows = pa.concat_tables(added)
        return changes

    def _touched_rows(self, table: AnnotationTable, part: SnapshotPart,
                      stale: np.ndarray | None, roots: list[str],
                      deleted: np.ndarray) -> pa.Table | None:
        """Unmasked rows of ``part`` with a root among ``stale`` (``None``: roots of unknown
        time, every row) or deleted since the base. Each root column is searched in the
        serving copy sorted by it, so the cost follows the rows found, not the part's size."""
        tables: dict[str, pa.Table] = {}
        #: (sort key to read by, column, values) — rows whose column is in the values
        searches: list[tuple[str, str | None, str]] = []
        if stale is None:
            searches.append((table.cluster_key, None, ""))
        elif len(stale):
            tables["expired"] = pa.table({"v": stale})
            searches += [(r, r, "expired") for r in roots]
        if len(deleted):
            tables["gone"] = pa.table({"v": deleted})
            searches.append((table.cluster_key, "id", "gone"))
        if not searches:
            return None
        sources = Sources(self.data)
        params: list[object] = []
        columns = ", ".join(f's."{c.name}"' for c in table.schema.columns())
        branches = []
        for key, column, values in searches:
            source = sources.segment(part.segment, table.cluster_key, key, params,
                                     stale if column == key else None) + " AS s"
            source += anti_join_masks(part, key, sources, params,
                                      _mask_search(column, values))
            branches.append(f"SELECT {columns} FROM {source} WHERE "
                            f"{_among('s', column, values)}")
        # UNION: a row found through several keys comes back once
        return self.engine.run(" UNION ".join(branches), params,
                               tables={**tables, **sources.tables},
                               attachments=sources.attachments)


_NONE = np.empty(0, np.int64)


class _ExpiredRoots:
    """Root ids that expired between an instant and ``timestamp``, per instant asked."""

    def __init__(self, seg: SegmentationView, timestamp: datetime) -> None:
        self.seg = seg
        self.timestamp = timestamp
        self.target = to_micros(timestamp)
        self.known: dict[int, np.ndarray] = {}

    def since(self, valid_at: int) -> np.ndarray | None:
        """``None`` when roots were valid at an unknown (-1) or later time: any may differ."""
        if valid_at == self.target:
            return _NONE
        if not 0 <= valid_at < self.target:
            return None
        if valid_at not in self.known:
            old, _new = self.seg.delta_roots(from_micros(valid_at), self.timestamp)
            self.known[valid_at] = np.asarray(old, dtype=np.int64)
        return self.known[valid_at]


def _typed(table: AnnotationTable, rows: pa.Table) -> pa.Table:
    return rows.cast(arrow_schema(table.schema))


def _mask_search(column: str | None, values: str) -> Callable[[Mask], str]:
    """The same search in a mask (alias ``r``): masks hold the segment's ids and key values;
    without the column, every masked row."""
    def condition(mask: Mask) -> str:
        return _among("r", column if column in mask.columns else None, values)
    return condition


def _among(alias: str, column: str | None, values: str) -> str:
    """``alias.column`` is one of the values of the registered table ``values`` (no column:
    every row)."""
    return "TRUE" if column is None else f'{alias}."{column}" IN (SELECT v FROM {values})'


def refresh_roots(table: AnnotationTable, rows: pa.Table, timestamp: datetime,
                  seg: SegmentationView, stale: np.ndarray | None = None) -> pa.Table:
    """Look bound points' supervoxels up again at ``timestamp``: those whose root is among
    ``stale`` (the others are still valid), or every one when ``stale`` is ``None``."""
    for point in table.schema.bound_points:
        sv_name, root_name = f"{point}_supervoxel_id", f"{point}_root_id"
        roots = pc.fill_null(rows.column(root_name), 0).to_numpy().copy()
        svs = pc.fill_null(rows.column(sv_name), 0).to_numpy()
        redo = np.ones(len(roots), bool) if stale is None else np.isin(roots, stale)
        if redo.any():
            roots[redo] = lookup_roots(seg, svs[redo].astype(np.uint64), timestamp)
        index = rows.schema.get_field_index(root_name)
        rows = rows.set_column(index, root_name, pa.array(roots.astype(np.int64)))
    return rows
