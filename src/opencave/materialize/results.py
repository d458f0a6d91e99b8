"""Finished query results kept on disk, so that a query asked again is read from a file
instead of being run again.

A version never changes: every file has a name of its own and is never rewritten with other
rows, so a query's SQL, its bound values and the files it reads decide its rows for good
(live queries, which read changes held in memory, and random samples are never kept). Repeats
are common — the tutorials' graph query among the proofread neurons, a class running the same
notebook, a dashboard — and a large one costs seconds of CPU each time: at 3.4×10^8 synapses,
2.3 s of the server's CPU for the 2.8 M synapses out of 2,000 neurons.

Entries are Arrow IPC files (the file format, whose footer says a file is whole) named by a
hash of the query and of the DuckDB and opencave versions that ran it. A result is written
as it streams to its first client, so keeping it costs no second pass; one closed early (the
client went away), failed, or grown past a quarter of the budget is not kept. A repeat
sends the IPC stream the file holds as it is (0.15 s of CPU for those 2.8 M synapses). The least
recently read entries go when the entries outgrow the budget. Each process keeps its own
account of the directory's entries, so two servers on one data directory may together hold
up to twice the budget.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import pyarrow as pa

from .. import __version__
from ..storage.files import temporary_path
from .engine import EncodedStream, ResultStream
from .query import CompiledQuery

SUFFIX = ".arrow"
#: An Arrow IPC file is its magic (6 bytes, padded to 8), the IPC stream of its rows, a
#: footer, the footer's length (int32) and the magic again: the stream inside is what a
#: client reading ``data.arrow`` expects, byte for byte.
IPC_FILE_START = 8
_FILE_MAGIC = b"ARROW1"
#: A request waits for another recording the same result while the recording goes on (it
#: ends when its client has read the result); when no batch was written for this long, it
#: runs the query itself. Not a cap on the whole wait: on a slow disk, requests giving up
#: after a fixed time ran the query again on the same disk and took longer still (Q5 at
#: 3.4e8, a 60 s cap: 85-95 s).
STALL_SECONDS = 30.0
#: The largest entry, as a share of the budget: a whole-table read is never worth evicting
#: everything else for.
LARGEST_ENTRY_SHARE = 4


class ResultCache:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes // LARGEST_ENTRY_SHARE
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, int] = OrderedDict()  # least recently read first
        self._bytes = 0
        self._recording: dict[str, _Progress] = {}
        with contextlib.suppress(OSError):  # a read-only directory: nothing gets kept
            directory.mkdir(parents=True, exist_ok=True)
        found = []
        for path in directory.glob(f"*{SUFFIX}"):
            with contextlib.suppress(OSError):  # another process may evict meanwhile
                stat = path.stat()
                found.append((stat.st_mtime, path.stem, stat.st_size))
        for _, key, size in sorted(found):
            self._entries[key] = size
            self._bytes += size

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(query: CompiledQuery) -> str | None:
        """The query's entry name, or None when its result is not kept: it is not
        reproducible, or it is a lookup (bounded cost: reading a file saves little)."""
        if not query.reproducible or query.lookup:
            return None
        identity = [__version__, duckdb.__version__, query.sql, query.params,
                    sorted(query.attachments.items())]
        text = json.dumps(identity, default=lambda v: [type(v).__name__, str(v)])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def answer(self, key: str, run: Callable[[], ResultStream], *,
               stall_seconds: float = STALL_SECONDS) -> tuple[ResultStream, str]:
        """The kept result (``"hit"``), or else ``run()``'s stream, kept as it passes
        (``"miss"``). While another request records the same result, this one waits for it
        rather than run the query a second time (a class starting the same notebook cell
        together), as long as the recording writes a batch every ``stall_seconds``; else
        it runs the query without keeping it."""
        while True:
            cached = self.open(key)
            if cached is not None:
                return cached, "hit"
            with self._lock:
                recording = self._recording.get(key)
                if recording is None:
                    progress = self._recording[key] = _Progress()
                    break
            if not recording.wait(stall_seconds):
                return run(), "miss"
        try:
            stream = run()
        except BaseException:
            self._recorded(key)
            raise
        return self._record(key, stream, progress), "miss"

    def open(self, key: str) -> ResultStream | None:
        """The kept result, or None. Its bytes go out as they are stored; its batches are
        read from the file only when asked for (a JSON or compressed response)."""
        path = self._path(key)
        try:
            # Read, not memory-mapped: a mapped 400 MB result counts in the server's
            # resident memory once per client reading it (5.4 GiB in Q5 at 3.4e8).
            file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed with the stream
        except OSError:  # not there (evicted, cleared by hand) or not readable
            self._forget(key)
            return None
        try:
            reader = pa.ipc.open_file(file)
            encoded = EncodedStream(file, IPC_FILE_START, _stream_stop(file))
        except (OSError, pa.ArrowInvalid):  # cut short by a crash: not whole
            file.close()
            self._forget(key)
            _remove(path)
            return None
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
        with contextlib.suppress(OSError):
            os.utime(path)  # the order survives a restart
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        return ResultStream.of_batches(reader.schema, batches, file.close, encoded)

    def _record(self, key: str, stream: ResultStream, progress: _Progress) -> ResultStream:
        """``stream`` as it was, its batches written to the entry ``key`` as they pass
        (each one told to ``progress``); the entry is kept when the stream is read to its
        end."""
        recording = _Recording(self, key, stream.schema, progress)
        return stream.observed(recording.write, recording.finish)

    def _recorded(self, key: str) -> None:
        """The recording of ``key`` ended, kept or not: whoever waits for it goes on."""
        with self._lock:
            ended = self._recording.pop(key, None)
        if ended is not None:
            ended.ended.set()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}{SUFFIX}"

    def _forget(self, key: str) -> None:
        with self._lock:
            self._bytes -= self._entries.pop(key, 0)

    def _keep(self, key: str, written: Path) -> None:
        """Publish a written entry, then drop the least recently read beyond the budget."""
        size = written.stat().st_size
        os.replace(written, self._path(key))
        with self._lock:
            self._bytes += size - self._entries.pop(key, 0)
            self._entries[key] = size
            evicted = []
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                old, old_size = self._entries.popitem(last=False)
                self._bytes -= old_size
                evicted.append(old)
        for old in evicted:  # a reader of an evicted entry keeps its open file
            _remove(self._path(old))


class _Progress:
    """How a recording goes, for the requests waiting for it."""

    def __init__(self) -> None:
        self.ended = threading.Event()
        self.progressed = time.monotonic()

    def wait(self, stall_seconds: float) -> bool:
        """Wait for the end; False once no batch came for ``stall_seconds``."""
        while not self.ended.wait(min(1.0, stall_seconds)):
            if time.monotonic() - self.progressed >= stall_seconds:
                return False
        return True


class _Recording:
    """One result being written to the cache as it streams."""

    def __init__(self, cache: ResultCache, key: str, schema: pa.Schema,
                 progress: _Progress) -> None:
        self._cache = cache
        self._key = key
        self._progress = progress
        self._path = temporary_path(cache._path(key))
        self._bytes = 0
        self._writer: Any = None
        self._ended = False
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)  # if someone cleared it
            self._writer = pa.ipc.new_file(str(self._path), schema)
        except OSError:
            self._abandon()

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None or not batch.num_rows:  # as the response: no empty batch
            return
        self._bytes += batch.nbytes
        if self._bytes > self._cache.max_entry_bytes:
            self._abandon()
            return
        try:
            self._writer.write_batch(batch)
        except (OSError, pa.ArrowException):  # a full disk must not fail the query
            self._abandon()
            return
        self._progress.progressed = time.monotonic()

    def finish(self, complete: bool) -> None:
        if self._writer is None:
            return
        if not complete:
            self._abandon()
            return
        try:
            self._writer.close()
            self._writer = None
            self._cache._keep(self._key, self._path)
        except (OSError, pa.ArrowException):
            self._abandon()
        self._end()

    def _abandon(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError, pa.ArrowException):
                self._writer.close()
            self._writer = None
        _remove(self._path)
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._cache._recorded(self._key)


def _stream_stop(file: BinaryIO) -> int:
    """Where the IPC stream inside an Arrow IPC file ends (its footer begins)."""
    size = os.fstat(file.fileno()).st_size
    tail = os.pread(file.fileno(), 4 + len(_FILE_MAGIC), size - 4 - len(_FILE_MAGIC))
    stop = size - len(tail) - int.from_bytes(tail[:4], "little", signed=True)
    if tail[4:] != _FILE_MAGIC or not IPC_FILE_START <= stop <= size:
        raise pa.ArrowInvalid("not an Arrow IPC file")
    return stop


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
