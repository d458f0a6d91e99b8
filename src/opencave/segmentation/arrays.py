"""Small vectorized array helpers shared by the builder, the overlay and the edits."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

U64 = np.uint64
EMPTY_IDS = np.zeros(0, dtype=U64)


def ranges(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ``arange(start, stop)`` for each pair, and which pair each index came from.

    >>> idx, owner = ranges(np.array([2, 7]), np.array([4, 8]))
    >>> idx.tolist(), owner.tolist()
    ([2, 3, 7], [0, 0, 1])
    """
    starts = np.asarray(starts, dtype=np.int64)
    lens = np.asarray(stops, dtype=np.int64) - starts
    total = int(lens.sum())
    owner = np.repeat(np.arange(len(starts), dtype=np.int64), lens)
    if total == 0:
        return np.zeros(0, dtype=np.int64), owner
    base = np.repeat(starts - (np.cumsum(lens) - lens), lens)
    return base + np.arange(total, dtype=np.int64), owner


def ptr_from_counts(counts: np.ndarray) -> np.ndarray:
    ptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ptr


def canonical_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel so that labels appear in order of first occurrence (0, 1, 2, ...).

    Deterministic ids depend on this order; scipy already labels that way, which the fast
    check confirms without sorting."""
    if len(labels) == 0:
        return labels, 0
    running = np.maximum.accumulate(labels)
    if labels[0] == 0 and np.all(np.diff(running) <= 1):
        return labels, int(running[-1]) + 1
    uniq, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    return rank[inverse].astype(labels.dtype), len(uniq)


def first_occurrences(labels: np.ndarray, n_labels: int) -> np.ndarray:
    """Position of the first occurrence of each label of a canonical labelling."""
    if n_labels == 0:
        return np.zeros(0, dtype=np.int64)
    running = np.maximum.accumulate(labels)
    is_first = np.empty(len(labels), dtype=bool)
    is_first[0] = True
    is_first[1:] = labels[1:] > running[:-1]
    return np.flatnonzero(is_first)


def components(n: int, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """Canonical connected-component labels of ``n`` nodes joined by edges ``a[i]-b[i]``."""
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    if len(a) == 0:
        return np.arange(n, dtype=np.int64), n
    index_dtype = np.int32 if n < 2**31 - 1 else np.int64
    data = np.ones(len(a), dtype=np.int8)
    graph = sparse.csr_matrix((data, (a.astype(index_dtype), b.astype(index_dtype))), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return canonical_labels(labels.astype(np.int64))


def components_in_batches(
    n: int, a: np.ndarray, b: np.ndarray, batch_nodes: int
) -> tuple[np.ndarray, int]:
    """Like :func:`components` for graphs whose components never straddle the given batches.

    ``a`` must be sorted and every edge must lie within one batch of ``batch_nodes``
    consecutive nodes (callers cut batches at chunk boundaries). Bounds scipy's memory."""
    bounds = _batch_bounds(n, a, b, batch_nodes)
    labels = np.empty(n, dtype=np.int64)
    offset = 0
    for lo, hi in pairwise(bounds):
        e_lo, e_hi = np.searchsorted(a, [lo, hi])
        part, k = components(int(hi - lo), a[e_lo:e_hi] - lo, b[e_lo:e_hi] - lo)
        labels[lo:hi] = part + offset
        offset += k
    return labels, offset


def _batch_bounds(n: int, a: np.ndarray, b: np.ndarray, batch_nodes: int) -> list[int]:
    """Batch cut points such that no edge crosses a cut (edges sorted by ``a``)."""
    reach = np.maximum.accumulate(b) if len(b) else b

    def furthest(cut: int) -> int:
        k = int(np.searchsorted(a, cut))
        return int(reach[k - 1]) if k else -1

    cuts = [0]
    while cuts[-1] < n:
        target = min(n, cuts[-1] + batch_nodes)
        # Move the cut right until no edge starting before it ends at or after it.
        while target < n and furthest(target) >= target:
            target = furthest(target) + 1
        cuts.append(min(n, target))
    return cuts


def lookup_sorted(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Index of each needle in a sorted array, -1 where absent."""
    if len(haystack) == 0:
        return np.full(len(needles), -1, dtype=np.int64)
    pos = np.searchsorted(haystack, needles)
    pos_c = np.minimum(pos, len(haystack) - 1)
    return np.where(haystack[pos_c] == needles, pos_c, -1).astype(np.int64)


def encode_array(arr: object, dtype: str = "<u8") -> bytes:
    return np.ascontiguousarray(np.asarray(arr), dtype=dtype).tobytes()


def decode_array(blob: bytes | None, dtype: str = "<u8", width: int = 0) -> np.ndarray:
    out = np.frombuffer(blob, dtype=dtype).copy() if blob else np.zeros(0, dtype=dtype)
    if width:
        out = out.reshape(-1, width)
    return out.astype(np.dtype(dtype).newbyteorder("="))
