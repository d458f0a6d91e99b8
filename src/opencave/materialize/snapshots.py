"""Table snapshots: what one table looks like in one version, without copying it.

A snapshot lists the table's row segments (immutable Parquet files, shared between versions)
and, per segment, the set of row ids this version masks out of it — rows deleted or
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
class SnapshotPart:
    segment: Segment
    masked: str | None = None  # relative path of the rows masked out of this segment
    masked_count: int = 0
    #: Columns the mask holds beside ``id`` (the segment's values of its sort keys), so that
    #: a query's filters on them apply to the mask as well; empty for id-only masks.
    mask_keys: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"segment": self.segment.to_json(), "masked": self.masked,
                "masked_count": self.masked_count, "mask_keys": list(self.mask_keys)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SnapshotPart:
        return cls(Segment.from_json(data["segment"]), data.get("masked"),
                   int(data.get("masked_count", 0)), tuple(data.get("mask_keys", ())))


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
