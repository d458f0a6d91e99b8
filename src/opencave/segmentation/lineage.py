"""Root-id history: latest roots, root timestamps, the lineage graph, past/future id maps
and delta roots, with PyChunkedGraph's semantics (``lineage.py``, ``segmenthistory.py``).

State "at T" includes the operations stamped T: a root is latest at T when it was created
at or before T and not superseded at or before T.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from ..errors import InvalidRequest
from .arrays import EMPTY_IDS, unique
from .view import GraphView

U64 = np.uint64


def check_roots(view: GraphView, ids: np.ndarray) -> None:
    """Raise unless every nonzero id is a root-layer id."""
    nonzero = ids[ids != 0]
    bad = nonzero[view.layout.layer(nonzero) != view.top]
    if len(bad):
        raise InvalidRequest(f"not root ids (layer {view.top}): {bad[:5].tolist()}")


def is_latest(view: GraphView, ids: np.ndarray, ts: int) -> np.ndarray:
    known, created, _ = view.created(ids)
    superseded, _, _ = view.superseded(ids, ts)
    return known & (created <= ts) & ~superseded & (ids != 0)


def root_timestamps(view: GraphView, ids: np.ndarray, latest: bool, ts: int) -> np.ndarray:
    """Creation time of each root (µs); with ``latest``, the time it stopped being latest,
    or ``ts`` when it still is (a root created after ``ts`` reports its creation time)."""
    _, created, _ = view.created(ids)
    if not latest:
        return created
    superseded, when, _ = view.superseded(ids, ts)
    out = np.where(superseded, when, ts)
    return np.where(created > ts, created, out)


def latest_roots(view: GraphView, root: int, ts: int) -> np.ndarray:
    """The descendants of ``root`` that are latest at ``ts`` (``[root]`` if it is)."""
    front, seen, out = np.array([root], dtype=U64), {int(root)}, []
    while len(front):
        superseded, _, _ = view.superseded(front, ts)
        out.append(front[~superseded])
        succ = view.successors(front[superseded])
        nxt = [n for n in unique(succ["new"]).tolist() if n not in seen]
        seen.update(nxt)
        front = np.array(nxt, dtype=U64)
    return unique(np.concatenate(out)) if out else EMPTY_IDS.copy()


def lineage_graph(view: GraphView, roots: np.ndarray, past: int, future: int) -> nx.DiGraph:
    """Edges old -> new reached from ``roots``: backwards through roots created after
    ``past``, forwards through supersessions at or before ``future``. Node attributes:
    ``timestamp`` (creation, POSIX seconds) and ``operation_id`` (the operation that
    superseded the node within the window, else the one that created it; 0 for base)."""
    graph = nx.DiGraph()
    roots = unique(np.asarray(roots, dtype=U64))
    graph.add_nodes_from(int(r) for r in roots)
    back, fwd = roots, roots
    seen_back, seen_fwd = set(roots.tolist()), set(roots.tolist())
    while len(back) or len(fwd):
        _, created, _ = view.created(back)
        pred = view.predecessors(back[created > past])
        graph.add_edges_from(zip(pred["old"].tolist(), pred["new"].tolist(), strict=True))
        back = _unseen(pred["old"], seen_back)
        superseded, _, _ = view.superseded(fwd, future)
        succ = view.successors(fwd[superseded])
        graph.add_edges_from(zip(succ["old"].tolist(), succ["new"].tolist(), strict=True))
        fwd = _unseen(succ["new"], seen_fwd)
    _annotate(view, graph, future)
    return graph


def _unseen(ids: np.ndarray, seen: set[int]) -> np.ndarray:
    fresh = [i for i in unique(ids).tolist() if i not in seen]
    seen.update(fresh)
    return np.array(fresh, dtype=U64)


def _annotate(view: GraphView, graph: nx.DiGraph, future: int) -> None:
    nodes = np.array(list(graph.nodes), dtype=U64)
    if len(nodes) == 0:
        return
    _, created, created_op = view.created(nodes)
    superseded, _, sup_op = view.superseded(nodes, future)
    op = np.where(superseded, sup_op, created_op)
    for node, ts, op_id in zip(nodes.tolist(), created.tolist(), op.tolist(), strict=True):
        graph.nodes[node]["timestamp"] = ts / 1e6
        graph.nodes[node]["operation_id"] = int(op_id)


def past_future(
    view: GraphView, roots: np.ndarray, past: int, future: int
) -> tuple[dict[int, list[int]], dict[int, int]]:
    """``past_id_map``: for each root, its ancestors that were latest at ``past`` (itself if
    it already existed then). ``future_id_map``: for each such past id, the root it became
    when it only ever merged into bigger segments (splits make the future ambiguous)."""
    graph = lineage_graph(view, roots, past, future)
    past_map: dict[int, list[int]] = {}
    for root in unique(roots).tolist():
        ancestors = nx.ancestors(graph, root)
        if not ancestors:
            past_map[root] = [root]
        else:
            past_map[root] = sorted(a for a in ancestors if graph.in_degree(a) == 0)
    future_map: dict[int, int] = {}
    for past_id in sorted({p for ids in past_map.values() for p in ids}):
        target = _unambiguous_future(view, graph, past_id)
        if target is not None:
            future_map[past_id] = target
    return past_map, future_map


def _unambiguous_future(view: GraphView, graph: nx.DiGraph, past_id: int) -> int | None:
    """Follow ``past_id`` forward through the window while every step is a merge (one
    successor, which has several predecessors); a split makes the future ambiguous."""
    current = past_id
    while True:
        succ = list(graph.successors(current))
        if not succ:
            return current
        only = np.array([current], dtype=U64)
        if len(succ) != 1 or len(unique(view.successors(only)["new"])) != 1:
            return None
        nxt = np.array(succ, dtype=U64)
        if len(unique(view.predecessors(nxt)["old"])) < 2:
            return None
        current = succ[0]


def delta_roots(view: GraphView, past: int, future: int) -> tuple[np.ndarray, np.ndarray]:
    """Roots superseded (old) and created (new) by operations stamped in ``(past, future]``."""
    if future < past:
        raise InvalidRequest("timestamp_future must not be earlier than timestamp_past")
    rows = view.overlay.lineage_ts.between(past, future)
    return unique(rows["old"]), unique(rows["new"])
