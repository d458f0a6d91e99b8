"""What an edit is: the :class:`Operation` users see and the :class:`EditPlan` the planner
hands to the store (every row one edit writes, computed before anything is written)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from ..timestamps import from_micros
from .arrays import unique

MERGE, SPLIT, UNDO, REDO = "merge", "split", "undo", "redo"
KINDS = (MERGE, SPLIT, UNDO, REDO)
SUCCESS = "SUCCESS"


def _edges(values: object = None) -> np.ndarray:
    if values is None:
        return np.zeros((0, 2), dtype=np.uint64)
    return np.asarray(values, dtype=np.uint64).reshape(-1, 2)


def _no_ids() -> np.ndarray:
    return np.zeros(0, dtype=np.uint64)


@dataclass(frozen=True, eq=False)
class Operation:
    """One logged edit (merge, split, undo or redo), as PyChunkedGraph's operation log.
    Compare operations by ``id`` or ``to_json()`` (fields hold arrays)."""

    id: int
    timestamp: datetime
    user_id: str
    kind: str
    status: str = SUCCESS
    added_edges: np.ndarray = field(default_factory=_edges)
    added_affinities: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    removed_edges: np.ndarray = field(default_factory=_edges)
    removed_affinities: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    source_ids: np.ndarray = field(default_factory=_no_ids)
    sink_ids: np.ndarray = field(default_factory=_no_ids)
    source_coords: list[list[float]] | None = None
    sink_coords: list[list[float]] | None = None
    old_root_ids: np.ndarray = field(default_factory=_no_ids)
    new_root_ids: np.ndarray = field(default_factory=_no_ids)
    undo_of: int | None = None
    redo_of: int | None = None

    @property
    def is_merge(self) -> bool:
        """Whether the edit joined pieces (a merge, the undo of a split, the redo of a merge)."""
        return len(self.added_edges) > 0

    @property
    def target_operation_id(self) -> int | None:
        return self.undo_of if self.undo_of is not None else self.redo_of

    @property
    def edited_supervoxels(self) -> np.ndarray:
        """Sources and sinks if given, else the endpoints of the edited edges (PCG's
        ``edges_failsafe``)."""
        if len(self.source_ids) or len(self.sink_ids):
            return np.concatenate([self.sink_ids, self.source_ids]).astype(np.uint64)
        edges = self.added_edges if self.is_merge else self.removed_edges
        return edges.reshape(-1).astype(np.uint64)

    def to_json(self) -> dict:
        """A JSON-friendly dict (ids as ints, timestamp as POSIX seconds)."""
        return {
            "operation_id": self.id,
            "timestamp": self.timestamp.timestamp(),
            "user_id": self.user_id,
            "kind": self.kind,
            "status": self.status,
            "added_edges": self.added_edges.tolist(),
            "removed_edges": self.removed_edges.tolist(),
            "source_ids": self.source_ids.tolist(),
            "sink_ids": self.sink_ids.tolist(),
            "source_coords": self.source_coords,
            "sink_coords": self.sink_coords,
            "old_root_ids": self.old_root_ids.tolist(),
            "new_root_ids": self.new_root_ids.tolist(),
            "undo_of": self.undo_of,
            "redo_of": self.redo_of,
        }


@dataclass(eq=False)
class EditPlan:
    """Everything one edit writes. Built from the current state without side effects, then
    committed in one transaction and only afterwards applied to the in-memory index."""

    kind: str
    user_id: str
    timestamp: int  # microseconds
    operation_id: int = 0
    node_ids: np.ndarray = field(default_factory=_no_ids)
    node_layers: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    node_ptr: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    node_children: np.ndarray = field(default_factory=_no_ids)
    parent_child: np.ndarray = field(default_factory=_no_ids)
    parent_parent: np.ndarray = field(default_factory=_no_ids)
    edges: np.ndarray = field(default_factory=_edges)
    edge_affinities: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    edges_active: bool = True
    lineage_old: np.ndarray = field(default_factory=_no_ids)
    lineage_new: np.ndarray = field(default_factory=_no_ids)
    counters: dict[int, int] = field(default_factory=dict)
    source_ids: np.ndarray = field(default_factory=_no_ids)
    sink_ids: np.ndarray = field(default_factory=_no_ids)
    source_coords: list[list[float]] | None = None
    sink_coords: list[list[float]] | None = None
    undo_of: int | None = None
    redo_of: int | None = None

    @property
    def old_roots(self) -> np.ndarray:
        return unique(self.lineage_old)

    @property
    def new_roots(self) -> np.ndarray:
        return unique(self.lineage_new)

    def operation(self) -> Operation:
        added = self.edges if self.edges_active else _edges()
        removed = _edges() if self.edges_active else self.edges
        aff = self.edge_affinities.astype(np.float32)
        empty = np.zeros(0, np.float32)
        return Operation(
            id=self.operation_id,
            timestamp=from_micros(self.timestamp),
            user_id=self.user_id,
            kind=self.kind,
            added_edges=added,
            added_affinities=aff if self.edges_active else empty,
            removed_edges=removed,
            removed_affinities=empty if self.edges_active else aff,
            source_ids=self.source_ids,
            sink_ids=self.sink_ids,
            source_coords=self.source_coords,
            sink_coords=self.sink_coords,
            old_root_ids=self.old_roots,
            new_root_ids=self.new_roots,
            undo_of=self.undo_of,
            redo_of=self.redo_of,
        )
