"""Shared helpers for the segmentation tests: small layouts, a brute-force model (networkx
components of the active edge set over time) and structural checks of the hierarchy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import networkx as nx
import numpy as np

from opencave.segmentation import ChunkGeometry, IdLayout, SegmentationGraph
from opencave.storage import LiveStore
from opencave.timestamps import to_micros

T0 = datetime(2023, 1, 1, tzinfo=UTC)
LAYOUT = IdLayout(n_layers=6, spatial_bits=3)
GEOMETRY = ChunkGeometry(voxel_offset=(0, 0, 0), chunk_size=(64, 64, 32), resolution=(8, 8, 40))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def supervoxels(chunks: list[tuple[int, int, int]], per_chunk: int | list[int]) -> np.ndarray:
    """Supervoxel ids numbered 1..k in each of the given layer-1 chunks."""
    counts = [per_chunk] * len(chunks) if isinstance(per_chunk, int) else per_chunk
    parts = [
        LAYOUT.encode(1, x, y, z, np.arange(1, k + 1))
        for (x, y, z), k in zip(chunks, counts, strict=True)
    ]
    return np.concatenate(parts).astype(np.uint64)


def build(
    directory: Path,
    svs: np.ndarray,
    edges: object,
    affinities: object | None = None,
    live: LiveStore | None = None,
    table_id: str = "test_graph",
) -> SegmentationGraph:
    live = live or LiveStore.in_directory(directory)
    return SegmentationGraph.create(
        live,
        directory / table_id,
        table_id=table_id,
        layout=LAYOUT,
        geometry=GEOMETRY,
        supervoxel_ids=svs,
        edges=edges,
        affinities=affinities,
        timestamp=T0,
    )


def partition(labels: np.ndarray, items: np.ndarray) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for label, item in zip(labels.tolist(), items.tolist(), strict=True):
        groups.setdefault(label, set()).add(item)
    return {frozenset(g) for g in groups.values()}


class Model:
    """The truth: which atomic edges are active over time (with affinities)."""

    def __init__(self, svs: np.ndarray, edges: np.ndarray, affinities: np.ndarray) -> None:
        self.svs = [int(s) for s in svs]
        self.active: dict[tuple[int, int], float] = {}
        for (a, b), aff in zip(
            np.asarray(edges).tolist(), np.asarray(affinities).tolist(), strict=True
        ):
            if a != b:
                key = (min(a, b), max(a, b))
                self.active[key] = max(float(aff), self.active.get(key, 0.0))
        self.history: list[tuple[int, dict[tuple[int, int], float]]] = [
            (to_micros(T0), dict(self.active))
        ]

    def commit(self, when: datetime) -> None:
        self.history.append((to_micros(when), dict(self.active)))

    def edges_at(self, when: datetime) -> dict[tuple[int, int], float]:
        ts = to_micros(when)
        return [edges for t, edges in self.history if t <= ts][-1]

    def graph(self, edges: dict[tuple[int, int], float] | None = None) -> nx.Graph:
        g = nx.Graph()
        g.add_nodes_from(self.svs)
        for (a, b), aff in (self.active if edges is None else edges).items():
            g.add_edge(a, b, capacity=aff)
        return g

    def components(self, when: datetime | None = None) -> set[frozenset[int]]:
        edges = None if when is None else self.edges_at(when)
        return {frozenset(c) for c in nx.connected_components(self.graph(edges))}

    def component_of(self, sv: int) -> frozenset[int]:
        return frozenset(nx.node_connected_component(self.graph(), sv))

    def expected_structure(self, when: datetime) -> set[tuple[int, frozenset[int]]]:
        """Every node by definition: components within each layer's chunks, materialized at
        layer 2, at the top, and wherever they join >= 2 components of the layer below."""
        edges = self.edges_at(when)
        expected: set[tuple[int, frozenset[int]]] = set()
        label = {sv: sv for sv in self.svs}
        for layer in range(2, LAYOUT.n_layers + 1):
            chunk = {sv: int(LAYOUT.chunk_id_at_layer(sv, layer)) for sv in self.svs}
            g = nx.Graph()
            g.add_nodes_from(self.svs)
            g.add_edges_from(e for e in edges if chunk[e[0]] == chunk[e[1]])
            new_label = {}
            for comp in nx.connected_components(g):
                members = {label[sv] for sv in comp}
                if layer in (2, LAYOUT.n_layers) or len(members) >= 2:
                    expected.add((layer, frozenset(comp)))
                for sv in comp:
                    new_label[sv] = min(comp)
            label = new_label
        return expected


def actual_structure(
    graph: SegmentationGraph, when: datetime, svs: np.ndarray
) -> set[tuple[int, frozenset[int]]]:
    """Walk every root at ``when`` down to its supervoxels, checking the invariants, and
    return its nodes as (layer, leaves)."""
    roots = np.unique(graph.get_roots(svs, when))
    found: set[tuple[int, frozenset[int]]] = set()
    for root in roots.tolist():
        _walk(graph, root, when, found)
    return found


def _walk(graph: SegmentationGraph, node: int, when: datetime, found: set) -> frozenset[int]:
    layout = graph.layout
    layer = int(layout.layer(node))
    if layer == 1:
        return frozenset([node])
    kids = graph.get_children(node)
    assert len(kids) >= 1
    kid_layers = layout.layer(kids)
    assert np.all(kid_layers < layer), "parents' layers strictly increase"
    if layer == 2:
        assert np.all(kid_layers == 1), "layer-2 nodes hold supervoxels"
    if 3 <= layer < layout.n_layers:
        assert len(kids) >= 2, f"layer-{layer} node {node} has a single child"
    if layer < layout.n_layers:
        assert np.all(layout.chunk_id_at_layer(kids, layer) == layout.chunk_id(node)), (
            "children lie in their parent's chunk"
        )
    # Parent pointers agree with the children lists at this time.
    assert np.all(graph.get_roots(kids, when, stop_layer=layer) == node)
    leaves = frozenset().union(*(_walk(graph, int(k), when, found) for k in kids))
    found.add((layer, leaves))
    return leaves
