"""Edit planning: turn a merge, a split, an explicit edge removal, an undo or a redo into an
:class:`EditPlan` computed from one snapshot, without writing anything.

Two strategies:

- **merge path** (one edge between two roots): only the ancestors of the two supervoxels
  change. From the lowest layer whose chunk holds both, each layer's new node gathers the
  old members of both sides, with the old ancestors replaced by the node just created below
  (O(layers x fan-out) new rows, no traversal of the segments).
- **rebuild** (everything else): re-run the layer grouping over the supervoxels of the
  affected roots with the new edge set, reusing every node whose children are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidRequest
from .arrays import EMPTY_IDS, ptr_from_counts, unique
from .layers import LayerNodes, Units, build_layers, mint_in_chunks
from .mincut import min_cut
from .operation import EditPlan
from .view import GraphView

U64 = np.uint64


class Minter:
    """Hands out new segment ids per chunk, continuing from the persisted counters."""

    def __init__(
        self, view: GraphView, counters: Mapping[int, int], root_segment_start: int
    ) -> None:
        self.view = view
        self.layout = view.layout
        self.counters = counters
        self.root_segment_start = root_segment_start
        self.used: dict[int, int] = {}

    def _current(self, chunk: int, layer: int) -> int:
        if chunk in self.used:
            return self.used[chunk]
        if chunk in self.counters:
            return self.counters[chunk]
        value = int(self.view.base.max_segments(np.array([chunk], dtype=U64), layer)[0])
        if layer == self.layout.n_layers:
            value = max(value, self.root_segment_start - 1)
        return value

    def mint(self, chunk_ids: np.ndarray, layer: int) -> np.ndarray:
        chunk_ids = np.asarray(chunk_ids, dtype=U64)
        if len(chunk_ids) == 0:
            return EMPTY_IDS.copy()
        uniq, counts = np.unique(chunk_ids, return_counts=True)
        start = {int(c): self._current(int(c), layer) for c in uniq}
        ids, _ = mint_in_chunks(chunk_ids, np.array([start[int(c)] for c in chunk_ids]))
        for c, k in zip(uniq.tolist(), counts.tolist(), strict=True):
            self.used[c] = start[c] + k
            if self.used[c] > self.layout.max_segment(layer):
                raise InvalidRequest(f"chunk {c} has run out of layer-{layer} ids")
        return ids


class PlanNodes:
    """Accumulates the new nodes of a plan and the parent records of their children."""

    def __init__(self) -> None:
        self.ids: list[np.ndarray] = []
        self.layers: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        self.children: list[np.ndarray] = []

    def add(self, layer: int, ids: np.ndarray, ptr: np.ndarray, children: np.ndarray) -> None:
        self.ids.append(np.asarray(ids, dtype=U64))
        self.layers.append(np.full(len(ids), layer, dtype=np.int64))
        self.counts.append(np.diff(ptr))
        self.children.append(np.asarray(children, dtype=U64))

    def fill(self, plan: EditPlan) -> None:
        if not self.ids:
            return
        counts = np.concatenate(self.counts)
        plan.node_ids = np.concatenate(self.ids)
        plan.node_layers = np.concatenate(self.layers)
        plan.node_ptr = ptr_from_counts(counts)
        plan.node_children = np.concatenate(self.children)
        plan.parent_child = plan.node_children
        plan.parent_parent = np.repeat(plan.node_ids, counts)


def canonical_edges(edges: object) -> np.ndarray:
    pairs = np.asarray(edges, dtype=U64).reshape(-1, 2)
    return np.stack([pairs.min(axis=1), pairs.max(axis=1)], axis=1)


# -- merge along the two ancestor paths --------------------------------------------------------
def plan_merge(
    view: GraphView, ts: int, minter: Minter, plan: EditPlan, sv_a: int, sv_b: int, affinity: float
) -> EditPlan:
    layout, top = view.layout, view.top
    chain_a, chain_b = view.ancestor_chain(sv_a, ts), view.ancestor_chain(sv_b, ts)
    if chain_a[-1] == chain_b[-1]:
        raise InvalidRequest(
            f"supervoxels {sv_a} and {sv_b} already belong to the same segment {chain_a[-1]}"
        )
    coords_a, coords_b = layout.chunk_coordinates(sv_a), layout.chunk_coordinates(sv_b)
    common = next(
        layer
        for layer in range(2, top + 1)
        if layer == top
        or all(
            x >> (layer - 2) == y >> (layer - 2) for x, y in zip(coords_a, coords_b, strict=True)
        )
    )
    nodes = PlanNodes()
    rep = 0
    for layer in range(common, top + 1):
        mem_a = _members(view, chain_a, layer)
        mem_b = _members(view, chain_b, layer)
        if layer > common:
            mem_a = mem_a[mem_a != _ancestor(view, chain_a, layer - 1)]
            mem_b = mem_b[mem_b != _ancestor(view, chain_b, layer - 1)]
            members = np.concatenate([mem_a, mem_b, np.array([rep], dtype=U64)])
        else:
            members = np.concatenate([mem_a, mem_b])
        if len(members) >= 2 or layer == top:
            chunk = layout.chunk_id_at_layer(np.array([sv_a], dtype=U64), layer)
            new = minter.mint(chunk, layer)
            nodes.add(layer, new, np.array([0, len(members)]), members)
            rep = int(new[0])
        else:
            rep = int(members[0])
    nodes.fill(plan)
    plan.edges = canonical_edges([[sv_a, sv_b]])
    plan.edge_affinities = np.array([affinity], dtype=np.float32)
    plan.edges_active = True
    plan.lineage_old = np.array([chain_a[-1], chain_b[-1]], dtype=U64)
    plan.lineage_new = np.array([rep, rep], dtype=U64)
    plan.counters = dict(minter.used)
    return plan


def _ancestor(view: GraphView, chain: list[int], layer: int) -> int:
    """The chain's node at the highest layer <= ``layer``."""
    layers = view.layout.layer(np.array(chain, dtype=U64))
    return chain[int(np.flatnonzero(layers <= layer)[-1])]


def _members(view: GraphView, chain: list[int], layer: int) -> np.ndarray:
    """The layer-(L-1) representatives making up the chain's component at ``layer``."""
    node = _ancestor(view, chain, layer)
    if int(view.layout.layer(node)) == layer:
        kids, _ = view.children(np.array([node], dtype=U64))
        return kids
    return np.array([node], dtype=U64)


# -- rebuild the affected roots ------------------------------------------------------------------
class _ReuseAllocator:
    """Keeps a node when its children are exactly an existing node's children (the members'
    common current parent, at the same layer, with as many children); mints the rest.
    Roots are always new, so that every edit has lineage."""

    def __init__(self, view: GraphView, ts: int, minter: Minter, nodes: PlanNodes) -> None:
        self.view, self.ts, self.minter, self.nodes = view, ts, minter, nodes
        self.new_mask = np.zeros(0, dtype=bool)

    def __call__(
        self, layer: int, chunk_ids: np.ndarray, ptr: np.ndarray, children: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        ids = np.zeros(len(chunk_ids), dtype=U64)
        reuse = np.zeros(len(chunk_ids), dtype=bool)
        if layer < self.view.top and len(children):
            starts, sizes = ptr[:-1], np.diff(ptr)
            parents = self.view.parents_at(children, self.ts)
            first_parent = parents[starts]
            same = np.minimum.reduceat(parents == np.repeat(first_parent, sizes), starts)
            cand = np.flatnonzero(
                same & (first_parent != 0) & (self.view.layout.layer(first_parent) == layer)
            )
            full = self.view.child_counts(first_parent[cand]) == sizes[cand]
            reuse[cand[full]] = True
            ids[reuse] = first_parent[reuse]
        ids[~reuse] = self.minter.mint(chunk_ids[~reuse], layer)
        self.new_mask = ~reuse
        return ids, np.full(len(ids), -1, dtype=np.int64)

    def record(self, layer_nodes: LayerNodes) -> None:
        new = np.flatnonzero(self.new_mask)
        if len(new) == 0:
            return
        ptr = layer_nodes.ptr
        counts = np.diff(ptr)[new]
        starts = ptr[:-1][new]
        idx = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
        self.nodes.add(
            layer_nodes.layer,
            layer_nodes.ids[new],
            ptr_from_counts(counts),
            layer_nodes.children[idx],
        )


@dataclass
class Segment:
    """The supervoxels of some roots (sorted), the root of each, and their active edges."""

    svs: np.ndarray
    root_of_sv: np.ndarray
    a: np.ndarray
    b: np.ndarray
    aff: np.ndarray

    @classmethod
    def of(cls, view: GraphView, roots: np.ndarray, ts: int) -> Segment:
        svs, owner = view.leaves(roots)
        order = np.argsort(svs)
        svs = svs[order]
        a, b, aff = view.active_edges(svs, ts, closed=True)
        return cls(svs, roots[owner[order]], a, b, aff)


def _lineage_pairs(
    old_root_of_sv: np.ndarray, component_of_sv: np.ndarray, new_roots: np.ndarray
) -> np.ndarray:
    """Distinct (old root, new root) pairs sharing a supervoxel, shape (k, 2)."""
    old_roots, old_idx = np.unique(old_root_of_sv, return_inverse=True)
    key = unique(old_idx.astype(np.int64) * len(new_roots) + component_of_sv)
    return np.stack([old_roots[key // len(new_roots)], new_roots[key % len(new_roots)]], axis=1)


def _positions(svs: np.ndarray, ids: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(svs, ids)
    if len(ids) and np.any(svs[np.minimum(pos, len(svs) - 1)] != ids):
        raise RuntimeError("an active edge leaves its segment: the graph is inconsistent")
    return pos.astype(np.int64)


def plan_rebuild(
    view: GraphView,
    ts: int,
    minter: Minter,
    plan: EditPlan,
    edges: np.ndarray,
    affinities: np.ndarray,
    add: bool,
    segment: Segment | None = None,
) -> EditPlan:
    """Apply an edge change (add or remove ``edges``) to the roots it touches and rebuild
    their hierarchy. ``segment``: those roots' supervoxels and edges, if already known."""
    edges = canonical_edges(edges)
    old_roots = unique(view.roots(unique(edges), ts))
    segment = segment if segment is not None else Segment.of(view, old_roots, ts)
    svs, old_root_of_sv = segment.svs, segment.root_of_sv
    a, b = segment.a, segment.b
    if add:
        a = np.concatenate([a, edges[:, 0]])
        b = np.concatenate([b, edges[:, 1]])
    ea, eb = _positions(svs, a), _positions(svs, b)
    if not add:
        n = len(svs)
        gone = _positions(svs, edges[:, 0]) * n + _positions(svs, edges[:, 1])
        keep = ~np.isin(ea * n + eb, gone)
        ea, eb = ea[keep], eb[keep]
    nodes = PlanNodes()
    allocate = _ReuseAllocator(view, ts, minter, nodes)
    units = Units.of_supervoxels(svs)
    hierarchy = build_layers(view.layout, units, ea, eb, allocate, allocate.record)
    pairs = _lineage_pairs(old_root_of_sv, hierarchy.component, hierarchy.roots)
    nodes.fill(plan)
    plan.edges = edges
    plan.edge_affinities = np.asarray(affinities, dtype=np.float32)
    plan.edges_active = add
    plan.lineage_old, plan.lineage_new = pairs[:, 0], pairs[:, 1]
    plan.counters = dict(minter.used)
    return plan


# -- split by sources and sinks ------------------------------------------------------------------
def plan_split(
    view: GraphView,
    ts: int,
    minter: Minter,
    plan: EditPlan,
    sources: np.ndarray,
    sinks: np.ndarray,
) -> EditPlan:
    if len(sources) == 0 or len(sinks) == 0:
        raise InvalidRequest("a split needs at least one source and one sink supervoxel")
    overlap = np.intersect1d(sources, sinks)
    if len(overlap):
        raise InvalidRequest(f"supervoxels {overlap[:5].tolist()} are both source and sink")
    roots = unique(view.roots(np.concatenate([sources, sinks]), ts))
    if len(roots) != 1:
        raise InvalidRequest(
            f"sources and sinks must belong to one segment; they span roots {roots[:5].tolist()}"
        )
    seg = Segment.of(view, roots, ts)
    cut = min_cut(seg.svs, seg.a, seg.b, seg.aff, sources, sinks)
    if cut is None:
        raise InvalidRequest("sources and sinks cannot be separated (infinite-affinity path)")
    removed = np.stack([seg.a[cut], seg.b[cut]], axis=1)
    plan = plan_rebuild(view, ts, minter, plan, removed, seg.aff[cut], False, seg)
    if len(plan.new_roots) < 2:
        raise InvalidRequest("the split would not separate the segment")
    return plan
