"""The edit overlay: SQL tables in the live store and their in-memory index.

Every edit is one transaction that appends rows keyed by ``(table_id, operation_id)``.
Per-edit arrays (parent changes, edited edges, children) are stored as little-endian
blobs, one row per edit: loading 10^5 edits is then 10^5 rows, not 10^7, and an edit is a
handful of inserts. Nothing is ever updated except the per-chunk id counters.

The in-memory :class:`OverlayState` is an immutable snapshot of sorted levels
(:mod:`.levels`); applying an edit returns the next snapshot, so readers never lock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np
import sqlalchemy as sa
from sqlalchemy import Connection

from ..storage.live import LIVE_METADATA
from ..timestamps import from_micros, to_micros
from .arrays import EMPTY_IDS, decode_array, encode_array, ptr_from_counts
from .levels import KeyedLog, NodeLog
from .operation import EditPlan, Operation

_TABLE_ID = 200


def _pk(name: str, type_: sa.types.TypeEngine) -> sa.Column:
    return sa.Column(name, type_, primary_key=True, autoincrement=False)


operations_table = sa.Table(
    "seg_operations",
    LIVE_METADATA,
    _pk("table_id", sa.String(_TABLE_ID)),
    _pk("operation_id", sa.BigInteger()),
    sa.Column("timestamp", sa.BigInteger(), nullable=False),
    sa.Column("user_id", sa.String(), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("undo_of", sa.BigInteger()),
    sa.Column("redo_of", sa.BigInteger()),
    sa.Column("added_edges", sa.LargeBinary()),
    sa.Column("added_affinities", sa.LargeBinary()),
    sa.Column("removed_edges", sa.LargeBinary()),
    sa.Column("removed_affinities", sa.LargeBinary()),
    sa.Column("source_ids", sa.LargeBinary()),
    sa.Column("sink_ids", sa.LargeBinary()),
    sa.Column("source_coords", sa.Text()),
    sa.Column("sink_coords", sa.Text()),
    sa.Column("old_root_ids", sa.LargeBinary()),
    sa.Column("new_root_ids", sa.LargeBinary()),
)

nodes_table = sa.Table(
    "seg_nodes",
    LIVE_METADATA,
    _pk("table_id", sa.String(_TABLE_ID)),
    _pk("node_id", sa.BigInteger()),
    sa.Column("layer", sa.SmallInteger(), nullable=False),
    sa.Column("created", sa.BigInteger(), nullable=False),
    sa.Column("operation_id", sa.BigInteger(), nullable=False),
    sa.Column("children", sa.LargeBinary(), nullable=False),
    sa.Index("ix_seg_nodes_operation", "table_id", "operation_id"),
)

parent_changes_table = sa.Table(
    "seg_parent_changes",
    LIVE_METADATA,
    _pk("table_id", sa.String(_TABLE_ID)),
    _pk("operation_id", sa.BigInteger()),
    sa.Column("timestamp", sa.BigInteger(), nullable=False),
    sa.Column("child_ids", sa.LargeBinary(), nullable=False),
    sa.Column("parent_ids", sa.LargeBinary(), nullable=False),
)

edge_changes_table = sa.Table(
    "seg_edge_changes",
    LIVE_METADATA,
    _pk("table_id", sa.String(_TABLE_ID)),
    _pk("operation_id", sa.BigInteger()),
    sa.Column("timestamp", sa.BigInteger(), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("edges", sa.LargeBinary(), nullable=False),
    sa.Column("affinities", sa.LargeBinary(), nullable=False),
)

lineage_table = sa.Table(
    "seg_lineage",
    LIVE_METADATA,
    _pk("table_id", sa.String(_TABLE_ID)),
    _pk("old_root", sa.BigInteger()),
    _pk("new_root", sa.BigInteger()),
    sa.Column("operation_id", sa.BigInteger(), nullable=False),
    sa.Column("timestamp", sa.BigInteger(), nullable=False),
    sa.Index("ix_seg_lineage_operation", "table_id", "operation_id"),
)

counters_table = sa.Table(
    "seg_counters",
    LIVE_METADATA,
    _pk("table_id", sa.String(_TABLE_ID)),
    _pk("chunk_id", sa.BigInteger()),
    sa.Column("value", sa.BigInteger(), nullable=False),
    sa.Column("operation_id", sa.BigInteger(), nullable=False),
    sa.Index("ix_seg_counters_operation", "table_id", "operation_id"),
)


class ConcurrentEdit(Exception):
    """Another writer committed first; the edit is recomputed on fresh state."""


# -- the in-memory snapshot -------------------------------------------------------------------
_PARENTS = {"child": "u8", "ts": "i8", "parent": "u8"}
_EDGES = {"a": "u8", "b": "u8", "ts": "i8", "active": "?", "aff": "f4", "op": "i8"}
_LINEAGE = {"old": "u8", "new": "u8", "ts": "i8", "op": "i8"}


def _no_ids() -> np.ndarray:
    return np.zeros(0, dtype=np.uint64)


@dataclass(frozen=True)
class OverlayState:
    """Everything edits added on top of the base graph, as of operation ``last_op``."""

    last_op: int = 0
    last_ts: int = 0
    parents: KeyedLog = field(default_factory=lambda: KeyedLog.empty("child", _PARENTS))
    nodes: NodeLog = field(default_factory=NodeLog)
    edges_a: KeyedLog = field(default_factory=lambda: KeyedLog.empty("a", _EDGES))
    edges_b: KeyedLog = field(default_factory=lambda: KeyedLog.empty("b", _EDGES))
    lineage_old: KeyedLog = field(default_factory=lambda: KeyedLog.empty("old", _LINEAGE))
    lineage_new: KeyedLog = field(default_factory=lambda: KeyedLog.empty("new", _LINEAGE))
    lineage_ts: KeyedLog = field(default_factory=lambda: KeyedLog.empty("ts", _LINEAGE))

    def applied(self, batch: OverlayBatch) -> OverlayState:
        edges = {
            "a": batch.edges[:, 0],
            "b": batch.edges[:, 1],
            "ts": batch.edge_ts,
            "active": batch.edge_active,
            "aff": batch.edge_aff,
            "op": batch.edge_op,
        }
        lineage = {
            "old": batch.lineage_old,
            "new": batch.lineage_new,
            "ts": batch.lineage_ts,
            "op": batch.lineage_op,
        }
        parents = {
            "child": batch.parent_child,
            "ts": batch.parent_ts,
            "parent": batch.parent_parent,
        }
        return replace(
            self,
            last_op=max(self.last_op, batch.last_op),
            last_ts=max(self.last_ts, batch.last_ts),
            parents=self.parents.appended(parents),
            nodes=self.nodes.appended(
                batch.node_ids,
                batch.node_created,
                batch.node_op,
                batch.node_ptr,
                batch.node_children,
            ),
            edges_a=self.edges_a.appended(edges),
            edges_b=self.edges_b.appended(edges),
            lineage_old=self.lineage_old.appended(lineage),
            lineage_new=self.lineage_new.appended(lineage),
            lineage_ts=self.lineage_ts.appended(lineage),
        )


@dataclass
class OverlayBatch:
    """The records of one or more consecutive operations, ready to apply."""

    last_op: int = 0
    last_ts: int = 0
    node_ids: np.ndarray = field(default_factory=_no_ids)
    node_created: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    node_op: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    node_ptr: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    node_children: np.ndarray = field(default_factory=_no_ids)
    parent_child: np.ndarray = field(default_factory=_no_ids)
    parent_parent: np.ndarray = field(default_factory=_no_ids)
    parent_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    edges: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.uint64))
    edge_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    edge_active: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    edge_aff: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    edge_op: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lineage_old: np.ndarray = field(default_factory=_no_ids)
    lineage_new: np.ndarray = field(default_factory=_no_ids)
    lineage_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lineage_op: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    counters: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_plan(cls, plan: EditPlan) -> OverlayBatch:
        op, ts = plan.operation_id, plan.timestamp
        n_nodes, n_par, n_edges, n_lin = (
            len(plan.node_ids),
            len(plan.parent_child),
            len(plan.edges),
            len(plan.lineage_old),
        )
        return cls(
            last_op=op,
            last_ts=ts,
            node_ids=plan.node_ids,
            node_created=np.full(n_nodes, ts, np.int64),
            node_op=np.full(n_nodes, op, np.int64),
            node_ptr=plan.node_ptr,
            node_children=plan.node_children,
            parent_child=plan.parent_child,
            parent_parent=plan.parent_parent,
            parent_ts=np.full(n_par, ts, np.int64),
            edges=plan.edges,
            edge_ts=np.full(n_edges, ts, np.int64),
            edge_active=np.full(n_edges, plan.edges_active),
            edge_aff=plan.edge_affinities.astype(np.float32),
            edge_op=np.full(n_edges, op, np.int64),
            lineage_old=plan.lineage_old,
            lineage_new=plan.lineage_new,
            lineage_ts=np.full(n_lin, ts, np.int64),
            lineage_op=np.full(n_lin, op, np.int64),
            counters=dict(plan.counters),
        )


# -- reading ------------------------------------------------------------------------------------
def latest_operation(conn: Connection, table_id: str) -> int:
    """The generation marker: the newest committed operation id (0 if none)."""
    query = sa.select(sa.func.max(operations_table.c.operation_id)).where(
        operations_table.c.table_id == table_id
    )
    return int(conn.execute(query).scalar() or 0)


def load_batch(conn: Connection, table_id: str, after_op: int, upto_op: int) -> OverlayBatch:
    """Every record of operations ``after_op < id <= upto_op``, in operation order."""

    def rows(table: sa.Table, *order: sa.Column) -> list:
        query = (
            sa.select(table)
            .where(table.c.table_id == table_id)
            .where(table.c.operation_id > after_op, table.c.operation_id <= upto_op)
            .order_by(table.c.operation_id, *order)
        )
        return list(conn.execute(query))

    ops = rows(operations_table)
    batch = OverlayBatch(
        last_op=max((r.operation_id for r in ops), default=0),
        last_ts=max((r.timestamp for r in ops), default=0),
    )
    _load_nodes(batch, rows(nodes_table, nodes_table.c.node_id))
    _load_parents(batch, rows(parent_changes_table))
    _load_edges(batch, rows(edge_changes_table))
    lineage = rows(lineage_table, lineage_table.c.old_root, lineage_table.c.new_root)
    batch.lineage_old = np.array([r.old_root for r in lineage], dtype=np.uint64)
    batch.lineage_new = np.array([r.new_root for r in lineage], dtype=np.uint64)
    batch.lineage_ts = np.array([r.timestamp for r in lineage], dtype=np.int64)
    batch.lineage_op = np.array([r.operation_id for r in lineage], dtype=np.int64)
    batch.counters = {int(r.chunk_id): int(r.value) for r in rows(counters_table)}
    return batch


def _load_nodes(batch: OverlayBatch, rows: list) -> None:
    children = [decode_array(r.children) for r in rows]
    batch.node_ids = np.array([r.node_id for r in rows], dtype=np.uint64)
    batch.node_created = np.array([r.created for r in rows], dtype=np.int64)
    batch.node_op = np.array([r.operation_id for r in rows], dtype=np.int64)
    batch.node_ptr = ptr_from_counts(np.array([len(c) for c in children], dtype=np.int64))
    batch.node_children = np.concatenate(children) if children else EMPTY_IDS


def _load_parents(batch: OverlayBatch, rows: list) -> None:
    child = [decode_array(r.child_ids) for r in rows]
    batch.parent_child = np.concatenate(child) if child else EMPTY_IDS
    batch.parent_parent = (
        np.concatenate([decode_array(r.parent_ids) for r in rows]) if rows else EMPTY_IDS
    )
    batch.parent_ts = np.repeat(
        np.array([r.timestamp for r in rows], dtype=np.int64), [len(c) for c in child]
    )


def _load_edges(batch: OverlayBatch, rows: list) -> None:
    edges = [decode_array(r.edges, width=2) for r in rows]
    counts = [len(e) for e in edges]
    batch.edges = np.concatenate(edges) if edges else np.zeros((0, 2), np.uint64)
    batch.edge_aff = (
        np.concatenate([decode_array(r.affinities, "<f4") for r in rows])
        if rows
        else np.zeros(0, np.float32)
    )
    batch.edge_ts = np.repeat(np.array([r.timestamp for r in rows], dtype=np.int64), counts)
    batch.edge_active = np.repeat(np.array([bool(r.active) for r in rows], dtype=bool), counts)
    batch.edge_op = np.repeat(np.array([r.operation_id for r in rows], dtype=np.int64), counts)


def load_operations(conn: Connection, table_id: str, op_ids: list[int]) -> dict[int, Operation]:
    out: dict[int, Operation] = {}
    t = operations_table
    for start in range(0, len(op_ids), 500):
        chunk = op_ids[start : start + 500]
        query = sa.select(t).where(t.c.table_id == table_id, t.c.operation_id.in_(chunk))
        for row in conn.execute(query):
            out[int(row.operation_id)] = _operation_from_row(row)
    return out


def operation_ids_since(conn: Connection, table_id: str, since_us: int | None) -> list[int]:
    t = operations_table
    query = sa.select(t.c.operation_id).where(t.c.table_id == table_id)
    if since_us is not None:
        query = query.where(t.c.timestamp >= since_us)
    return [int(r[0]) for r in conn.execute(query.order_by(t.c.operation_id))]


def _operation_from_row(row: sa.Row) -> Operation:
    return Operation(
        id=int(row.operation_id),
        timestamp=from_micros(row.timestamp),
        user_id=row.user_id,
        kind=row.kind,
        status=row.status,
        added_edges=decode_array(row.added_edges, width=2),
        added_affinities=decode_array(row.added_affinities, "<f4"),
        removed_edges=decode_array(row.removed_edges, width=2),
        removed_affinities=decode_array(row.removed_affinities, "<f4"),
        source_ids=decode_array(row.source_ids),
        sink_ids=decode_array(row.sink_ids),
        source_coords=json.loads(row.source_coords) if row.source_coords else None,
        sink_coords=json.loads(row.sink_coords) if row.sink_coords else None,
        old_root_ids=decode_array(row.old_root_ids),
        new_root_ids=decode_array(row.new_root_ids),
        undo_of=row.undo_of,
        redo_of=row.redo_of,
    )


# -- writing ------------------------------------------------------------------------------------
def write_plan(
    conn: Connection, table_id: str, plan: EditPlan, known_counters: dict[int, int]
) -> None:
    """Insert every row of ``plan`` (inside the caller's transaction). A concurrent writer
    shows up as a primary-key clash or a counter that moved: :class:`ConcurrentEdit`."""
    op = plan.operation()
    try:
        conn.execute(operations_table.insert(), [_operation_row(table_id, op)])
    except sa.exc.IntegrityError as exc:
        raise ConcurrentEdit(str(exc)) from exc
    ts, op_id = plan.timestamp, plan.operation_id
    if len(plan.node_ids):
        conn.execute(
            nodes_table.insert(),
            [
                {
                    "table_id": table_id,
                    "node_id": int(node),
                    "layer": int(layer),
                    "created": ts,
                    "operation_id": op_id,
                    "children": encode_array(plan.node_children[lo:hi]),
                }
                for node, layer, lo, hi in zip(
                    plan.node_ids,
                    plan.node_layers,
                    plan.node_ptr[:-1],
                    plan.node_ptr[1:],
                    strict=True,
                )
            ],
        )
    conn.execute(
        parent_changes_table.insert(),
        [
            {
                "table_id": table_id,
                "operation_id": op_id,
                "timestamp": ts,
                "child_ids": encode_array(plan.parent_child),
                "parent_ids": encode_array(plan.parent_parent),
            }
        ],
    )
    if len(plan.edges):
        conn.execute(
            edge_changes_table.insert(),
            [
                {
                    "table_id": table_id,
                    "operation_id": op_id,
                    "timestamp": ts,
                    "active": plan.edges_active,
                    "edges": encode_array(plan.edges),
                    "affinities": encode_array(plan.edge_affinities, "<f4"),
                }
            ],
        )
    conn.execute(
        lineage_table.insert(),
        [
            {
                "table_id": table_id,
                "old_root": int(old),
                "new_root": int(new),
                "operation_id": op_id,
                "timestamp": ts,
            }
            for old, new in zip(plan.lineage_old, plan.lineage_new, strict=True)
        ],
    )
    _write_counters(conn, table_id, plan, known_counters)


def _write_counters(conn: Connection, table_id: str, plan: EditPlan, known: dict[int, int]) -> None:
    t = counters_table
    for chunk, value in plan.counters.items():
        values = {"value": value, "operation_id": plan.operation_id}
        if chunk in known:
            result = conn.execute(
                t.update()
                .where(t.c.table_id == table_id, t.c.chunk_id == chunk, t.c.value == known[chunk])
                .values(**values)
            )
            if result.rowcount != 1:
                raise ConcurrentEdit(f"counter of chunk {chunk} moved")
        else:
            try:
                conn.execute(t.insert(), [{"table_id": table_id, "chunk_id": chunk, **values}])
            except sa.exc.IntegrityError as exc:
                raise ConcurrentEdit(str(exc)) from exc


def _operation_row(table_id: str, op: Operation) -> dict:
    return {
        "table_id": table_id,
        "operation_id": op.id,
        "timestamp": to_micros(op.timestamp),
        "user_id": op.user_id,
        "kind": op.kind,
        "status": op.status,
        "undo_of": op.undo_of,
        "redo_of": op.redo_of,
        "added_edges": encode_array(op.added_edges),
        "added_affinities": encode_array(op.added_affinities, "<f4"),
        "removed_edges": encode_array(op.removed_edges),
        "removed_affinities": encode_array(op.removed_affinities, "<f4"),
        "source_ids": encode_array(op.source_ids),
        "sink_ids": encode_array(op.sink_ids),
        "source_coords": json.dumps(op.source_coords) if op.source_coords is not None else None,
        "sink_coords": json.dumps(op.sink_coords) if op.sink_coords is not None else None,
        "old_root_ids": encode_array(op.old_root_ids),
        "new_root_ids": encode_array(op.new_root_ids),
    }


def graph_has_rows(conn: Connection, table_id: str) -> bool:
    t = operations_table
    query = sa.select(t.c.operation_id).where(t.c.table_id == table_id).limit(1)
    return conn.execute(query).first() is not None
