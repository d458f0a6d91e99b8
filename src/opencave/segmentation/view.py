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
        pos = self.base.positions(ids) if pos is None else pos
        parent_pos, parents = self._parents_at(ids, pos, ts)
        in_base = parent_pos >= 0
        parents[in_base] = self.base.node_ids.at(parent_pos[in_base])
        return parents

    def _parents_at(
        self, ids: np.ndarray, pos: np.ndarray, ts: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The parent of each node (id and base position) at ``ts``, as (base position or -1,
        id where it is not a base node, else 0): a walk up the base names nodes by position
        and looks their ids up once per step, in order."""
        found, rows = self.overlay.parents.last_at(ids, ts)
        parents = np.where(found, rows["parent"], U64(0)).astype(U64)
        parent_pos = np.full(len(ids), -1, dtype=np.int64)
        from_base = np.flatnonzero(~found & (pos >= 0))
        parent_pos[from_base] = self.base.parent_positions(pos[from_base])
        from_overlay = np.flatnonzero(found)
        if len(from_overlay):
            placed = self.base.positions(parents[from_overlay])
            parent_pos[from_overlay] = placed
            parents[from_overlay[placed >= 0]] = 0
        return parent_pos, parents

    def roots(
        self, ids: np.ndarray, ts: int, stop_layer: int | None = None, check: bool = False
    ) -> np.ndarray:
        """Ancestor at the highest layer <= ``stop_layer`` of each id (vectorized; 0 -> 0).
        With ``check``, raise :class:`NodeNotFound` for ids that do not exist at ``ts``.

        Works on the unique frontier at each step: many supervoxels share a layer-2
        parent, so the work shrinks quickly as it climbs."""
        stop = self.top if stop_layer is None else int(stop_layer)
        uniq, inverse = np.unique(np.asarray(ids, dtype=U64), return_inverse=True)
        pos = self.base.positions(uniq)
        if check:
            self.require(uniq, ts, pos=pos)
        result = uniq.copy()
        climbing = np.flatnonzero((uniq != 0) & (self.layout.layer(uniq) < stop))
        frontier, frontier_pos = uniq[climbing], pos[climbing]
        owner = np.arange(len(frontier))  # each climbing id's place in the frontier
        while len(frontier):
            parent_pos, parents = self._parents_at(frontier, frontier_pos, ts)
            frontier, frontier_pos, step = self._next_frontier(parent_pos, parents, stop)
            up = step[owner]
            climbing, owner = climbing[up >= 0], up[up >= 0]
            result[climbing] = frontier[owner]
        return result[inverse.reshape(-1)]

    def _next_frontier(
        self, parent_pos: np.ndarray, parents: np.ndarray, stop: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The unique parents at layers <= ``stop`` (ids, base positions) and, for each
        child, its parent's index among them (-1: none)."""
        in_base = parent_pos >= 0
        base_pos, base_at = np.unique(parent_pos[in_base], return_inverse=True)
        others = ~in_base & (parents != 0)
        new_ids, new_at = np.unique(parents[others], return_inverse=True)
        ids = np.concatenate([self.base.node_ids.at(base_pos), new_ids])
        pos = np.concatenate([base_pos, np.full(len(new_ids), -1, dtype=np.int64)])
        step = np.full(len(parents), -1, dtype=np.int64)
        step[in_base], step[others] = base_at, len(base_pos) + new_at
        keep = self.layout.layer(ids) <= stop
        if not keep.all():
            renumber = np.where(keep, np.cumsum(keep) - 1, -1)
            step = np.where(step >= 0, renumber[step], -1)
            ids, pos = ids[keep], pos[keep]
        return ids, pos, step

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
        kids, kid_pos, owner = self._children(ids, self.base.positions(ids))
        return self._ids(kids, kid_pos), owner

    def _children(
        self, ids: np.ndarray, pos: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Children of nodes named as (ids, base positions): base nodes by position (-1: not
        in the base), the others by id (0 where the position names the node); and the index
        of the parent of each."""
        in_base = np.flatnonzero(pos >= 0)
        kid_pos_b, own_b = self.base.child_positions(pos[in_base])
        rest = np.flatnonzero(pos < 0)
        _, kids_o, own_o = self.overlay.nodes.children(ids[rest])
        placed = self.base.positions(kids_o)
        kids = np.concatenate([np.zeros(len(kid_pos_b), U64), np.where(placed >= 0, 0, kids_o)])
        kid_pos = np.concatenate([kid_pos_b, placed])
        owner = np.concatenate([in_base[own_b], rest[own_o]])
        order = np.argsort(owner, kind="stable")
        return kids[order], kid_pos[order], owner[order]

    def _ids(self, ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """The ids of nodes named as (ids, base positions), see :meth:`_children`."""
        ids = ids.copy()
        in_base = pos >= 0
        ids[in_base] = self.base.node_ids.at(pos[in_base])
        return ids

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
        frontier, f_owner = ids[keep], owner[keep]
        f_pos = self.base.positions(frontier)
        out = [(frontier[:0], f_pos[:0], f_owner[:0])]
        while len(frontier):
            layers = np.where(f_pos >= 0, self.base.layers_at(f_pos), self.layout.layer(frontier))
            done = layers <= stop_layer
            out.append((frontier[done], f_pos[done], f_owner[done]))
            kids, kid_pos, which = self._children(frontier[~done], f_pos[~done])
            kid_owner = f_owner[~done][which]
            if chunk_box is not None:
                kids = self._ids(kids, kid_pos)
                keep = self._in_box(kids, chunk_box)
                kids, kid_pos, kid_owner = kids[keep], kid_pos[keep], kid_owner[keep]
            frontier, f_pos, f_owner = kids, kid_pos, kid_owner
        leaves, leaf_pos, leaf_owner = (np.concatenate(part) for part in zip(*out, strict=True))
        return self._ids(leaves, leaf_pos), leaf_owner

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
