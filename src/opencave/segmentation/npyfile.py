"""``.npy`` files written piece by piece, for arrays larger than memory.

The bulk builder streams its outputs: appends in order, zero-filled extensions, scattered
writes into what is already on disk, and reads back parts. Every access goes through
``pread``/``pwrite``-style file calls or a memory map that lives only for that access, so
the process never keeps gigabytes of pages mapped. The header has a fixed size (a valid
NPY 1.0 header padded with spaces) so the final shape can be written in place at the end;
until :meth:`NpyFile.close` the file reads as an empty array. An index file can start
narrow (``uint32``, half the disk) and be rewritten wider the first time a value outgrows it.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "a.npy"
>>> f = NpyFile(path, np.int64)
>>> f.append([1, 2, 3]); f.extend(2); f.scatter(np.array([3]), np.array([9]))
>>> f.close()
>>> np.load(path).tolist()
[1, 2, 3, 9, 0]
>>> g = NpyFile(path, np.uint8, wider=np.int64)
>>> g.append([1, 2]); g.append([300]); g.close()
>>> np.load(path).dtype.name, np.load(path).tolist()
('int64', [1, 2, 300])
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

#: Bytes of the header (magic, version, length, padded dict): a multiple of 64, as NumPy
#: aligns its own headers.
HEADER_BYTES = 128
_WIDEN_BLOCK = 1 << 22
_MAGIC = b"\x93NUMPY\x01\x00"


def _header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    descr = np.lib.format.dtype_to_descr(dtype)
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    room = HEADER_BYTES - len(_MAGIC) - 2
    body = text.ljust(room - 1).encode("latin1") + b"\n"
    if len(body) != room:
        raise ValueError(f"npy header too long for {shape}")
    return _MAGIC + room.to_bytes(2, "little") + body


class NpyFile:
    """A growing 1-d (or (n, *row) ) ``.npy`` file. With ``wider``, an integer ``dtype`` is
    only where the values start: the file is rewritten as ``wider`` once one does not fit."""

    def __init__(self, path: Path, dtype: object, row: tuple[int, ...] = (), *,
                 wider: object | None = None) -> None:
        self.path = Path(path)
        self.row = tuple(row)
        self.length = 0
        self.wider = None if wider is None else np.dtype(wider)
        self._set_dtype(np.dtype(dtype))
        self._file = open(self.path, "w+b")  # noqa: SIM115 (closed in close())
        self._file.write(_header(self.dtype, (0, *self.row)))

    def _set_dtype(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self._itemsize = dtype.itemsize * int(np.prod(self.row, dtype=np.int64))

    def _fit(self, values: object) -> None:
        """Widen the file first if ``values`` do not fit its dtype."""
        if self.wider is None:
            return
        values = np.asarray(values)
        limits = np.iinfo(self.dtype)
        if values.size and (values.min() < limits.min or values.max() > limits.max):
            self._widen()

    def _widen(self) -> None:
        """Rewrite the entries so far as :attr:`wider` (streamed, a block at a time)."""
        wider, self.wider = self.wider, None
        tmp = self.path.with_name(self.path.name + ".wider")
        with open(tmp, "wb") as out:
            out.write(_header(wider, (0, *self.row)))
            for start in range(0, self.length, _WIDEN_BLOCK):
                block = self.read(start, min(self.length, start + _WIDEN_BLOCK))
                out.write(np.ascontiguousarray(block, dtype=wider).data)
        self._file.close()
        os.replace(tmp, self.path)
        self._file = open(self.path, "r+b")  # noqa: SIM115 (closed in close())
        self._set_dtype(wider)

    def _offset(self, index: int) -> int:
        return HEADER_BYTES + index * self._itemsize

    def append(self, values: object) -> None:
        self._fit(values)
        arr = np.ascontiguousarray(values, dtype=self.dtype).reshape(-1, *self.row)
        self._file.seek(self._offset(self.length))
        self._file.write(arr.data)
        self.length += len(arr)

    def extend(self, count: int) -> None:
        """Grow by ``count`` zero entries (a sparse extension: nothing is written)."""
        self._file.flush()
        self.length += int(count)
        os.truncate(self.path, self._offset(self.length))

    def read(self, start: int, stop: int) -> np.ndarray:
        """A copy of entries ``[start, stop)``."""
        count = max(0, stop - start)
        self._file.flush()
        self._file.seek(self._offset(start))
        data = np.fromfile(self._file, dtype=self.dtype, count=count * (self._itemsize
                                                                          // self.dtype.itemsize))
        return data.reshape(-1, *self.row)

    @contextmanager
    def _mapped(self, start: int, stop: int, *, writable: bool = False) -> Iterator[np.ndarray]:
        """Entries ``[start, stop)`` memory-mapped for the duration of the block."""
        if stop <= start:
            yield np.zeros((0, *self.row), dtype=self.dtype)
            return
        self._file.flush()
        view = np.memmap(self.path, dtype=self.dtype, mode="r+" if writable else "r",
                         offset=self._offset(start), shape=(stop - start, *self.row))
        try:
            yield view
        finally:
            if writable:
                view.flush()
            # The map closes when the last reference goes (callers keep none): its resident
            # pages then stop counting for this process.
            del view

    def take(self, positions: np.ndarray) -> np.ndarray:
        """Entries at ``positions`` (any order)."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) == 0:
            return np.zeros((0, *self.row), dtype=self.dtype)
        lo, hi = int(positions.min()), int(positions.max()) + 1
        with self._mapped(lo, hi) as view:
            return np.array(view[positions - lo])

    def searchsorted(self, values: np.ndarray) -> np.ndarray:
        """``np.searchsorted`` over the (sorted) entries so far."""
        with self._mapped(0, self.length) as view:
            return np.searchsorted(view, values)

    def scatter(self, positions: np.ndarray, values: np.ndarray) -> None:
        """Overwrite the entries at ``positions`` (all below :attr:`length`)."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) == 0:
            return
        self._fit(values)
        lo, hi = int(positions.min()), int(positions.max()) + 1
        with self._mapped(lo, hi, writable=True) as view:
            view[positions - lo] = values

    def close(self) -> None:
        """Write the final shape into the header; the file is then a plain ``.npy``."""
        if self._file.closed:
            return
        self._file.seek(0)
        self._file.write(_header(self.dtype, (self.length, *self.row)))
        self._file.close()

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)
