"""Table snapshots: what one table looks like in one version, without copying it.

A snapshot lists the table's row segments (immutable Parquet files, shared between versions)
and, per segment, the masks of the row ids this version hides in it — rows deleted or
superseded, or rows whose root ids changed and were rewritten into a newer segment. A row is
visible in the snapshot when it is in a listed segment, not masked, and alive at the
snapshot's timestamp (``created <= T`` and not ``deleted <= T``). So a new version costs the
rows that changed, not a copy of the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..storage.segments import Segment


@dataclass(frozen=True)
class Mask:
    """A file of rows a version hides in a segment: their ids, and the segment's values of
    ``keys`` (its sort keys) so that a query's filters on them apply to the mask as well
    (empty for id-only masks)."""

    path: str  # relative to the data directory
    count: int
    keys: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the mask holds: what a query's filters may narrow it by."""
        return ("id", *self.keys)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "count": self.count, "keys": list(self.keys)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Mask:
        return cls(data["path"], int(data["count"]), tuple(data.get("keys", ())))


@dataclass(frozen=True)
class SnapshotPart:
    """A segment and the masks of the rows a version hides in it. Masks form a chain: a new
    version appends one with what it newly hides (so its cost follows what changed), and
    compaction merges its newer end (:func:`~opencave.materialize.compaction.chain_merges`)."""

    segment: Segment
    masks: tuple[Mask, ...] = ()

    @property
    def masked_count(self) -> int:
        return sum(m.count for m in self.masks)

    def to_json(self) -> dict[str, Any]:
        return {"segment": self.segment.to_json(), "masks": [m.to_json() for m in self.masks]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SnapshotPart:
        segment = Segment.from_json(data["segment"])
        if "masks" in data:
            return cls(segment, tuple(Mask.from_json(m) for m in data["masks"]))
        if data.get("masked"):  # written before mask chains: one mask per part
            return cls(segment, (Mask(data["masked"], int(data.get("masked_count", 0)),
                                      tuple(data.get("mask_keys", ()))),))
        return cls(segment)


@dataclass(frozen=True)
class TableSnapshot:
    table: str
    timestamp: int  # microseconds since the epoch: rows alive at this instant are visible
    parts: tuple[SnapshotPart, ...]
    row_count: int
    #: The table's bulk-loaded segments whose rows this snapshot accounts for (compaction
    #: may have merged them into other parts); ``None`` in snapshots written before
    #: compaction, whose parts list them.
    loaded: tuple[str, ...] | None = None

    def loaded_segments(self) -> set[str]:
        if self.loaded is not None:
            return set(self.loaded)
        return {p.segment.path for p in self.parts}

    def files(self) -> set[str]:
        """Every file the snapshot uses: its segments and their masks."""
        return {p.segment.path for p in self.parts} | {
            m.path for p in self.parts for m in p.masks}

    def sort_keys(self) -> dict[str, str]:
        """The key each keyed file of the snapshot is sorted by: its segments', and its masks'
        first key (id-only masks have no serving copy)."""
        keys = {p.segment.path: p.segment.sort_key for p in self.parts}
        keys.update({m.path: m.keys[0] for p in self.parts for m in p.masks if m.keys})
        return keys

    def to_json(self) -> dict[str, Any]:
        data = {"table": self.table, "timestamp": self.timestamp, "row_count": self.row_count,
                "parts": [p.to_json() for p in self.parts]}
        if self.loaded is not None:
            data["loaded"] = list(self.loaded)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TableSnapshot:
        loaded = data.get("loaded")
        return cls(data["table"], int(data["timestamp"]),
                   tuple(SnapshotPart.from_json(p) for p in data["parts"]),
                   int(data["row_count"]), None if loaded is None else tuple(loaded))
