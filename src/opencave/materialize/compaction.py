"""Compaction: fewer parts per table snapshot, the same visible rows.

Every version adds a delta segment and masks to the parts of the previous one, so a query
at a late version reads many parts (13 at v1718 of the synthetic datastack): DuckDB's
planning of the union of anti-joins and the per-part scans then dominate a one-neuron
lookup. Compaction merges the visible rows of several parts into one new segment (no mask),
the way an LSM tree merges runs, *size-tiered*: parts of similar size (the same power of
:data:`FANOUT` in visible rows) merge once :data:`FANOUT` of them accumulate. A row is thus
rewritten O(log(table / delta)) times over its life, each merge costs what it merges (never
the table: the largest part, the bulk load, is not merged), and a snapshot keeps at most
``FANOUT - 1`` parts per tier. Tables under :data:`SMALL_TABLE_ROWS` visible rows are merged
whole: that costs little (~0.1 s for the 10^8 datastack's 42,726 nuclei) and a query then
reads one file instead of a bulk segment with its masks and a few small deltas (the
cell-type ⋈ nuclei query: 15–20 ms instead of 55–70 ms at 10^8). A part's masks are kept
as a shorter chain (:func:`chain_merges`): a mask row is an id and the sort keys, so
rewriting masks a little more often costs little, and each mask is one more scan per query.

Versions compact as they are made (:meth:`Compactor.compact`), so a version shares merged
segments with the next. Versions made before compaction existed are compacted in order by
:meth:`Compactor.compact_history`, carrying each merged segment into the next version with a
mask of the rows that changed since the merge, so they share too. Merged segments are new
files; nothing is deleted (older snapshots and running servers may still read the parts
they replace), and a snapshot is swapped only after its row count is checked unchanged.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ..annotation import AnnotationTable
from ..storage.files import DataDir, unique_name
from ..storage.segments import (
    WRITE_MEMORY,
    Segment,
    copy_sorted_segment,
    file_bytes,
    limit_memory,
    serving_layout,
    write_mask,
)
from ..timestamps import from_micros, to_micros
from .engine import QueryEngine
from .query import Query, compile_query
from .relations import Relation
from .snapshots import Mask, SnapshotPart, TableSnapshot
from .versions import Version, Versions

T = TypeVar("T")
FANOUT = 4
#: A part's masks form a chain, oldest first, in which each mask holds at least this many
#: times the rows of all newer ones together; a new mask that breaks it merges with the
#: newer end of the chain, so a chain is at most 1 + log3(masked rows / newest mask) long.
#: Each mask is one more scan in every query of its part: at 10^7, v1718 read 15 masks
#: beside its 4 parts with size tiers of FANOUT and reads 7 this way (a one-neuron lookup,
#: service and engine: 21–22 → 16–18 ms), for 26 MiB more masks over the twelve versions.
MASK_RATIO = 2
SMALL_TABLE_ROWS = 200_000  # the default of Settings.compact_whole_rows


def visible_rows(part: SnapshotPart) -> int:
    return part.segment.num_rows - part.masked_count


def _tier(rows: int) -> int:
    return int(math.log(max(rows, 1), FANOUT))


def plan_merges(parts: Sequence[SnapshotPart],
                whole_below: int = SMALL_TABLE_ROWS) -> list[list[int]]:
    """Groups of part indexes to merge, each into one part (empty: nothing to do); a table
    with fewer than ``whole_below`` visible rows is merged whole."""
    if len(parts) < 2:
        return []
    sizes = [visible_rows(p) for p in parts]
    if sum(sizes) < whole_below:
        return [list(range(len(parts)))]
    largest = max(range(len(parts)), key=sizes.__getitem__)
    return tier_groups({i: rows for i, rows in enumerate(sizes) if i != largest})


def tier_groups(sizes: dict[int, int]) -> list[list[int]]:
    """Indexes whose sizes share a tier (a power of :data:`FANOUT`), for every tier with at
    least :data:`FANOUT` of them."""
    tiers: dict[int, list[int]] = {}
    for index, rows in sizes.items():
        tiers.setdefault(_tier(rows), []).append(index)
    return [group for _, group in sorted(tiers.items()) if len(group) >= FANOUT]


def chain_merges(sizes: Sequence[int], ratio: int = MASK_RATIO) -> list[list[int]]:
    """The newest items of a chain (``sizes`` oldest first) to merge into one so that each
    item holds at least ``ratio`` times the rows of all newer ones together (empty: the
    chain holds). One merge restores it: the items before the oldest one that breaks it
    already hold ``ratio`` times everything newer."""
    start, newer = None, 0
    for index in range(len(sizes) - 1, 0, -1):
        newer += sizes[index]
        if sizes[index - 1] < ratio * newer:
            start = index - 1
    return [] if start is None else [list(range(start, len(sizes)))]


def _merge_until_stable(items: list[T], plan: Callable[[list[T]], list[list[int]]],
                          merge: Callable[[list[T]], T]) -> list[T]:
    """Replace each group of items ``plan`` names by ``merge`` of it, until it names none
    (a merge can complete a group of the next tier)."""
    while groups := plan(items):
        merged = {i for group in groups for i in group}
        kept = [item for i, item in enumerate(items) if i not in merged]
        items = kept + [merge([items[i] for i in group]) for group in groups]
    return items


@dataclass
class Compaction:
    parts: list[SnapshotPart]
    #: Each merged part (by segment path) and the parts it replaced.
    merged: dict[str, list[SnapshotPart]] = field(default_factory=dict)
    bytes_written: int = 0


def mask_rows(engine: QueryEngine, data: DataDir, segment: Segment, mask: Mask,
              keys: Sequence[str]) -> pa.Table:
    """The rows a mask holds (``id`` and ``keys``; the keys are looked up in the segment for
    masks written with ids only)."""
    path = str(data.absolute(mask.path))
    columns = ", ".join(["id", *(f'"{k}"' for k in keys)])
    if tuple(mask.keys) == tuple(keys):
        return engine.run(f"SELECT {columns} FROM read_parquet(?)", [path])
    return engine.run(
        f"SELECT {columns} FROM read_parquet(?) WHERE id IN (SELECT id FROM read_parquet(?))",
        [str(data.absolute(segment.path)), path])


#: The ids of several masks (parameter: the list of their paths).
_MASK_IDS = "SELECT id FROM read_parquet(?, union_by_name = true)"


class Compactor:
    def __init__(self, data: DataDir, engine: QueryEngine, *,
                 whole_below: int = SMALL_TABLE_ROWS,
                 memory_limit: str | None = WRITE_MEMORY) -> None:
        """``memory_limit``: DuckDB's while a merge sorts and writes (it spills beyond)."""
        self.data = data
        self.engine = engine
        self.whole_below = whole_below
        self.memory_limit = memory_limit

    def compact(self, table: AnnotationTable, parts: Sequence[SnapshotPart],
                timestamp: datetime) -> Compaction:
        """Merge parts per :func:`plan_merges` until it has nothing left to merge."""
        result = Compaction(list(parts))

        def merge(members: list[SnapshotPart]) -> SnapshotPart:
            part, size = self._merge(table, members, timestamp)
            result.merged[part.segment.path] = members
            result.bytes_written += size
            return part

        result.parts = _merge_until_stable(
            result.parts, lambda parts: plan_merges(parts, self.whole_below), merge)
        return result

    def _merge(self, table: AnnotationTable, members: list[SnapshotPart],
               timestamp: datetime) -> tuple[SnapshotPart, int]:
        columns = ", ".join(f's."{c.name}"' for c in table.schema.columns())
        selects, params = [], []
        for part in members:
            params.append(str(self.data.absolute(part.segment.path)))
            source = "read_parquet(?) AS s"
            if part.masks:
                source += f" ANTI JOIN ({_MASK_IDS}) AS m ON s.id = m.id"
                params.append([str(self.data.absolute(m.path)) for m in part.masks])
            selects.append(f"SELECT {columns} FROM {source}")
        path = self.data.table_dir(table.aligned_volume, table.table_name) / unique_name(
            "merged", ".parquet")
        # Its own spill directory under the data directory (an in-memory DuckDB would spill
        # into the working directory), removed with the connection.
        self.data.spill.mkdir(exist_ok=True)
        spill = Path(tempfile.mkdtemp(prefix="merge-", dir=self.data.spill))
        con = duckdb.connect(":memory:")
        try:
            limit_memory(con, self.memory_limit)
            con.execute("SET temp_directory = ?", [str(spill)])
            bound = sum(part.segment.num_rows for part in members)
            order, keys = serving_layout(table.serving_keys, bound)
            rows = copy_sorted_segment(
                con, path, "SELECT * FROM (" + " UNION ALL ".join(selects) + ")", params,
                order, keys, rows=bound)
        finally:
            con.close()
            shutil.rmtree(spill, ignore_errors=True)
        segment = Segment(self.data.relative(path), rows, order, to_micros(timestamp))
        return SnapshotPart(segment), file_bytes(path)

    def compact_masks(self, table: AnnotationTable, part: SnapshotPart,
                      directory: Path) -> tuple[SnapshotPart, int]:
        """Merge the newest masks of a part's chain per :func:`chain_merges` (so a part
        keeps a short chain, one to three masks at 10^7 and 10^8, and a mask row is
        rewritten a few times as the chain grows); new masks go to ``directory``. Returns
        the part and the bytes written."""
        written = 0

        def merge(members: list[Mask]) -> Mask:
            nonlocal written
            rows = pa.concat_tables([mask_rows(self.engine, self.data, part.segment, m,
                                               table.serving_keys) for m in members])
            mask, size = write_mask_file(self.data, directory, table, rows)
            written += size
            return mask

        masks = _merge_until_stable(
            list(part.masks), lambda ms: chain_merges([m.count for m in ms]), merge)
        return SnapshotPart(part.segment, tuple(masks)), written

    # -- versions made before compaction ---------------------------------------------------

    def compact_history(self, versions: Versions, tables: dict[str, AnnotationTable],
                        datastack: str, *,
                        on_version: Callable[[Version, int, int], None] | None = None) -> int:
        """Compact every version of ``datastack`` (``tables``: its annotation tables by
        name), oldest first, so that merged segments are shared between consecutive
        versions. Returns the bytes written; ``on_version(version, parts before, parts
        after)`` reports progress."""
        history: dict[str, _TableHistory] = {}
        written = 0
        for version in versions.available(datastack, include_expired=True):
            replaced: list[TableSnapshot] = []
            before = after = 0
            for name, snapshot in versions.snapshots(version).items():
                table = tables[name]
                state = history.setdefault(name, _TableHistory())
                parts, remasked = state.carry(self, table, snapshot, version)
                compaction = self.compact(table, parts, from_micros(snapshot.timestamp))
                state.record(compaction, snapshot)
                written += remasked + compaction.bytes_written
                before += len(snapshot.parts)
                after += len(compaction.parts)
                if compaction.parts != list(snapshot.parts):
                    replaced.append(self._checked(table, snapshot, compaction.parts))
            if replaced:
                versions.replace_snapshots(version, replaced)
            if on_version:
                on_version(version, before, after)
        return written

    def _checked(self, table: AnnotationTable, snapshot: TableSnapshot,
                 parts: list[SnapshotPart]) -> TableSnapshot:
        compacted = replace(snapshot, parts=tuple(parts),
                            loaded=tuple(sorted(snapshot.loaded_segments())))
        query = compile_query(Query((Relation.of_table(table, compacted),)), self.data)
        count = self.engine.count(query)
        if count != snapshot.row_count:
            raise RuntimeError(f"compacting {snapshot.table!r} changed its row count "
                               f"({snapshot.row_count} → {count}); the version was left as "
                               "it was")
        return compacted


@dataclass
class _TableHistory:
    """One table through the versions being compacted: the previous version's compacted
    parts, and for each merged segment the original parts it holds with their masks at
    the time of the merge."""

    parts: list[SnapshotPart] | None = None
    sources: dict[str, dict[str, tuple[Mask, ...]]] = field(default_factory=dict)

    def carry(self, compactor: Compactor, table: AnnotationTable, snapshot: TableSnapshot,
              version: Version) -> tuple[list[SnapshotPart], int]:
        """The snapshot's parts expressed with the merged segments of the previous version
        (a merged segment's mask: what its original parts masked since the merge), and the
        bytes of the masks written. Falls back to the snapshot's own parts when it does not
        extend the previous version."""
        originals = {p.segment.path: p for p in snapshot.parts}
        own = list(snapshot.parts), 0
        if self.parts is None:
            return own
        carried: list[SnapshotPart] = []
        written = 0
        covered: set[str] = set()
        for part in self.parts:
            path = part.segment.path
            sources = self.sources.get(path)
            if sources is None:
                if path not in originals:
                    return own
                carried.append(originals[path])
                covered.add(path)
                continue
            if not sources.keys() <= originals.keys():
                return own
            remasked, size = _remask(compactor, table, part, sources, originals, version)
            carried.append(remasked)
            written += size
            covered |= sources.keys()
        carried += [p for path, p in originals.items() if path not in covered]
        return carried, written

    def record(self, compaction: Compaction, snapshot: TableSnapshot) -> None:
        """Remember the compacted parts, and the originals (with their masks in this
        snapshot) behind each new merged segment."""
        masks = {p.segment.path: p.masks for p in snapshot.parts}
        for path, members in compaction.merged.items():
            sources: dict[str, tuple[Mask, ...]] = {}
            for member in members:
                inner = self.sources.get(member.segment.path)
                for original in inner if inner is not None else [member.segment.path]:
                    sources[original] = masks.get(original, ())
            self.sources[path] = sources
        self.parts = compaction.parts


def _remask(compactor: Compactor, table: AnnotationTable, merged: SnapshotPart,
            sources: dict[str, tuple[Mask, ...]], originals: dict[str, SnapshotPart],
            version: Version) -> tuple[SnapshotPart, int]:
    """A merged segment carried into ``version``: masked where its sources' masks grew."""
    keys = table.serving_keys
    new_rows = []
    for path, masks_then in sources.items():
        now = originals[path]
        if now.masks == masks_then:
            continue
        then = {m.path for m in masks_then}
        fresh = [m for m in now.masks if m.path not in then]
        if not fresh:
            continue
        rows = pa.concat_tables([mask_rows(compactor.engine, compactor.data, now.segment, m, keys)
                                 for m in fresh])
        if not then <= {m.path for m in now.masks}:  # masks rewritten: drop the earlier rows
            earlier = compactor.engine.run(_MASK_IDS, [[str(compactor.data.absolute(p))
                                                        for p in then]])
            rows = rows.filter(pc.invert(pc.is_in(rows.column("id"), earlier.column("id"))))
        new_rows.append(rows)
    if not sum(t.num_rows for t in new_rows):
        return SnapshotPart(merged.segment), 0
    directory = compactor.data.version_dir(version.datastack, version.version)
    mask, size = write_mask_file(compactor.data, directory, table, pa.concat_tables(new_rows))
    return SnapshotPart(merged.segment, (mask,)), size


def write_mask_file(data: DataDir, directory: Path, table: AnnotationTable,
                    rows: pa.Table) -> tuple[Mask, int]:
    """A new mask of ``table`` in ``directory`` (a version's) holding ``rows`` (``id`` and
    the table's serving keys); returns it and its bytes on disk."""
    path = directory / unique_name(f"{table.table_name}-mask", ".parquet")
    count = write_mask(path, rows, table.serving_keys)
    return Mask(data.relative(path), count, table.serving_keys), file_bytes(path)
