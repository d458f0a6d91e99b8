"""Records spread over append-only files by key range: an external distribution sort.

The bulk builder cannot hold every edge in memory. It appends each batch's records to the
file of their key range (a range of supervoxel or unit positions) and later reads one range
at a time, which is all the grouping of that range needs.

>>> import tempfile, pathlib
>>> b = Buckets(pathlib.Path(tempfile.mkdtemp()), np.array([0, 10]), np.int64)
>>> b.add(np.array([12, 3, 15]), np.array([12, 3, 15]))
>>> b.read(0).tolist(), b.read(1).tolist()
([3], [12, 15])
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


class Buckets:
    """Bucket ``i`` holds the records whose key lies in ``[cuts[i], cuts[i + 1])``; within a
    bucket records keep the order in which they were added."""

    def __init__(self, directory: Path, cuts: np.ndarray, dtype: object) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cuts = np.asarray(cuts, dtype=np.int64)
        self.dtype = np.dtype(dtype)
        self.sizes = np.zeros(len(self.cuts), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.cuts)

    def _path(self, index: int) -> Path:
        return self.directory / f"{index:06d}.bin"

    def add(self, keys: np.ndarray, records: np.ndarray) -> None:
        if len(keys) == 0:
            return
        which = np.searchsorted(self.cuts, keys, side="right") - 1
        if np.any(which[1:] < which[:-1]):
            order = np.argsort(which, kind="stable")
            which, records = which[order], records[order]
        edges = np.flatnonzero(np.diff(which)) + 1
        for lo, hi in zip(np.concatenate([[0], edges]), np.concatenate([edges, [len(which)]]),
                          strict=True):
            index = int(which[lo])
            with open(self._path(index), "ab") as f:
                f.write(np.ascontiguousarray(records[lo:hi], dtype=self.dtype).data)
            self.sizes[index] += hi - lo

    def read(self, index: int) -> np.ndarray:
        path = self._path(index)
        if not path.exists():
            return np.zeros(0, dtype=self.dtype)
        return np.fromfile(path, dtype=self.dtype)

    def drop(self, index: int) -> None:
        self._path(index).unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
