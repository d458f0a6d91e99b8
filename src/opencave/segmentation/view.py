"""Vectorized reads over one snapshot: the base arrays plus an overlay state.

A node's parent at time T is its newest overlay parent record with ``ts <= T``, else its
base parent (base records hold from the base timestamp on). Children never change, so they
need no time. Callers validate T against the base timestamp before asking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import NodeNotFound
from .arrays import lookup_sorted, unique
from .base import BaseGraph
from .ids import IdLayout
from .overlay import OverlayState

U64 = np.uint64


@dataclass(frozen=True)
class GraphView:
    base: BaseGraph
    overlay: OverlayState

    @property
    def layout(self) -> IdLayout:
        return self.base.layout

    @property
    def top(self) -> int:
        return self.base.layout.n_layers

    # -- existence ---------------------------------------------------------------------------
    def created(
        self, ids: np.ndarray, pos: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(known mask, creation time, creating operation) of each id (base: base time, op 0).
        ``pos``: base positions if the caller already has them."""
        ids = np.asarray(ids, dtype=U64)
        in_base = (self.base.positions(ids) if pos is None else pos) >= 0
        known = in_base.copy()
        ts = np.full(len(ids), self.base.meta.base_timestamp, dtype=np.int64)
        op = np.zeros(len(ids), dtype=np.int64)
        rest = np.flatnonzero(~in_base)
        if len(rest):
            known[rest], ts[rest], op[rest] = self.overlay.nodes.created(ids[rest])
        return known, ts, op

    def exists_at(self, ids: np.ndarray, ts: int, pos: np.ndarray | None = None) -> np.ndarray:
        known, created, _ = self.created(ids, pos)
        return known & (created <= ts)

    def require(
        self, ids: np.ndarray, ts: int, what: str = "node", pos: np.ndarray | None = None
    ) -> None:
        """Raise :class:`NodeNotFound` naming a few ids that do not exist at ``ts``."""
        ok = self.exists_at(ids, ts, pos) | (ids == 0)
        if not np.all(ok):
            bad = unique(ids[~ok])
            shown = ", ".join(str(int(i)) for i in bad[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise NodeNotFound(
                f"{what} id(s) {shown}{more} do not exist in this graph at that time",
                node_ids=[int(i) for i in bad[:20]],
            )

    # -- parents and roots -------------------------------------------------------------------
    def parents_at(self, ids: np.ndarray, ts: int, pos: np.ndarray | None = None) -> np.ndarray:
        """Parent of each (existing) node at ``ts``; 0 for roots and unknown ids."""
        ids = np.asarray(ids, dtype=U64)
        found, rows = self.overlay.parents.last_at(ids, ts)
        out = np.where(found, rows["parent"], U64(0)).astype(U64)
        rest = np.flatnonzero(~found)
        if len(rest):
            rest_pos = self.base.positions(ids[rest]) if pos is None else pos[rest]
            inb = rest_pos >= 0
            out[rest[inb]] = self.base.parents(rest_pos[inb])
        return out

    def roots(
        self, ids: np.ndarray, ts: int, stop_layer: int | None = None, check: bool = False
    ) -> np.ndarray:
        """Ancestor at the highest layer <= ``stop_layer`` of each id (vectorized; 0 -> 0).
        With ``check``, raise :class:`NodeNotFound` for ids that do not exist at ``ts``.

        Works on the sorted unique frontier at each step: many supervoxels share a layer-2
        parent, so the work shrinks quickly as it climbs."""
        stop = self.top if stop_layer is None else int(stop_layer)
        uniq, inverse = np.unique(np.asarray(ids, dtype=U64), return_inverse=True)
        pos = self.base.positions(uniq)
        if check:
            self.require(uniq, ts, pos=pos)
        result = uniq.copy()
        climbing = np.flatnonzero((uniq != 0) & (self.layout.layer(uniq) < stop))
        frontier = uniq[climbing]
        frontier_pos: np.ndarray | None = pos[climbing]  # known for the first step only
        owner = np.arange(len(frontier))
        while len(frontier):
            parents = self.parents_at(frontier, ts, frontier_pos)
            frontier_pos = None
            up = (parents != 0) & (self.layout.layer(parents) <= stop)
            moved = up[owner]
            climbing, owner = climbing[moved], owner[moved]
            result[climbing] = parents[owner]
            frontier, remap = np.unique(parents[up], return_inverse=True)
            where = np.full(len(up), -1, dtype=np.int64)
            where[np.flatnonzero(up)] = remap
            owner = where[owner]
        return result[inverse.reshape(-1)]

    def ancestor_chain(self, node: int, ts: int) -> list[int]:
        """The node and its ancestors at ``ts`` up to the root."""
        chain = [int(node)]
        while True:
            parent = int(self.parents_at(np.array([chain[-1]], dtype=U64), ts)[0])
            if parent == 0:
                return chain
            chain.append(parent)

    # -- children and leaves -----------------------------------------------------------------
    def children(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Children of each node (concatenated) and the index of the node each belongs to."""
        ids = np.asarray(ids, dtype=U64)
        pos = self.base.positions(ids)
        in_base = np.flatnonzero(pos >= 0)
        kids_b, own_b = self.base.children(pos[in_base])
        rest = np.flatnonzero(pos < 0)
        _, kids_o, own_o = self.overlay.nodes.children(ids[rest])
        kids = np.concatenate([kids_b, kids_o])
        owner = np.concatenate([in_base[own_b], rest[own_o]])
        order = np.argsort(owner, kind="stable")
        return kids[order], owner[order]

    def child_counts(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=U64)
        pos = self.base.positions(ids)
        out = self.base.child_counts(np.maximum(pos, 0))
        out[pos < 0] = 0
        rest = pos < 0
        out[rest] = self.overlay.nodes.child_counts(ids[rest])
        return out

    def leaves(
        self,
        ids: np.ndarray,
        stop_layer: int = 1,
        chunk_box: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Descendants at layer <= ``stop_layer`` of each node, and the index of the node
        each came from. ``chunk_box`` (3, 2), in fractional layer-1 chunk units, prunes
        subtrees whose chunk does not intersect it."""
        ids = np.asarray(ids, dtype=U64)
        owner = np.arange(len(ids))
        keep = self._in_box(ids, chunk_box)
        ids, owner = ids[keep], owner[keep]
        done = self.layout.layer(ids) <= stop_layer
        out, out_owner = [ids[done]], [owner[done]]
        frontier, f_owner = ids[~done], owner[~done]
        while len(frontier):
            kids, which = self.children(frontier)
            kid_owner = f_owner[which]
            keep = self._in_box(kids, chunk_box)
            kids, kid_owner = kids[keep], kid_owner[keep]
            done = self.layout.layer(kids) <= stop_layer
            out.append(kids[done])
            out_owner.append(kid_owner[done])
            frontier, f_owner = kids[~done], kid_owner[~done]
        return np.concatenate(out), np.concatenate(out_owner)

    def _in_box(self, ids: np.ndarray, box: np.ndarray | None) -> np.ndarray:
        if box is None or len(ids) == 0:
            return np.ones(len(ids), dtype=bool)
        layers = self.layout.layer(ids)
        scale = (2.0 ** np.maximum(layers - 2, 0))[:, None]
        coords = np.stack(self.layout.chunk_coordinates(ids), axis=1).astype(np.float64)
        lo, hi = coords * scale, (coords + 1) * scale
        inside = np.all((lo < box[:, 1]) & (hi > box[:, 0]), axis=1)
        return inside | (layers == self.top)

    # -- atomic edges ------------------------------------------------------------------------
    def active_edges(
        self, svs: np.ndarray, ts: int, closed: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Edges active at ``ts`` touching the supervoxels ``svs`` (sorted, unique):
        (a, b, affinity) with a < b. ``closed``: ``svs`` are whole segments at ``ts``."""
        svs = np.asarray(svs, dtype=U64)
        pos = self.base.positions(svs)
        a0, b0, aff0 = self.base.incident_edges(pos[pos >= 0], closed)
        recs = [self.overlay.edges_a.matching(svs), self.overlay.edges_b.matching(svs)]
        ov = {k: np.concatenate([r[k] for r in recs]) for k in recs[0]}
        valid = ov["ts"] <= ts
        if not valid.any():
            return a0, b0, aff0  # base edges only: already unique
        a = np.concatenate([a0, ov["a"][valid]])
        b = np.concatenate([b0, ov["b"][valid]])
        aff = np.concatenate([aff0, ov["aff"][valid]])
        active = np.concatenate([np.ones(len(a0), bool), ov["active"][valid]])
        order_key = np.concatenate([np.full(len(a0), -1), ov["op"][valid]])
        # The newest record of each pair decides (base records are the oldest).
        order = np.lexsort((order_key, b, a))
        a, b, aff, active = a[order], b[order], aff[order], active[order]
        last = np.ones(len(a), dtype=bool)
        last[:-1] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
        keep = last & active
        return a[keep], b[keep], aff[keep]

    def edge_states(self, edges: np.ndarray, ts: int) -> tuple[np.ndarray, np.ndarray]:
        """(active mask, affinity) of given canonical edges (a < b) at ``ts``."""
        edges = np.asarray(edges, dtype=U64).reshape(-1, 2)
        if len(edges) == 0:
            return np.zeros(0, bool), np.zeros(0, np.float32)
        a, b, aff = self.active_edges(unique(edges), ts)
        if len(a) == 0:
            return np.zeros(len(edges), bool), np.zeros(len(edges), np.float32)
        have, want = pair_keys(np.stack([a, b], axis=1), edges)
        order = np.argsort(have)
        idx = lookup_sorted(have[order], want)
        active = idx >= 0
        return active, np.where(active, aff[order][np.maximum(idx, 0)], np.float32(0))

    # -- lineage -----------------------------------------------------------------------------
    def superseded(self, ids: np.ndarray, ts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(superseded at or before ``ts``?, when, by which operation) for root ids."""
        found, rows = self.overlay.lineage_old.last_at(np.asarray(ids, dtype=U64), ts)
        return found, rows["ts"], rows["op"]

    def successors(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        return self.overlay.lineage_old.matching(unique(np.asarray(ids, dtype=U64)))

    def predecessors(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        return self.overlay.lineage_new.matching(unique(np.asarray(ids, dtype=U64)))


def pair_keys(*pair_arrays: np.ndarray) -> list[np.ndarray]:
    """Comparable int64 keys for (n, 2) id pairs, consistent across the given arrays."""
    universe = unique(np.concatenate([p.reshape(-1) for p in pair_arrays]))
    n = max(len(universe), 1)
    out = []
    for pairs in pair_arrays:
        pairs = pairs.reshape(-1, 2)
        a = np.searchsorted(universe, pairs[:, 0]).astype(np.int64)
        b = np.searchsorted(universe, pairs[:, 1]).astype(np.int64)
        out.append(a * n + b)
    return out
