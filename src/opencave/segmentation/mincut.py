"""Minimum source/sink cut over a segment's atomic edges (capacity = affinity).

scipy's ``maximum_flow`` (Dinic, in C) needs integer capacities, so affinities are scaled to
integers whose sum fits comfortably in int32; ties may resolve differently from a float
solver but the cut is minimal up to that rounding. Sources and sinks hang off a super-source
and a super-sink with capacities no finite cut can reach; infinite affinities get the same
capacity, so they are never cut.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from .arrays import unique

#: Total capacity budget of the finite edges (leaves headroom below 2**31).
_BUDGET = 2**29
_MAX_SCALE = 1_000_000


def min_cut(
    svs: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    affinity: np.ndarray,
    sources: np.ndarray,
    sinks: np.ndarray,
) -> np.ndarray | None:
    """Mask of the edges ``a[i]-b[i]`` (ids within sorted ``svs``) to remove so that no
    source stays connected to a sink; ``None`` if they cannot be separated.

    >>> svs = np.array([1, 2, 3], dtype=np.uint64)
    >>> a, b = np.array([1, 2], dtype=np.uint64), np.array([2, 3], dtype=np.uint64)
    >>> min_cut(svs, a, b, np.array([0.9, 0.1]), np.array([1]), np.array([3])).tolist()
    [False, True]
    """
    n = len(svs)
    ia, ib = np.searchsorted(svs, a), np.searchsorted(svs, b)
    cap, infinite = _capacities(np.asarray(affinity, dtype=np.float64))
    src, snk = n, n + 1
    s_idx = np.searchsorted(svs, unique(np.asarray(sources, dtype=np.uint64)))
    t_idx = np.searchsorted(svs, unique(np.asarray(sinks, dtype=np.uint64)))
    rows = np.concatenate([ia, ib, np.full(len(s_idx), src), t_idx])
    cols = np.concatenate([ib, ia, s_idx, np.full(len(t_idx), snk)])
    data = np.concatenate([cap, cap, np.full(len(s_idx), infinite), np.full(len(t_idx), infinite)])
    graph = sparse.csr_matrix(
        (data.astype(np.int32), (rows.astype(np.int32), cols.astype(np.int32))),
        shape=(n + 2, n + 2),
    )
    graph.sum_duplicates()
    result = maximum_flow(graph, src, snk, method="dinic")
    if result.flow_value >= infinite:
        return None
    residual = (graph - result.flow).tocsr()
    residual.data = np.where(residual.data > 0, residual.data, 0)
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, src, directed=True, return_predecessors=False)
    on_source_side = np.zeros(n + 2, dtype=bool)
    on_source_side[reached] = True
    return on_source_side[ia] != on_source_side[ib]


def _capacities(affinity: np.ndarray) -> tuple[np.ndarray, int]:
    finite = np.isfinite(affinity)
    peak = float(affinity[finite].max()) if finite.any() else 1.0
    peak = peak if peak > 0 else 1.0
    scale = max(1, min(_MAX_SCALE, _BUDGET // max(1, int(finite.sum()))))
    cap = np.ones(len(affinity), dtype=np.int64)
    cap[finite] = np.maximum(1, np.rint(affinity[finite] / peak * scale)).astype(np.int64)
    infinite = int(cap[finite].sum()) + 1
    cap[~finite] = infinite
    return cap, infinite
