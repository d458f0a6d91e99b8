""":class:`SegmentationGraph`: the versioned segmentation graph (a local PyChunkedGraph).

Reads are vectorized over a snapshot (:class:`~.view.GraphView`) of the memory-mapped base
plus the in-memory overlay. Before each public read the graph compares the newest operation
id in the database with its own and loads what another process committed. Edits are
planned on a fresh snapshot, written in one transaction, and only then published in memory.

>>> from datetime import datetime, UTC
>>> import tempfile, pathlib
>>> from opencave.storage import LiveStore
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> layout = IdLayout(n_layers=4, spatial_bits=2)
>>> sv = layout.encode(1, 0, 0, 0, [1, 2, 3])
>>> graph = SegmentationGraph.create(
...     LiveStore.in_directory(tmp), tmp / "graph", table_id="demo", layout=layout,
...     geometry=ChunkGeometry((0, 0, 0)), supervoxel_ids=sv, edges=[[sv[0], sv[1]]],
...     timestamp=datetime(2024, 1, 1, tzinfo=UTC))
>>> len(set(graph.get_roots(sv).tolist()))
2
>>> op = graph.merge(sv[1], sv[2], user_id="alice")
>>> len(set(graph.get_roots(sv).tolist())), op.kind
(1, 'merge')
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd

from ..errors import Conflict, InvalidRequest, NotFound
from ..progress import Steps
from ..storage.live import LiveStore
from ..timestamps import as_utc, from_micros, now, to_micros
from . import changelog, lineage
from .arrays import unique
from .base import BaseGraph
from .build import EdgeBatch, build_base, build_base_streamed
from .edits import Minter, canonical_edges, plan_merge, plan_rebuild, plan_split
from .ids import ChunkGeometry, IdLayout, as_ids
from .locate import SupervoxelLocator
from .operation import MERGE, REDO, SPLIT, UNDO, EditPlan, Operation
from .overlay import (
    ConcurrentEdit,
    OverlayBatch,
    OverlayState,
    graph_has_rows,
    latest_operation,
    load_batch,
    load_operations,
    operation_ids_since,
    write_plan,
)
from .points import nearest_leaf
from .view import GraphView

U64 = np.uint64
Planner = Callable[[GraphView, int, Minter, EditPlan], EditPlan]
_EDIT_ATTEMPTS = 8
_WRITER_LOCKS: dict[tuple[str, str], threading.RLock] = {}
_REGISTRY_LOCK = threading.Lock()


def _writer_lock(url: str, table_id: str) -> threading.RLock:
    """One writer lock per (database, graph) in this process, shared by every object."""
    with _REGISTRY_LOCK:
        return _WRITER_LOCKS.setdefault((url, table_id), threading.RLock())


class SegmentationGraph:
    """Supervoxels grouped into roots, versioned by timestamped edits."""

    def __init__(self, live: LiveStore, base: BaseGraph) -> None:
        self.live = live
        self.base = base
        meta = base.meta
        self.table_id: str = meta.table_id
        self.layout: IdLayout = meta.layout
        self.geometry: ChunkGeometry = meta.geometry
        self.n_layers: int = meta.layout.n_layers
        self.base_timestamp: datetime = from_micros(meta.base_timestamp)
        self._base_us = meta.base_timestamp
        self._state = OverlayState(last_ts=meta.base_timestamp)
        self._counters: dict[int, int] = {}
        self._ops: dict[int, Operation] = {}
        self._refresh_lock = threading.Lock()
        self._locator: SupervoxelLocator | None = None
        self._locator_read = False
        self._write_lock = _writer_lock(live.url, self.table_id)
        self._sync()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        live: LiveStore,
        directory: Path,
        *,
        table_id: str,
        layout: IdLayout,
        geometry: ChunkGeometry,
        supervoxel_ids: object,
        edges: object,
        affinities: object | None = None,
        timestamp: datetime,
        root_segment_start: int = 7_000_000_000,
        progress: bool | Steps = False,
    ) -> SegmentationGraph:
        """Build the base hierarchy of ``supervoxel_ids`` joined by ``edges`` (n, 2),
        valid from ``timestamp``, into ``directory``; edits go to ``live``."""
        cls._check_new(live, table_id)
        build_base(
            Path(directory),
            table_id=table_id,
            layout=layout,
            geometry=geometry,
            supervoxel_ids=supervoxel_ids,
            edges=edges,
            affinities=affinities,
            timestamp_us=to_micros(as_utc(timestamp)),
            root_segment_start=root_segment_start,
            progress=progress,
        )
        return cls.open(live, Path(directory), table_id)

    @classmethod
    def create_streamed(
        cls,
        live: LiveStore,
        directory: Path,
        *,
        table_id: str,
        layout: IdLayout,
        geometry: ChunkGeometry,
        supervoxels: Iterable[object],
        edges: Iterable[EdgeBatch],
        timestamp: datetime,
        root_segment_start: int = 7_000_000_000,
        progress: bool | Steps = False,
    ) -> SegmentationGraph:
        """:meth:`create` from batches, in memory bounded by the batch size whatever the
        graph's: ``supervoxels`` yields sorted id arrays (ascending across batches, no
        duplicates), ``edges`` yields ``(a ids, b ids, affinities or None)`` in any order."""
        cls._check_new(live, table_id)
        build_base_streamed(
            Path(directory),
            table_id=table_id,
            layout=layout,
            geometry=geometry,
            supervoxels=supervoxels,
            edges=edges,
            timestamp_us=to_micros(as_utc(timestamp)),
            root_segment_start=root_segment_start,
            progress=progress,
        )
        return cls.open(live, Path(directory), table_id)

    @staticmethod
    def _check_new(live: LiveStore, table_id: str) -> None:
        with live.connect() as conn:
            if graph_has_rows(conn, table_id):
                raise Conflict(f"the live store already holds edits of graph {table_id!r}")

    @classmethod
    def open(cls, live: LiveStore, directory: Path, table_id: str) -> SegmentationGraph:
        directory = Path(directory)
        if not (directory / "meta.json").exists():
            raise NotFound(f"no segmentation graph in {directory}")
        base = BaseGraph(directory)
        if base.meta.table_id != table_id:
            raise InvalidRequest(
                f"{directory} holds graph {base.meta.table_id!r}, not {table_id!r}"
            )
        return cls(live, base)

    # -- snapshot management -----------------------------------------------------------------
    def _sync(self) -> GraphView:
        """A view of the newest committed state (loads other writers' edits if any)."""
        with self.live.connect() as conn:
            marker = latest_operation(conn, self.table_id)
            if marker > self._state.last_op:
                with self._refresh_lock:
                    if marker > self._state.last_op:
                        batch = load_batch(conn, self.table_id, self._state.last_op, marker)
                        self._publish(batch)
        return GraphView(self.base, self._state)

    def _publish(self, batch: OverlayBatch) -> None:
        self._state = self._state.applied(batch)
        self._counters.update(batch.counters)

    def _read_ts(self, timestamp: datetime | None) -> int:
        ts = to_micros(now()) if timestamp is None else to_micros(as_utc(timestamp))
        if ts < self._base_us:
            raise InvalidRequest(
                f"timestamp {from_micros(ts).isoformat()} is before this graph existed "
                f"(oldest: {self.base_timestamp.isoformat()})"
            )
        return ts

    def oldest_timestamp(self) -> datetime:
        return self.base_timestamp

    # -- hierarchy reads ---------------------------------------------------------------------
    def get_roots(
        self, node_ids: object, timestamp: datetime | None = None, stop_layer: int | None = None
    ) -> np.ndarray:
        """Ancestor at the highest layer <= ``stop_layer`` (default: the root) of each id at
        ``timestamp`` (default now). Id 0 maps to 0."""
        ids = as_ids(node_ids)
        ts = self._read_ts(timestamp)
        if stop_layer is not None and not 1 <= int(stop_layer) <= self.n_layers:
            raise InvalidRequest(f"stop_layer must be in [1, {self.n_layers}]")
        return self._sync().roots(ids, ts, stop_layer, check=True)

    def get_root(
        self, node_id: int, timestamp: datetime | None = None, stop_layer: int | None = None
    ) -> int:
        return int(self.get_roots([node_id], timestamp, stop_layer)[0])

    def get_children(self, node_id: int) -> np.ndarray:
        view = self._sync()
        ids = as_ids([node_id])
        view.require(ids, 2**62)
        kids, _ = view.children(ids)
        return np.sort(kids)

    def get_leaves(
        self, node_id: int, stop_layer: int = 1, bounds: object | None = None
    ) -> np.ndarray:
        """Descendants at layer <= ``stop_layer``; with ``bounds`` ((x0, x1), (y0, y1),
        (z0, z1)) in base voxels, only those in chunks intersecting the box."""
        view = self._sync()
        ids = as_ids([node_id])
        view.require(ids, 2**62)
        box = None if bounds is None else self.geometry.bounds_in_chunks(bounds)
        leaves, _ = view.leaves(ids, int(stop_layer), box)
        return np.sort(leaves)

    def supervoxels_at(
        self, node_ids: object, points_nm: object
    ) -> tuple[np.ndarray, dict[int, int]]:
        """A supervoxel for each (node, point in nm): a supervoxel id stands for itself;
        for a higher node, the leaf chosen by :func:`~.points.nearest_leaf`. Returns the
        supervoxels and ``within`` (chosen supervoxel -> the node it was chosen from), which
        :meth:`merge` / :meth:`split` re-check when the edit is applied."""
        ids = as_ids(node_ids)
        points = np.asarray(points_nm, dtype=np.float64).reshape(-1, 3)
        if len(points) != len(ids):
            raise InvalidRequest("every node id needs one point (x, y, z)")
        if np.any(ids == 0):
            raise InvalidRequest("node id 0 means 'no segment'")
        out = ids.copy()
        within: dict[int, int] = {}
        for node in unique(ids[self.layout.layer(ids) > 1]).tolist():
            leaves = self.get_leaves(node)
            anchors = self._anchors(leaves)
            for i in np.flatnonzero(ids == node):
                out[i] = nearest_leaf(leaves, self.layout, self.geometry, points[i], anchors)
                within[int(out[i])] = node
        return out, within

    def _anchors(self, svs: np.ndarray) -> np.ndarray | None:
        """Anchor positions (base voxels) of sorted supervoxels, NaN where unknown; None
        when the graph has no anchors. The anchor file is read once, on first use."""
        with self._refresh_lock:
            if not self._locator_read:
                self._locator = SupervoxelLocator.open(
                    self.base.directory, self.layout, self.geometry
                )
                self._locator_read = True
        locator = self._locator
        if locator is None:
            return None
        idx = locator.ids.positions(svs)
        out = np.full((len(svs), 3), np.nan)
        out[idx >= 0] = locator.positions(idx[idx >= 0])
        return out

    def subgraph(
        self, node_id: int, bounds: object | None = None, timestamp: datetime | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Atomic edges (n, 2) active at ``timestamp`` (default now) with both ends among the
        node's leaves (within ``bounds``, base voxels), and their affinities."""
        leaves = self.get_leaves(node_id, 1, bounds)
        ts = self._read_ts(timestamp)
        a, b, aff = self._sync().active_edges(leaves, ts)
        inside = np.isin(a, leaves) & np.isin(b, leaves)
        return np.stack([a[inside], b[inside]], axis=1), aff[inside]

    def valid_nodes(self, node_ids: object, timestamp: datetime | None = None) -> np.ndarray:
        """The given ids that exist (were created at or before ``timestamp``, default now);
        nodes are never deleted, so this is the whole of PyChunkedGraph's notion."""
        ids = as_ids(node_ids)
        ts = self._read_ts(timestamp)
        return unique(ids[self._sync().exists_at(ids, ts)])

    def supervoxel_chunk_range(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The smallest and largest layer-1 chunk coordinates holding supervoxels."""
        starts = self.base.node_ids.run_start
        starts = starts[self.layout.layer(starts) == 1]
        if len(starts) == 0:
            return (0, 0, 0), (0, 0, 0)
        coords = np.stack(self.layout.chunk_coordinates(starts), axis=1)
        return tuple(coords.min(axis=0).tolist()), tuple(coords.max(axis=0).tolist())

    # -- root status -------------------------------------------------------------------------
    def is_latest_roots(self, ids: object, timestamp: datetime | None = None) -> np.ndarray:
        roots = as_ids(ids)
        ts = self._read_ts(timestamp)
        view = self._sync()
        lineage.check_roots(view, roots)
        return lineage.is_latest(view, roots, ts)

    def root_timestamps(
        self, ids: object, latest: bool = False, timestamp: datetime | None = None
    ) -> list[datetime]:
        roots = as_ids(ids)
        ts = self._read_ts(timestamp)
        view = self._sync()
        lineage.check_roots(view, roots)
        view.require(roots, 2**62, "root")
        return [from_micros(t) for t in lineage.root_timestamps(view, roots, latest, ts).tolist()]

    def latest_roots(self, root_id: int, timestamp: datetime | None = None) -> np.ndarray:
        roots = as_ids([root_id])
        ts = self._read_ts(timestamp)
        view = self._sync()
        lineage.check_roots(view, roots)
        view.require(roots, 2**62, "root")
        if not view.exists_at(roots, ts)[0]:
            raise InvalidRequest(f"root {root_id} did not exist yet at that timestamp")
        return lineage.latest_roots(view, int(roots[0]), ts)

    # -- lineage -----------------------------------------------------------------------------
    def _window(self, past: datetime | None, future: datetime | None) -> tuple[int, int]:
        lo = self._base_us if past is None else to_micros(as_utc(past))
        hi = self._read_ts(future)
        return lo, hi

    def lineage_graph(
        self,
        root_ids: object,
        timestamp_past: datetime | None = None,
        timestamp_future: datetime | None = None,
    ) -> nx.DiGraph:
        roots = as_ids(root_ids)
        past, future = self._window(timestamp_past, timestamp_future)
        view = self._sync()
        lineage.check_roots(view, roots)
        view.require(roots, 2**62, "root")
        return lineage.lineage_graph(view, roots, past, future)

    def past_ids(
        self,
        root_ids: object,
        timestamp_past: datetime | None = None,
        timestamp_future: datetime | None = None,
    ) -> tuple[dict[int, list[int]], dict[int, int]]:
        roots = as_ids(root_ids)
        past, future = self._window(timestamp_past, timestamp_future)
        view = self._sync()
        lineage.check_roots(view, roots)
        view.require(roots, 2**62, "root")
        return lineage.past_future(view, roots, past, future)

    def delta_roots(
        self, timestamp_past: datetime | None = None, timestamp_future: datetime | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        past, future = self._window(timestamp_past, timestamp_future)
        return lineage.delta_roots(self._sync(), past, future)

    # -- operation log -----------------------------------------------------------------------
    def _operations(self, op_ids: list[int]) -> dict[int, Operation]:
        missing = [op for op in op_ids if op not in self._ops]
        if missing:
            with self.live.connect() as conn:
                self._ops.update(load_operations(conn, self.table_id, missing))
        unknown = [op for op in op_ids if op not in self._ops]
        if unknown:
            raise NotFound(f"operation(s) {unknown[:5]} do not exist in graph {self.table_id!r}")
        return {op: self._ops[op] for op in op_ids}

    def operation(self, operation_id: int) -> Operation:
        self._sync()
        return self._operations([int(operation_id)])[int(operation_id)]

    def operations(
        self, root_ids: object | None = None, since: datetime | None = None
    ) -> list[Operation]:
        """Operations in the history of ``root_ids`` (default: all), optionally since a time."""
        view = self._sync()
        since_us = None if since is None else to_micros(as_utc(since))
        if root_ids is None:
            with self.live.connect() as conn:
                op_ids = operation_ids_since(conn, self.table_id, since_us)
        else:
            roots = as_ids(root_ids)
            lineage.check_roots(view, roots)
            view.require(roots, 2**62, "root")
            graph = lineage.lineage_graph(view, roots, self._base_us - 1, 2**62)
            op_ids = sorted(
                {op for r in roots.tolist() for op in changelog.history_operations(graph, r)}
            )
        ops = self._operations(op_ids)
        return [
            ops[o] for o in op_ids if since_us is None or to_micros(ops[o].timestamp) >= since_us
        ]

    def tabular_change_log(
        self, root_ids: object, filtered: bool = False
    ) -> dict[int, pd.DataFrame]:
        roots = as_ids(root_ids)
        view = self._sync()
        lineage.check_roots(view, roots)
        view.require(roots, 2**62, "root")
        return changelog.tabular_change_logs(
            view, roots, self._operations, to_micros(now()), filtered
        )

    def change_log(self, root_id: int, filtered: bool = True) -> dict:
        table = self.tabular_change_log([root_id], filtered=filtered)[int(root_id)]
        return changelog.change_log_summary(table)

    # -- edits -------------------------------------------------------------------------------
    def merge(
        self,
        supervoxel_a: int,
        supervoxel_b: int,
        *,
        user_id: str,
        timestamp: datetime | None = None,
        affinity: float = 1.0,
        coordinates: object | None = None,
        within: Mapping[int, int] | None = None,
    ) -> Operation:
        """Join the segments of two supervoxels with a new atomic edge. ``within``
        (supervoxel -> node): the edit is refused unless each supervoxel still lies under
        that node when the edit is applied (see :meth:`supervoxels_at`)."""
        a, b = (int(as_ids([v])[0]) for v in (supervoxel_a, supervoxel_b))
        if not (affinity > 0):
            raise InvalidRequest("affinity must be positive")
        coords = _coords(coordinates, 2, "coordinates")

        def planner(view: GraphView, ts: int, minter: Minter, plan: EditPlan) -> EditPlan:
            self._require_supervoxels(view, np.array([a, b], dtype=U64), ts)
            _require_within(view, within, ts)
            if a == b:
                raise InvalidRequest("cannot merge a supervoxel with itself")
            return plan_merge(view, ts, minter, plan, a, b, float(affinity))

        return self._edit(
            MERGE,
            user_id,
            timestamp,
            planner,
            source_ids=np.array([a], dtype=U64),
            sink_ids=np.array([b], dtype=U64),
            source_coords=coords[:1] if coords else None,
            sink_coords=coords[1:] if coords else None,
        )

    def split(
        self,
        sources: object,
        sinks: object,
        *,
        user_id: str,
        timestamp: datetime | None = None,
        source_coords: object | None = None,
        sink_coords: object | None = None,
        within: Mapping[int, int] | None = None,
    ) -> Operation:
        """Separate ``sources`` from ``sinks`` (supervoxels of one root) by a minimum cut;
        ``within`` as for :meth:`merge`."""
        src, snk = unique(as_ids(sources)), unique(as_ids(sinks))

        def planner(view: GraphView, ts: int, minter: Minter, plan: EditPlan) -> EditPlan:
            self._require_supervoxels(view, np.concatenate([src, snk]), ts)
            _require_within(view, within, ts)
            return plan_split(view, ts, minter, plan, src, snk)

        return self._edit(
            SPLIT,
            user_id,
            timestamp,
            planner,
            source_ids=src,
            sink_ids=snk,
            source_coords=_coords(source_coords, len(src) or None, "source_coords"),
            sink_coords=_coords(sink_coords, len(snk) or None, "sink_coords"),
        )

    def remove_edges(
        self, edges: object, *, user_id: str, timestamp: datetime | None = None
    ) -> Operation:
        """Split by explicit atomic edges (all active, all within one root)."""
        pairs = canonical_edges(as_ids(edges))
        pairs = np.unique(pairs, axis=0) if len(pairs) else pairs
        if len(pairs) == 0:
            raise InvalidRequest("no edges to remove")

        def planner(view: GraphView, ts: int, minter: Minter, plan: EditPlan) -> EditPlan:
            self._require_supervoxels(view, pairs.reshape(-1), ts)
            active, aff = view.edge_states(pairs, ts)
            if not np.all(active):
                raise InvalidRequest(f"edges {pairs[~active][:5].tolist()} are not active")
            if len(unique(view.roots(pairs.reshape(-1), ts))) != 1:
                raise InvalidRequest("the edges to remove must all lie within one segment")
            return plan_rebuild(view, ts, minter, plan, pairs, aff, add=False)

        return self._edit(SPLIT, user_id, timestamp, planner)

    def undo(
        self, operation_id: int, *, user_id: str, timestamp: datetime | None = None
    ) -> Operation:
        """Apply the inverse of an operation's edge change (minting new ids)."""
        target = self.operation(operation_id)
        return self._replay(UNDO, target, invert=True, user_id=user_id, timestamp=timestamp)

    def redo(
        self, operation_id: int, *, user_id: str, timestamp: datetime | None = None
    ) -> Operation:
        """Apply an operation's edge change again (after it was undone)."""
        target = self.operation(operation_id)
        return self._replay(REDO, target, invert=False, user_id=user_id, timestamp=timestamp)

    def _replay(
        self,
        kind: str,
        target: Operation,
        *,
        invert: bool,
        user_id: str,
        timestamp: datetime | None,
    ) -> Operation:
        add = target.is_merge != invert
        edges = target.added_edges if target.is_merge else target.removed_edges
        affs = target.added_affinities if target.is_merge else target.removed_affinities

        def planner(view: GraphView, ts: int, minter: Minter, plan: EditPlan) -> EditPlan:
            active, current_aff = view.edge_states(edges, ts)
            todo = ~active if add else active
            if not np.any(todo):
                raise InvalidRequest(
                    f"nothing to {kind}: operation {target.id} is already "
                    f"{'applied' if add else 'reverted'}"
                )
            pairs = edges[todo]
            if add and len(pairs) == 1:
                ends = view.roots(pairs.reshape(-1), ts)
                if ends[0] != ends[1]:
                    return plan_merge(view, ts, minter, plan, *map(int, pairs[0]), affs[todo][0])
            new_aff = affs[todo] if add else current_aff[todo]
            return plan_rebuild(view, ts, minter, plan, pairs, new_aff, add=add)

        ref = {"undo_of": target.id} if kind == UNDO else {"redo_of": target.id}
        return self._edit(kind, user_id, timestamp, planner, **ref)

    def _require_supervoxels(self, view: GraphView, ids: np.ndarray, ts: int) -> None:
        if np.any(ids == 0):
            raise InvalidRequest("supervoxel id 0 means 'no segment' and cannot be edited")
        not_sv = ids[view.layout.layer(ids) != 1]
        if len(not_sv):
            raise InvalidRequest(f"edits take supervoxel ids (layer 1); got {not_sv[:5].tolist()}")
        view.require(ids, ts, "supervoxel")

    def _edit(
        self,
        kind: str,
        user_id: str,
        timestamp: datetime | None,
        planner: Planner,
        **fields: object,
    ) -> Operation:
        if not user_id:
            raise InvalidRequest("edits need a user_id")
        with self._write_lock:
            for _ in range(_EDIT_ATTEMPTS):
                view = self._sync()
                ts = self._edit_ts(timestamp, view.overlay.last_ts)
                plan = EditPlan(kind=kind, user_id=str(user_id), timestamp=ts, **fields)
                minter = Minter(view, self._counters, self.base.meta.root_segment_start)
                plan = planner(view, ts, minter, plan)
                plan.operation_id = view.overlay.last_op + 1
                known = {c: self._counters[c] for c in plan.counters if c in self._counters}
                try:
                    with self.live.begin() as conn:
                        write_plan(conn, self.table_id, plan, known)
                except ConcurrentEdit:
                    continue
                with self._refresh_lock:
                    if self._state.last_op == plan.operation_id - 1:
                        self._publish(OverlayBatch.from_plan(plan))
                op = plan.operation()
                self._ops[op.id] = op
                return op
        raise Conflict("the graph is being edited concurrently; try again")

    def _edit_ts(self, timestamp: datetime | None, last_ts: int) -> int:
        if timestamp is None:
            return max(to_micros(now()), last_ts)
        ts = to_micros(as_utc(timestamp))
        if ts < last_ts:
            raise InvalidRequest(
                f"timestamp {from_micros(ts).isoformat()} is earlier than the latest operation "
                f"({from_micros(last_ts).isoformat()}); edits must be in time order"
            )
        return ts


def _require_within(view: GraphView, within: Mapping[int, int] | None, ts: int) -> None:
    """Refuse the edit if a supervoxel chosen from a node no longer lies under it (the node
    was edited between the choice and the edit, or was already stale)."""
    if not within:
        return
    svs = np.array(list(within), dtype=U64)
    nodes = np.array(list(within.values()), dtype=U64)
    layers = view.layout.layer(nodes)
    for layer in np.unique(layers).tolist():
        sel = layers == layer
        got = view.roots(svs[sel], ts, stop_layer=layer)
        bad = np.flatnonzero(got != nodes[sel])
        if len(bad):
            node = int(nodes[sel][bad[0]])
            raise InvalidRequest(
                f"node {node} is not current: it has been edited, so its supervoxels now belong "
                f"to other segments; use its latest root ids (get_latest_roots)"
            )


def _coords(values: object | None, count: int | None, name: str) -> list[list[float]] | None:
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64).reshape(-1, 3)
    if count is not None and len(arr) != count:
        raise InvalidRequest(f"{name} needs {count} points of (x, y, z), got {len(arr)}")
    return arr.tolist()
