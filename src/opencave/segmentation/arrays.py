"""Small vectorized array helpers shared by the builder, the overlay and the edits."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

U64 = np.uint64
EMPTY_IDS = np.zeros(0, dtype=U64)


def unique(values: object) -> np.ndarray:
    """Sorted unique values of a 1-d array.

    Plain ``np.unique`` takes a hash-based path in NumPy 2.3+ that is an order of magnitude
    slower than sorting on large id arrays, so the package uses this instead.

    >>> unique(np.array([3, 1, 3, 2])).tolist()
    [1, 2, 3]
    """
    arr = np.sort(np.asarray(values).reshape(-1))
    if len(arr) < 2:
        return arr
    keep = np.empty(len(arr), dtype=bool)
    keep[0] = True
    np.not_equal(arr[1:], arr[:-1], out=keep[1:])
    return arr[keep]


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
