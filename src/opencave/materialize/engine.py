"""Running compiled queries on DuckDB and streaming Arrow record batches out.

One in-process DuckDB database serves every request; each query gets its own cursor, so
queries run concurrently and a result streams without holding the whole result in memory.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import duckdb
import pyarrow as pa

from ..errors import Busy, InvalidRequest
from ..storage.files import sql_string
from .query import CompiledQuery

DEFAULT_BATCH_ROWS = 65_536
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
    os.cpu_count() or 1)
#: Queries running at once (more wait for a slot) and how long one waits before a 503: four,
#: or one per core on fewer. More at once on two cores only shared them worse: Q5 at 3.4e8
#: with its requests replayed, 4 + 2 slots took 24 s of server CPU and a p99 of 7.5 s,
#: 2 + 1 slots 20 s and 4.0 s.
MAX_QUERIES = min(4, _CORES)
QUEUE_SECONDS = 120.0
#: Slots kept for lookups (:func:`~opencave.materialize.query.is_lookup`), which also take
#: free query slots: a neuron's synapses need not wait while clients download whole tables.
LOOKUP_QUERIES = max(1, min(2, _CORES // 2))
#: Parsed statements kept for reuse, by text: counts, and every query when DuckDB lacks the
#: submit :meth:`QueryEngine._arrow_stream` uses. A statement's text depends on the
#: version's parts and the query's shape, never on its values (those are bound parameters),
#: so the queries of a workload repeat a few texts; parsing one of ~4 kB costs ~2 ms.
PARSED_STATEMENTS = 256
#: A join whose build side has up to this many rows filters the probe side's scan with an
#: ``IN`` list of its values (DuckDB's ``dynamic_or_filter_threshold``; 50 by default, else
#: only a min/max range and a Bloom filter, which skip no row group when the values are
#: spread). A root list such as the tutorials' 1,436 proofread neurons then skips the row
#: groups of the copy sorted by that root that hold none of them, and rows whose other root
#: is not listed are dropped in the scan. At 3.4e8 synapses Q2 took 2.2 s and 0.55 s in
#: process, Q3 (2,000 roots) 5.1 and 1.0 s. Longer lists cost more than they save: 9e4
#: roots took 8.2 s against 5.8 s.
IN_FILTER_ROWS = 10_000
#: Whether this DuckDB has the submit its relation API streams through (see
#: :meth:`QueryEngine._arrow_stream`).
_PRIVATE_SUBMIT = callable(getattr(duckdb.DuckDBPyConnection, "_submit", None))


#: Bytes read at a time from an encoded result: few enough calls for a 400 MB result (one
#: thread hop each when served), little enough held per client.
ENCODED_CHUNK_BYTES = 4 << 20


@dataclass(frozen=True)
class EncodedStream:
    """A result already written as an uncompressed Arrow IPC stream: bytes ``[start,
    stop)`` of an open file. Sending them as they are costs the server no decoding and
    encoding (a kept result of 2.8 M synapses: ~0.3 s of CPU a request otherwise)."""

    file: BinaryIO
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    def chunks(self) -> Iterator[bytes]:
        offset = self.start
        while offset < self.stop:
            data = os.pread(self.file.fileno(), min(ENCODED_CHUNK_BYTES, self.stop - offset),
                            offset)
            if not data:
                raise OSError(f"{self.file.name}: the file ended {self.stop - offset} bytes "
                              "early")
            offset += len(data)
            yield data


@dataclass
class ResultStream:
    """Record batches of a running query; close it (or read it to the end) to free it and
    its slot among the queries running at once. ``encoded``, when set, holds the same rows
    already written as an Arrow IPC stream."""

    schema: pa.Schema
    _reader: pa.RecordBatchReader
    _cursor: duckdb.DuckDBPyConnection | None
    _release: Callable[[], None] = lambda: None
    _open: bool = True
    encoded: EncodedStream | None = None

    @classmethod
    def of(cls, rows: pa.Table) -> ResultStream:
        """A stream over rows already in memory (a count, a page read whole, a diff)."""
        return cls(rows.schema, rows.to_reader(), None)

    @classmethod
    def of_batches(cls, schema: pa.Schema, batches: Iterator[pa.RecordBatch],
                   release: Callable[[], None] = lambda: None,
                   encoded: EncodedStream | None = None) -> ResultStream:
        """A stream over batches a generator yields; ``release`` runs when it is closed."""
        return cls(schema, pa.RecordBatchReader.from_batches(schema, batches), None, release,
                   encoded=encoded)

    def observed(self, each: Callable[[pa.RecordBatch], None],
                 done: Callable[[bool], None]) -> ResultStream:
        """This stream, each batch shown to ``each`` as it passes; then ``done(True)`` once
        the last has passed, or ``done(False)`` when the stream is closed before that."""
        finished = False

        def batches() -> Iterator[pa.RecordBatch]:
            nonlocal finished
            for batch in self._reader:
                each(batch)
                yield batch
            finished = True
            done(True)

        def release() -> None:
            self.close()
            if not finished:
                done(False)

        return ResultStream.of_batches(self.schema, batches(), release)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self._reader
        finally:
            self.close()

    def read_all(self) -> pa.Table:
        try:
            return self._reader.read_all()
        finally:
            self.close()

    def close(self) -> None:
        if self._open:
            self._open = False
            if self._cursor is not None:
                self._cursor.close()
            self._release()

    def __del__(self) -> None:  # a stream dropped unread still gives its slot back
        self.close()


class QueryEngine:
    """Executes :class:`CompiledQuery` objects."""

    def __init__(self, *, threads: int | None = None, memory_limit: str | None = None,
                 spill_dir: Path | None = None, max_queries: int | None = None,
                 lookup_queries: int | None = None,
                 queue_seconds: float = QUEUE_SECONDS) -> None:
        self._db = duckdb.connect(":memory:")
        self._lock = threading.Lock()
        # Admission: beyond max_queries at once, queries wait (then get Busy). Sixteen
        # concurrent streams within one memory limit ran DuckDB out of memory; on a few
        # cores they gain nothing by running at the same time. Lookups have slots kept for
        # them (a stream holds its slot while its client reads, seconds for a big result).
        self._slots = QuerySlots(max_queries or MAX_QUERIES,
                                 lookup_queries or LOOKUP_QUERIES, queue_seconds)
        self._attached: set[str] = set()
        self._parsed: OrderedDict[str, duckdb.Statement] = OrderedDict()
        # Global settings: every cursor inherits them (a per-cursor SET costs ~0.5 ms/query).
        self._db.execute("SET GLOBAL TimeZone = 'UTC'")
        self._db.execute("SET parquet_metadata_cache = true")
        self._db.execute(f"SET GLOBAL dynamic_or_filter_threshold = {IN_FILTER_ROWS}")
        if threads:
            self._db.execute(f"SET threads = {int(threads)}")
        if memory_limit:
            self._db.execute("SET memory_limit = ?", [memory_limit])
        if spill_dir is not None:  # DuckDB's default is ./.tmp, wherever the process runs
            self._db.execute("SET temp_directory = ?", [str(spill_dir)])

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:  # creating cursors is not thread-safe; using them is
            return self._db.cursor()

    def _statement(self, cursor: duckdb.DuckDBPyConnection, sql: str) -> duckdb.Statement:
        """``sql`` parsed, from the cache when it ran before (a parsed statement binds and
        runs on any cursor, from any thread)."""
        with self._lock:
            statement = self._parsed.get(sql)
            if statement is not None:
                self._parsed.move_to_end(sql)
                return statement
        statement = cursor.extract_statements(sql)[0]
        with self._lock:
            self._parsed[sql] = statement
            while len(self._parsed) > PARSED_STATEMENTS:
                self._parsed.popitem(last=False)
        return statement

    def _attach(self, attachments: dict[str, str]) -> None:
        """Attach serving copies read-only, once each for the life of the engine (they are
        immutable, so an attachment never goes stale)."""
        if attachments.keys() <= self._attached:
            return
        with self._lock:
            for alias, path in attachments.items():
                if alias not in self._attached:
                    self._db.execute(f"ATTACH IF NOT EXISTS '{sql_string(path)}' AS {alias} "
                                     "(READ_ONLY)")
                    self._attached.add(alias)

    @contextmanager
    def _running(self, tables: dict[str, pa.Table],
                 lookup: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor with ``tables`` registered, holding one of the slots for queries running
        at once (a lookup's, for a lookup) for the block."""
        release = self._slots.acquire(lookup)
        cursor = self._cursor()
        try:
            for name, table in tables.items():
                cursor.register(name, table)
            yield cursor
        finally:
            cursor.close()
            release()

    def stream(self, query: CompiledQuery, *,
               batch_rows: int = DEFAULT_BATCH_ROWS) -> ResultStream:
        """The query's rows as they are produced; the stream holds a slot until closed."""
        self._attach(query.attachments)
        release = self._slots.acquire(query.lookup)
        cursor = self._cursor()
        try:
            for name, table in query.tables.items():
                cursor.register(name, table)
            reader = self._arrow_stream(cursor, query.sql, query.params, batch_rows)
        except BaseException as exc:
            cursor.close()
            release()
            if isinstance(exc, duckdb.Error):
                raise _translate(exc) from exc
            raise
        return ResultStream(reader.schema, reader, cursor, release)

    def _arrow_stream(self, cursor: duckdb.DuckDBPyConnection, sql: str, params: list[object],
                      batch_rows: int) -> pa.RecordBatchReader:
        """Run ``sql`` to a stream of record batches. DuckDB's relation API binds a statement
        twice — once for the relation's schema, again (after rendering and parsing it anew)
        to run it — and its DB-API ``execute`` binds once but collects the whole result
        before Arrow reads it (2.1 GiB against 0.9 for the 10^7-row table). The submit
        underneath the relation API's streaming binds once and streams (a one-neuron lookup
        at 10^8: 14.9 ms instead of 17.5). It is DuckDB's private method, so without it
        the relation API does the same."""
        if not _PRIVATE_SUBMIT:
            statement = self._statement(cursor, sql)
            return cursor.sql(statement, params=params).to_arrow_reader(batch_rows)
        return cursor._submit(sql, params, "stream", batch_rows).arrow_reader()

    def table(self, query: CompiledQuery) -> pa.Table:
        return self.stream(query).read_all()

    def run(self, sql: str, params: list[object], *,
            tables: dict[str, pa.Table] | None = None,
            attachments: dict[str, str] | None = None) -> pa.Table:
        """Run internal SQL (built by opencave itself, never from a request) with Arrow
        tables registered under the given names for its duration."""
        self._attach(attachments or {})
        with self._running(tables or {}) as cursor:
            return self._arrow_stream(cursor, sql, params, DEFAULT_BATCH_ROWS).read_all()

    def count(self, query: CompiledQuery) -> int:
        self._attach(query.attachments)
        with self._running(query.tables, query.lookup) as cursor:
            try:
                statement = self._statement(cursor, query.count_sql)
                row = cursor.execute(statement, query.count_params).fetchone()
            except duckdb.Error as exc:
                raise _translate(exc) from exc
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._db.close()


class QuerySlots:
    """Slots for queries running at once: ``queries`` for any query, and ``lookups`` more
    kept for lookups. A lookup takes one of those first, else a free query slot unless a
    query that is not a lookup waits for it (lookups come often: taking every free slot
    would starve the others)."""

    def __init__(self, queries: int, lookups: int, queue_seconds: float) -> None:
        self._free = {"queries": queries, "lookups": lookups}
        self._waiting = 0  # queries that are not lookups waiting for a slot
        self._changed = threading.Condition()
        self._queue_seconds = queue_seconds

    def acquire(self, lookup: bool) -> Callable[[], None]:
        """Wait for a slot (a :class:`~opencave.errors.Busy` after the queue time); returns
        the call that gives it back."""
        with self._changed:
            if lookup:
                free = self._wait(lambda: self._free["lookups"] > 0 or (
                    self._free["queries"] > 0 and not self._waiting))
                pool = "lookups" if self._free["lookups"] else "queries"
            else:
                self._waiting += 1
                try:
                    free = self._wait(lambda: self._free["queries"] > 0)
                finally:
                    self._waiting -= 1
                    self._changed.notify_all()  # lookups may take a free slot again
                pool = "queries"
            if not free:
                raise Busy("the server is answering as many queries as it can at once and "
                           f"none finished within {self._queue_seconds:g} s; try again "
                           "shortly")
            self._free[pool] -= 1
        return lambda: self._release(pool)

    def _wait(self, ready: Callable[[], bool]) -> bool:
        return self._changed.wait_for(ready, timeout=self._queue_seconds)

    def _release(self, pool: str) -> None:
        with self._changed:
            self._free[pool] += 1
            self._changed.notify_all()


def _translate(exc: duckdb.Error) -> Exception:
    """Errors caused by request values (a regex RE2 rejects, a value out of range) are the
    client's; anything else is ours and stays a 500."""
    message = str(exc)
    if isinstance(exc, duckdb.InvalidInputException | duckdb.ConversionException) or (
        "regex" in message.lower()
    ):
        return InvalidRequest(f"the query could not run with these values: {message}")
    return exc
