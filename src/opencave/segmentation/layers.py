"""The layer-by-layer grouping that defines the hierarchy (shared by the bulk builder and
by edits that rebuild a few roots).

Start with one *unit* per supervoxel. At layer L (2..top) the units that share a layer-L
chunk and are joined by an atomic edge form components (scipy connected components over
the contracted edge list). A component becomes a node when it is materialized:

- layer 2 always (every supervoxel has a layer-2 parent, as in PyChunkedGraph: layer-2 ids
  are what meshes, the L2 cache and ``get_roots(stop_layer=2)`` speak about);
- layers 3..top-1 only with >= 2 members (*skip connections*: a lone member's parent is the
  next materialized ancestor);
- the top layer always (one root per connected component).

The component then becomes the unit of the next layer, represented by its node (or by its
single member when it was skipped). Who names new nodes is up to an :class:`Allocator`:
the builder mints fresh ids, an edit reuses unchanged nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .arrays import components, first_occurrences, ptr_from_counts
from .ids import IdLayout


@dataclass
class LayerNodes:
    """The nodes materialized at one layer, in component order."""

    layer: int
    ids: np.ndarray  # uint64, one per node
    keys: np.ndarray  # int64 payload chosen by the allocator (e.g. storage position)
    ptr: np.ndarray  # CSR over children
    children: np.ndarray  # uint64 member representatives
    child_keys: np.ndarray  # their payloads


class Allocator(Protocol):
    def __call__(
        self, layer: int, chunk_ids: np.ndarray, ptr: np.ndarray, children: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ids (and int64 payloads) for components of ``layer`` given their chunks and
        members."""
        ...


@dataclass
class Units:
    """What the grouping starts from: one entry per unit (initially per supervoxel)."""

    rep: np.ndarray  # uint64 id of the node standing for the unit
    keys: np.ndarray  # int64 payload of that node (-1 when unused)
    sv: np.ndarray  # uint64 one supervoxel of the unit (its chunk locates the unit)

    @classmethod
    def of_supervoxels(cls, sv_ids: np.ndarray) -> Units:
        sv = np.asarray(sv_ids, dtype=np.uint64)
        return cls(sv, np.full(len(sv), -1, dtype=np.int64), sv)


@dataclass
class Hierarchy:
    """Result of a pass: the root of each final component, and each unit's component."""

    roots: np.ndarray  # uint64 root id per final component
    component: np.ndarray  # final component index per initial unit


def build_layers(
    layout: IdLayout,
    units: Units,
    edge_a: np.ndarray,
    edge_b: np.ndarray,
    allocate: Allocator,
    on_layer: Callable[[LayerNodes], None],
    *,
    start_layer: int = 2,
    on_progress: Callable[[int], None] | None = None,
) -> Hierarchy:
    """Group ``units`` joined by edges (unit indices) layer by layer from ``start_layer`` to
    the top; report each layer's nodes to ``on_layer``."""
    rep, keys, unit_sv = units.rep, units.keys, units.sv
    component = np.arange(len(rep), dtype=np.int64)
    ea, eb = edge_a, edge_b
    top = layout.n_layers
    for layer in range(start_layer, top + 1):
        chunk = layout.chunk_id_at_layer(unit_sv, layer)
        same = chunk[ea] == chunk[eb]
        labels, k = components(len(rep), ea[same], eb[same])
        del same
        ea, eb = labels[ea], labels[eb]
        keep = ea != eb
        ea, eb = ea[keep], eb[keep]
        del keep
        first = first_occurrences(labels, k)
        counts = np.bincount(labels, minlength=k)
        materialize = (counts >= 2) | (layer == 2) | (layer == top)
        nodes = _materialize(layer, labels, counts, materialize, rep, keys, chunk[first], allocate)
        on_layer(nodes)
        rep, keys = rep[first], keys[first]
        comps = np.flatnonzero(materialize)
        rep[comps] = nodes.ids
        keys[comps] = nodes.keys
        unit_sv = unit_sv[first]
        component = labels[component]
        if on_progress is not None:
            on_progress(layer)
    return Hierarchy(roots=rep, component=component)


def _materialize(
    layer: int,
    labels: np.ndarray,
    counts: np.ndarray,
    materialize: np.ndarray,
    rep: np.ndarray,
    keys: np.ndarray,
    comp_chunks: np.ndarray,
    allocate: Allocator,
) -> LayerNodes:
    members = np.flatnonzero(materialize[labels])
    # Stable sort keeps members in unit order within each component.
    members = members[np.argsort(labels[members], kind="stable")]
    comps = np.flatnonzero(materialize)
    ptr = ptr_from_counts(counts[comps])
    children = rep[members]
    ids, node_keys = allocate(layer, comp_chunks[comps], ptr, children)
    return LayerNodes(layer, ids, node_keys, ptr, children, keys[members])


def mint_in_chunks(
    chunk_ids: np.ndarray, start_after: np.ndarray | int
) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive segment ids per chunk, in input order: the i-th new node of a chunk gets
    ``start_after[chunk] + i + 1``. Returns (ids, sort order by id)."""
    order = np.argsort(chunk_ids, kind="stable")
    sorted_chunks = chunk_ids[order]
    new_group = np.ones(len(order), dtype=bool)
    new_group[1:] = sorted_chunks[1:] != sorted_chunks[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(order)), 0))
    rank = np.arange(len(order)) - group_start
    base = np.asarray(start_after, dtype=np.int64)
    if base.ndim:
        base = base[order]
    segments = (base + rank + 1).astype(np.uint64)
    ids = np.empty(len(order), dtype=np.uint64)
    ids[order] = sorted_chunks | segments
    return ids, order
