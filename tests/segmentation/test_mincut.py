"""Minimum cuts over affinity-weighted supervoxel graphs."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from opencave.segmentation.mincut import min_cut


def _cut(edges: list[tuple[int, int, float]], sources: list[int], sinks: list[int]):  # type: ignore[no-untyped-def]
    svs = np.unique([e[:2] for e in edges]).astype(np.uint64)
    a = np.array([e[0] for e in edges], np.uint64)
    b = np.array([e[1] for e in edges], np.uint64)
    aff = np.array([e[2] for e in edges])
    mask = min_cut(svs, a, b, aff, np.array(sources, np.uint64), np.array(sinks, np.uint64))
    return (
        None if mask is None else {(int(x), int(y)) for x, y in zip(a[mask], b[mask], strict=True)}
    )


def test_cuts_the_cheapest_set() -> None:
    # Two triangles joined by two bridges of 0.3 and 0.4, versus a 0.9 edge inside.
    edges = [
        (1, 2, 0.9),
        (2, 3, 1.0),
        (1, 3, 1.0),
        (4, 5, 1.0),
        (5, 6, 1.0),
        (4, 6, 1.0),
        (3, 4, 0.3),
        (2, 5, 0.4),
    ]
    assert _cut(edges, [1], [6]) == {(3, 4), (2, 5)}


def test_several_sources_and_sinks_and_infinite_edges() -> None:
    edges = [(1, 2, 1.0), (2, 3, 0.5), (3, 4, 1.0), (4, 5, np.inf)]
    assert _cut(edges, [1, 2], [4, 5]) == {(2, 3)}
    assert _cut([(1, 2, np.inf)], [1], [2]) is None


@pytest.mark.parametrize("seed", range(5))
def test_matches_networkx_on_random_graphs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 30
    pairs = {tuple(sorted(p)) for p in rng.integers(1, n + 1, (80, 2)).tolist() if p[0] != p[1]}
    edges = [(a, b, float(rng.choice([0.25, 0.5, 1.0]))) for a, b in sorted(pairs)]
    g = nx.Graph()
    g.add_weighted_edges_from(edges, weight="capacity")
    comp = max(nx.connected_components(g), key=len)
    edges = [e for e in edges if e[0] in comp]
    nodes = sorted(comp)
    cut = _cut(edges, nodes[:2], nodes[-2:])
    assert cut is not None
    value = sum(w for a, b, w in edges if (a, b) in cut)
    g = g.subgraph(comp).to_directed()
    g.add_edges_from(
        [("S", nodes[0]), ("S", nodes[1]), (nodes[-1], "T"), (nodes[-2], "T")],
        capacity=float("inf"),
    )
    assert value == pytest.approx(nx.minimum_cut_value(g, "S", "T"))
