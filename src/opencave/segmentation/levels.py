"""Immutable, append-only sorted indexes for the edit overlay (a tiny LSM tree).

Edits append a few hundred records at a time, always with timestamps no older than anything
already stored. Re-sorting one big array per edit would cost O(total); instead records live
in a few sorted *levels* of geometrically decreasing size, merged when a newer level grows
to the size of the one before it. Newer levels hold newer records, so "the newest record
with ts <= T" is found by asking the levels from newest to oldest.

Every method returns a new object and never mutates arrays, so readers can keep using the
snapshot they hold while a writer publishes the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .arrays import ptr_from_counts, ranges

Columns = dict[str, np.ndarray]


def _take(cols: Mapping[str, np.ndarray], index: np.ndarray) -> Columns:
    return {name: col[index] for name, col in cols.items()}


@dataclass(frozen=True)
class KeyedLog:
    """Records (dict of equal-length columns) sorted by ``key`` within each level; records
    of one key keep their insertion order, which is timestamp order.

    >>> log = KeyedLog.empty("child", {"child": "u8", "ts": "i8", "parent": "u8"})
    >>> log = log.appended({"child": np.array([5], "u8"), "ts": np.array([10]),
    ...                     "parent": np.array([50], "u8")})
    >>> log = log.appended({"child": np.array([5], "u8"), "ts": np.array([20]),
    ...                     "parent": np.array([60], "u8")})
    >>> found, rows = log.last_at(np.array([5, 6], "u8"), 15)
    >>> found.tolist(), rows["parent"][found].tolist()
    ([True, False], [50])
    """

    key: str
    dtypes: tuple[tuple[str, str], ...]
    levels: tuple[Columns, ...] = ()

    @classmethod
    def empty(cls, key: str, dtypes: Mapping[str, str]) -> KeyedLog:
        return cls(key, tuple(dtypes.items()))

    def __len__(self) -> int:
        return sum(len(level[self.key]) for level in self.levels)

    def appended(self, batch: Mapping[str, np.ndarray]) -> KeyedLog:
        cols = {name: np.asarray(batch[name]).astype(dt) for name, dt in self.dtypes}
        if len(cols[self.key]) == 0:
            return self
        order = np.argsort(cols[self.key], kind="stable")
        levels = [*self.levels, _take(cols, order)]
        # Merge while the newest level is at least half the size of the one before it.
        while len(levels) >= 2 and 2 * len(levels[-1][self.key]) >= len(levels[-2][self.key]):
            newer = levels.pop()
            older = levels.pop()
            merged = {n: np.concatenate([older[n], newer[n]]) for n, _ in self.dtypes}
            levels.append(_take(merged, np.argsort(merged[self.key], kind="stable")))
        return KeyedLog(self.key, self.dtypes, tuple(levels))

    def _empty_rows(self, n: int) -> Columns:
        return {name: np.zeros(n, dtype=dt) for name, dt in self.dtypes}

    def last_at(self, keys: np.ndarray, ts_max: int, ts: str = "ts") -> tuple[np.ndarray, Columns]:
        """For each key, the newest record with ``ts <= ts_max``: (found mask, rows)."""
        found = np.zeros(len(keys), dtype=bool)
        rows = self._empty_rows(len(keys))
        for level in reversed(self.levels):
            todo = np.flatnonzero(~found)
            if len(todo) == 0:
                break
            col = level[self.key]
            wanted = keys[todo]
            lo = np.searchsorted(col, wanted, side="left")
            # Most keys have no record: test for a hit before looking for the range end.
            has = col[np.minimum(lo, len(col) - 1)] == wanted
            todo, lo = todo[has], lo[has]
            hi = np.searchsorted(col, wanted[has], side="right")
            idx = _last_leq(level[ts], lo, hi, ts_max)
            ok = idx >= 0
            for name, _ in self.dtypes:
                rows[name][todo[ok]] = level[name][idx[ok]]
            found[todo[ok]] = True
        return found, rows

    def matching(self, keys: np.ndarray) -> Columns:
        """Every record whose key is in ``keys`` (sorted unique), oldest level first."""
        parts = []
        for level in self.levels:
            col = level[self.key]
            lo = np.searchsorted(col, keys, side="left")
            hi = np.searchsorted(col, keys, side="right")
            idx, _ = ranges(lo, hi)
            parts.append(_take(level, idx))
        return self._concat(parts)

    def between(self, lo: int, hi: int) -> Columns:
        """Records with ``lo < key <= hi`` (for logs keyed by timestamp)."""
        parts = []
        for level in self.levels:
            col = level[self.key]
            a, b = np.searchsorted(col, [lo, hi], side="right")
            parts.append({n: c[a:b] for n, c in level.items()})
        return self._concat(parts)

    def all(self) -> Columns:
        return self._concat(list(self.levels))

    def _concat(self, parts: list[Columns]) -> Columns:
        if not parts:
            return self._empty_rows(0)
        return {n: np.concatenate([p[n] for p in parts]) for n, _ in self.dtypes}


def _last_leq(ts: np.ndarray, lo: np.ndarray, hi: np.ndarray, ts_max: int) -> np.ndarray:
    """Vectorized bisection: last index in ``[lo, hi)`` with ``ts <= ts_max``, else -1.
    Timestamps are sorted within each range."""
    out = np.full(len(lo), -1, dtype=np.int64)
    if len(lo) == 0:
        return out
    # Fast path for "now"-like queries: the newest record usually qualifies.
    last_ok = ts[hi - 1] <= ts_max
    out[last_ok] = hi[last_ok] - 1
    rest = np.flatnonzero(~last_ok)
    a, b = lo[rest].copy(), hi[rest].copy() - 1
    while True:
        active = a < b
        if not active.any():
            break
        mid = (a + b) // 2
        go_right = active & (ts[mid] <= ts_max)
        a = np.where(go_right, mid + 1, a)
        b = np.where(active & ~go_right, mid, b)
    # a is now the first index with ts > ts_max (within [lo, hi - 1]).
    out[rest] = np.where(a > lo[rest], a - 1, -1)
    return out


@dataclass(frozen=True)
class NodeLevel:
    ids: np.ndarray  # sorted
    created: np.ndarray
    operation: np.ndarray
    ptr: np.ndarray
    children: np.ndarray


@dataclass(frozen=True)
class NodeLog:
    """Nodes created by edits: id, creation time, operation and (immutable) children."""

    levels: tuple[NodeLevel, ...] = ()

    def __len__(self) -> int:
        return sum(len(lv.ids) for lv in self.levels)

    def appended(
        self,
        ids: np.ndarray,
        created: np.ndarray,
        operation: np.ndarray,
        ptr: np.ndarray,
        children: np.ndarray,
    ) -> NodeLog:
        if len(ids) == 0:
            return self
        levels = [*self.levels, _sorted_level(ids, created, operation, ptr, children)]
        while len(levels) >= 2 and 2 * len(levels[-1].ids) >= len(levels[-2].ids):
            newer, older = levels.pop(), levels.pop()
            ids_m = np.concatenate([older.ids, newer.ids])
            counts = np.concatenate([np.diff(older.ptr), np.diff(newer.ptr)])
            levels.append(
                _sorted_level(
                    ids_m,
                    np.concatenate([older.created, newer.created]),
                    np.concatenate([older.operation, newer.operation]),
                    ptr_from_counts(counts),
                    np.concatenate([older.children, newer.children]),
                )
            )
        return NodeLog(tuple(levels))

    def find(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(level index or -1, row within level) for each id."""
        level_of = np.full(len(ids), -1, dtype=np.int64)
        row = np.zeros(len(ids), dtype=np.int64)
        for i, lv in enumerate(self.levels):
            if len(lv.ids) == 0:
                continue
            pos = np.minimum(np.searchsorted(lv.ids, ids), len(lv.ids) - 1)
            hit = (lv.ids[pos] == ids) & (level_of < 0)
            level_of[hit] = i
            row[hit] = pos[hit]
        return level_of, row

    def created(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found mask, creation timestamps, creating operation) for each id."""
        level_of, row = self.find(ids)
        ts = np.zeros(len(ids), dtype=np.int64)
        op = np.zeros(len(ids), dtype=np.int64)
        for i, lv in enumerate(self.levels):
            sel = level_of == i
            ts[sel] = lv.created[row[sel]]
            op[sel] = lv.operation[row[sel]]
        return level_of >= 0, ts, op

    def children(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found mask, concatenated children, index of the queried id per child)."""
        level_of, row = self.find(ids)
        kids, owners = [], []
        for i, lv in enumerate(self.levels):
            sel = np.flatnonzero(level_of == i)
            idx, owner = ranges(lv.ptr[row[sel]], lv.ptr[row[sel] + 1])
            kids.append(lv.children[idx])
            owners.append(sel[owner])
        if not kids:
            return level_of >= 0, np.zeros(0, np.uint64), np.zeros(0, np.int64)
        return level_of >= 0, np.concatenate(kids), np.concatenate(owners)

    def child_counts(self, ids: np.ndarray) -> np.ndarray:
        level_of, row = self.find(ids)
        out = np.zeros(len(ids), dtype=np.int64)
        for i, lv in enumerate(self.levels):
            sel = level_of == i
            out[sel] = lv.ptr[row[sel] + 1] - lv.ptr[row[sel]]
        return out


def _sorted_level(ids, created, operation, ptr, children) -> NodeLevel:  # type: ignore[no-untyped-def]
    order = np.argsort(ids, kind="stable")
    idx, _ = ranges(ptr[:-1][order], ptr[1:][order])
    return NodeLevel(
        ids=np.asarray(ids, dtype=np.uint64)[order],
        created=np.asarray(created, dtype=np.int64)[order],
        operation=np.asarray(operation, dtype=np.int64)[order],
        ptr=ptr_from_counts(np.diff(ptr)[order]),
        children=np.asarray(children, dtype=np.uint64)[idx],
    )
