"""Row segments: immutable Parquet files holding the flattened rows of one annotation table,
sorted by the table's cluster key so that range filters on it skip most of the file.

A segment's root ids are valid as of ``roots_at``; versions made later reuse the segment and
mask the rows whose roots changed (see :mod:`opencave.materialize.snapshots`).

Beside each Parquet file lies its *serving copy* (``<file>.duckdb``): the same rows in
DuckDB's native format, once per sort key — the cluster key and every other root id column —
each sorted by (key, id). Queries read those: a point lookup there costs a few milliseconds
where Parquet's per-file decoding costs tens, and a filter on ``post_pt_root_id`` reads the
copy sorted by it instead of scanning. The Parquet file stays the portable record (any
Parquet reader, object storage); the serving copy can be rebuilt from it at any time.

A large segment (:data:`RECORD_SERVES_ROWS`) stores its rows twice, not three times: its
Parquet record is sorted by the last serving key and stands in for that key's copy
(:func:`serving_layout`). A lookup there reads the few row groups whose footer statistics
hold the key's values (:func:`read_record_rows`), ~1.5 ms each, where DuckDB's Parquet scan
weighs every row group's statistics (~20 ms for a neuron's inputs at 10^8).
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..schemas import Column, ColumnType, Role, SchemaType
from .files import atomic_path, sql_string

ROW_GROUP_SIZE = 122_880
_COMPRESSION = "zstd"
SERVING_SUFFIX = ".duckdb"
#: A serving copy's table sorted by ``key`` is ``by_<key>`` (:func:`sorted_copy`).
_COPY_PREFIX = "by_"
#: Files smaller than this get no serving copy: reading them from Parquet costs little, and a
#: DuckDB file has a fixed size of ~1 MiB that would dominate small deltas and masks.
SERVING_MIN_ROWS = 20_000
#: Segments from this many rows keep their Parquet record sorted by the last serving key in
#: place of that key's native copy: at 10^8 synapses, 12.65 GB -> 8.67 GB for the bulk load
#: (record 34 -> 42 bytes a row, one native copy of 45 instead of two).
RECORD_SERVES_ROWS = 10_000_000
#: A lookup in a record reads at most this many row groups itself; beyond, DuckDB scans.
RECORD_LOOKUP_GROUPS = 8
#: Row groups of a record that serves a key: a lookup decodes whole row groups, ~1.5 ms for
#: 32,768 rows against ~5.3 for 122,880, for 0.15% more bytes (10^7 rows of the 10^8 bulk
#: load). The footer grows with their count: ~2 KB each, 21 MB at 3.4x10^8 rows.
RECORD_ROW_GROUP_SIZE = 32_768
#: Rows sorted at once when a segment is written from a query or its serving copies are
#: sorted: beyond it, a range of the key at a time (one sort of 10^8 synapse rows under a
#: 4 GB memory limit spilled 6.4 GB, twice its Parquet file, to disk).
SORT_RUN_ROWS = 20_000_000
#: DuckDB memory for sorting and writing a segment unless the caller gives its own limit
#: (an instance gives its query memory, so that one setting bounds the process); DuckDB
#: sorts out of core beyond it.
WRITE_MEMORY = "4GB"
#: DuckDB block size of serving copies (its default: 256 KiB). A query pins whole blocks of
#: every column it reads, and a block of a sorted copy holds the rows of many keys: at
#: 3.4e8 synapses 2,000 neurons' outputs (2.8 M rows) read 4.9 GB of 256 KiB blocks. On a
#: tenth of that table, 64 KiB blocks read 202 MiB instead of 616 for 200 neurons (CPU
#: -28%), and Q2's shape 145 instead of 454 (-34%), for 1% more disk and the same speed
#: reading it whole; 16 KiB blocks took 2.4x the disk.
SERVING_BLOCK_SIZE = 65_536

ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    ColumnType.INT64: pa.int64(),
    ColumnType.FLOAT64: pa.float64(),
    ColumnType.STRING: pa.string(),
    ColumnType.BOOL: pa.bool_(),
    ColumnType.TIMESTAMP: pa.timestamp("us", tz="UTC"),
}


def arrow_schema(schema: SchemaType) -> pa.Schema:
    """The Arrow schema of a table of this schema type (its flattened columns)."""
    return pa.schema(
        [pa.field(c.name, ARROW_TYPES[c.type], nullable=c.nullable) for c in schema.columns()]
    )


@dataclass(frozen=True)
class Segment:
    """A reference to one immutable segment file (``path`` is relative to the data dir)."""

    path: str
    num_rows: int
    sort_key: str
    roots_at: int | None = None  # microseconds since the epoch

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "num_rows": self.num_rows, "sort_key": self.sort_key,
                "roots_at": self.roots_at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Segment:
        return cls(data["path"], int(data["num_rows"]), data["sort_key"], data.get("roots_at"))


def serving_keys(columns: Sequence[Column], cluster_key: str) -> tuple[str, ...]:
    """The sort keys of a table's serving copies: its cluster key, then every other root id
    column (what queries filter on)."""
    others = [c.name for c in columns if c.role is Role.ROOT and c.name != cluster_key]
    return (cluster_key, *others)


def serving_layout(keys: Sequence[str], rows: int) -> tuple[str, tuple[str, ...]]:
    """How a segment of ``rows`` rows of a table with serving ``keys`` (cluster key first)
    is stored: the order of its Parquet record and the keys of its serving copy's tables.
    From :data:`RECORD_SERVES_ROWS` rows the record is sorted by the last key and the copy
    holds the others; below, the record follows the cluster key and the copy holds all."""
    if len(keys) > 1 and rows >= RECORD_SERVES_ROWS:
        return keys[-1], tuple(keys[:-1])
    return keys[0], tuple(keys)


def file_bytes(path: Path) -> int:
    """Bytes on disk of a Parquet file and its serving copy, if any."""
    serving = serving_path(path)
    return path.stat().st_size + (serving.stat().st_size if serving.exists() else 0)


def serving_path(path: Path) -> Path:
    """Where the serving copy of the Parquet file at ``path`` lives."""
    return path.with_name(path.name + SERVING_SUFFIX)


def sorted_copy(key: str) -> str:
    """The table in a serving copy that holds the rows sorted by ``key``."""
    return f"{_COPY_PREFIX}{key}"


def write_table_segment(path: Path, table: pa.Table, sort_key: str,
                        keys: Sequence[str] = (), *, memory_limit: str | None = WRITE_MEMORY
                        ) -> int:
    """Sort an in-memory table by ``(sort_key, id)`` and write it atomically, with its
    serving copy sorted by each of ``keys`` (none when empty or under
    :data:`SERVING_MIN_ROWS` rows; see :func:`serving_layout`). ``memory_limit``: DuckDB's,
    for the sort and the copy (one after the other); None leaves DuckDB's default."""
    table = _sorted(table, sort_key, memory_limit)
    serve = bool(keys) and table.num_rows >= SERVING_MIN_ROWS
    # The serving copy is written from the rows in memory while the Parquet file is
    # encoded: both release the GIL, and neither re-reads what the other wrote.
    group_rows = ROW_GROUP_SIZE if not keys or keys[0] == sort_key else RECORD_ROW_GROUP_SIZE
    with ThreadPoolExecutor(max_workers=1) as pool:
        copy = (pool.submit(write_serving_copy, path, keys, table, memory_limit=memory_limit,
                            order=sort_key)
                if serve else None)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, row_group_size=group_rows,
                           **parquet_encoding(table.schema))
        if copy is not None:
            copy.result()
    return table.num_rows


def _sorted(table: pa.Table, key: str, memory_limit: str | None) -> pa.Table:
    """``table`` sorted by ``(key, id)``: DuckDB sorts on every core, ~3x faster than
    Arrow's ``sort_by`` on a few million rows."""
    con = duckdb.connect(":memory:")
    try:
        limit_memory(con, memory_limit)
        con.register("rows", table)
        ordered = con.sql(f"SELECT * FROM rows ORDER BY {_quote(key)}, id").to_arrow_table()
    finally:
        con.close()
    return ordered.cast(table.schema)


def parquet_encoding(schema: pa.Schema) -> dict[str, Any]:
    """``pq.write_table`` options for a segment: zstd; dictionaries for strings only (ids,
    roots and positions are nearly all distinct: a dictionary made writes ~2x slower and
    files ~30% larger); integers and timestamps delta-encoded (DELTA_BINARY_PACKED, read by
    any Parquet reader): on 3.7 M synapse rows 15% smaller than plain, 1.6x faster to write
    and 1.9x faster for DuckDB to read (sorted ids and roots become tiny deltas)."""
    delta = [f.name for f in schema
             if pa.types.is_integer(f.type) or pa.types.is_timestamp(f.type)]
    return {"compression": _COMPRESSION,
            "use_dictionary": [f.name for f in schema if pa.types.is_string(f.type)],
            "column_encoding": dict.fromkeys(delta, "DELTA_BINARY_PACKED")}


def copy_sorted_segment(con: duckdb.DuckDBPyConnection, path: Path, select: str,
                        params: dict[str, Any] | list[Any] | None, sort_key: str,
                        keys: Sequence[str] = (), *, rows: int | None = None) -> int:
    """Write the rows of a DuckDB query as a segment sorted by ``(sort_key, id)``, atomically,
    with its serving copy sorted by each of ``keys`` (from :data:`SERVING_MIN_ROWS` rows;
    see :func:`serving_layout`). ``rows``: at most how many rows the query returns (counted
    when not given); beyond :data:`SORT_RUN_ROWS` the query runs once per range of the key
    it is sorted by (:func:`sort_runs`), so that the disk DuckDB spills to stays bounded.
    The serving copy is written by ``con`` too: one memory limit bounds both."""
    bind = _Binder(params)
    if rows is None:
        rows = con.execute(f"SELECT count(*) FROM ({select})", bind()).fetchall()[0][0]
    if keys and keys[0] != sort_key:
        return _copy_record_serving(con, path, select, bind, sort_key, keys, rows)
    runs = sort_runs(con, f"({select})", sort_key, rows, bind)
    with atomic_path(path) as tmp:
        if len(runs) == 1:
            con.execute(
                f"COPY ({select} ORDER BY {_quote(sort_key)}, id) TO '{sql_string(tmp)}' "
                f"(FORMAT parquet, COMPRESSION {_COMPRESSION}, "
                f"ROW_GROUP_SIZE {ROW_GROUP_SIZE}, "
                # Format 2 lets DuckDB delta-encode integers, as parquet_encoding() does.
                "PARQUET_VERSION v2)",
                bind(),
            )
        else:
            _write_runs(con, tmp, select, bind, sort_key, runs)
    written = pq.ParquetFile(path).metadata.num_rows
    if keys and written >= SERVING_MIN_ROWS:
        write_serving_copy(path, keys, con=con)
    return written


def _copy_record_serving(con: duckdb.DuckDBPyConnection, path: Path, select: str,
                         bind: _Binder, sort_key: str, keys: Sequence[str], rows: int) -> int:
    """:func:`copy_sorted_segment` when the record serves ``sort_key``: the serving copy
    first, from the query (its first table sorted a range at a time), then the record
    sorted from that table (native: faster to scan again than the query)."""
    target = _write_copy(serving_path(path), keys, f"({select})", rows, con=con, bind=bind)
    con.execute(f"ATTACH '{sql_string(target)}' AS record_source (READ_ONLY)")
    try:
        first = f"record_source.{_quote(sorted_copy(keys[0]))}"
        written = con.execute(f"SELECT count(*) FROM {first}").fetchall()[0][0]
        with atomic_path(path) as tmp:
            _write_runs(con, tmp, f"SELECT * FROM {first}", _Binder(None), sort_key,
                        sort_runs(con, first, sort_key, written), RECORD_ROW_GROUP_SIZE)
    finally:
        con.execute("DETACH record_source")
    return written


@dataclass(frozen=True)
class SortRun:
    """One range of a sort key, ``low < key <= high`` (None: open on that side); the last
    run also takes the NULL keys, which DuckDB sorts last."""

    low: Any = None
    high: Any = None

    def where(self, key: str, bind: _Binder) -> str:
        column = _quote(key)
        if self.high is None:
            low = f"{column} > {bind.value(self.low)} OR " if self.low is not None else ""
            return f"({low}{column} IS NULL)" if low else "TRUE"
        low = f"{column} > {bind.value(self.low)} AND " if self.low is not None else ""
        return f"{low}{column} <= {bind.value(self.high)}"


def run_condition(run: SortRun, key: str) -> tuple[str, list[Any]]:
    """``run``'s range of ``key`` as an SQL condition with its positional parameters."""
    bind = _Binder([])
    return run.where(key, bind), bind() or []


def create_table_by_runs(con: duckdb.DuckDBPyConnection, table: str, select: str, key: str,
                        runs: Sequence[SortRun], *, conditions: int = 1,
                        after_each: Callable[[], None] = lambda: None) -> None:
    """Create ``table`` from ``select`` run by run: the first run creates it, the others
    insert. ``select`` has ``{run}`` where each run's condition on ``key`` goes, bound
    ``conditions`` times."""
    for index, run in enumerate(runs):
        where, bounds = run_condition(run, key)
        into = f"CREATE OR REPLACE TABLE {table} AS " if index == 0 else f"INSERT INTO {table} "
        con.execute(into + select.format(run=where), bounds * conditions)
        after_each()


def sort_runs(con: duckdb.DuckDBPyConnection, source: str, key: str, rows: int,
              bind: _Binder | None = None) -> list[SortRun]:
    """How to sort ``rows`` rows of ``source`` (a table or a parenthesized query) by ``key``
    a range at a time: one run up to :data:`SORT_RUN_ROWS` rows, else ranges between
    approximate quantiles of the key (ranges of values: the rows of one key stay in one
    run)."""
    count = -(-rows // SORT_RUN_ROWS)
    if count <= 1:
        return [SortRun()]
    points = [i / count for i in range(1, count)]
    bounds = con.execute(f"SELECT approx_quantile({_quote(key)}, {points}) FROM {source}",
                         bind() if bind else None).fetchall()[0][0]
    edges = [None, *sorted({b for b in bounds if b is not None}), None]
    return [SortRun(low, high) for low, high in pairwise(edges)]


class _Binder:
    """The caller's parameters, named (``$name``) or positional (``?``), with values this
    module adds (a run's bounds) bound the same way."""

    def __init__(self, params: dict[str, Any] | list[Any] | None) -> None:
        self._base = params
        self._extra: list[Any] = []

    def value(self, value: Any) -> str:
        self._extra.append(value)
        if isinstance(self._base, dict):
            return f"$run_{len(self._extra)}"
        return "?"

    def __call__(self) -> dict[str, Any] | list[Any] | None:
        """The parameters for the statements built since the last call."""
        extra, self._extra = self._extra, []
        if isinstance(self._base, dict):
            return {**self._base, **{f"run_{i}": v for i, v in enumerate(extra, 1)}}
        if self._base is None and not extra:
            return None
        return [*(self._base or []), *extra]


def _write_runs(con: duckdb.DuckDBPyConnection, target: Path, select: str, bind: _Binder,
                sort_key: str, runs: Sequence[SortRun], group_rows: int | None = None) -> None:
    """The query's rows sorted by ``(sort_key, id)`` into one Parquet file of row groups of
    ``group_rows`` (:data:`ROW_GROUP_SIZE` when not given), a run at a time (each sort fits
    in memory, where one sort of all rows spills about twice the file's size to disk)."""
    group_rows = group_rows or ROW_GROUP_SIZE
    writer: pq.ParquetWriter | None = None
    try:
        for run in runs:
            where = run.where(sort_key, bind)
            reader = con.sql(
                f"SELECT * FROM ({select}) WHERE {where} ORDER BY {_quote(sort_key)}, id",
                params=bind()).to_arrow_reader(group_rows)
            # Time zones as DuckDB's own Parquet writer stores them (UTC, whatever the
            # connection's zone): the instants are the same.
            schema = pa.schema([f.with_type(ARROW_TYPES[ColumnType.TIMESTAMP])
                                if pa.types.is_timestamp(f.type) and f.type.tz else f
                                for f in reader.schema])
            for batch in reader:
                if writer is None:
                    writer = pq.ParquetWriter(target, schema, **parquet_encoding(schema))
                writer.write_batch(batch.cast(schema), row_group_size=group_rows)
    finally:
        if writer is not None:
            writer.close()


def write_serving_copy(path: Path, keys: Sequence[str], rows: pa.Table | None = None, *,
                       con: duckdb.DuckDBPyConnection | None = None,
                       memory_limit: str | None = WRITE_MEMORY, order: str | None = None
                       ) -> Path:
    """Write the serving copy of the Parquet file at ``path``, atomically: one native table
    per key, sorted by (key, id). ``rows``: the file's rows when they are still in memory
    (same order), read instead of the file. ``order``: the key the file is sorted by (the
    first key when not given; its table then keeps the file's order). ``con``: write
    through this connection (and its memory limit) instead of a new one limited to
    ``memory_limit``."""
    source = f"read_parquet('{sql_string(path)}')" if rows is None else "rows"
    count = pq.ParquetFile(path).metadata.num_rows if rows is None else rows.num_rows
    return _write_copy(serving_path(path), keys, source, count, rows=rows, con=con,
                       memory_limit=memory_limit, order=order or keys[0])


def _write_copy(target: Path, keys: Sequence[str], source: str, count: int, *,
                rows: pa.Table | None = None, con: duckdb.DuckDBPyConnection | None = None,
                memory_limit: str | None = WRITE_MEMORY, order: str | None = None,
                bind: _Binder | None = None) -> Path:
    """A serving copy at ``target`` from ``source`` (a table, or a parenthesized query with
    the parameters of ``bind``), sorted by ``order`` when known."""
    copies = _Copies(source, keys, rows, count, order, bind or _Binder(None))
    with atomic_path(target) as tmp, _writing_connection(con, memory_limit, tmp) as writer:
        writer.execute(f"ATTACH '{sql_string(tmp)}' AS serving_copy "
                       f"(BLOCK_SIZE {SERVING_BLOCK_SIZE})")
        try:
            copies.create(writer, "serving_copy.")
        finally:
            writer.execute("DETACH serving_copy")
    return target


@contextmanager
def _writing_connection(con: duckdb.DuckDBPyConnection | None, memory_limit: str | None,
                        target: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """``con``, or a connection of its own limited to ``memory_limit`` that spills beside
    ``target`` (an in-memory database spills to ``./.tmp`` wherever the process runs)."""
    if con is not None:
        yield con
        return
    own = duckdb.connect(":memory:")
    try:
        limit_memory(own, memory_limit)
        own.execute("SET temp_directory = ?", [f"{target}.tmp"])
        yield own
    finally:
        own.close()


@dataclass
class _Copies:
    """The tables of a serving copy: ``count`` rows of ``source`` (sorted by ``order``; None:
    in no known order), one table per key."""

    source: str
    keys: Sequence[str]
    rows: pa.Table | None
    count: int
    order: str | None
    bind: _Binder

    def create(self, con: duckdb.DuckDBPyConnection, prefix: str) -> None:
        """One table per key under ``prefix`` (a database name and dot, or nothing). The
        first keeps the source's order when it is sorted by its key; the others (and the
        first otherwise) are sorted a range of their key at a time beyond
        :data:`SORT_RUN_ROWS` rows, read from the first when it exists (native, so faster to
        scan again than Parquet or a query)."""
        preserved = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()
        con.execute("SET preserve_insertion_order = true")
        if self.rows is not None:
            con.register("rows", self.rows)
        try:
            first = f"{prefix}{_quote(sorted_copy(self.keys[0]))}"
            if self.order == self.keys[0]:
                con.execute(f"CREATE TABLE {first} AS SELECT * FROM {self.source}", self.bind())
            else:
                self._sorted(con, first, self.keys[0], self.source, self.bind)
            for key in self.keys[1:]:
                self._sorted(con, f"{prefix}{_quote(sorted_copy(key))}", key, first,
                             _Binder(None))
            con.execute(f"CHECKPOINT {prefix.rstrip('.')}" if prefix else "CHECKPOINT")
        finally:
            if self.rows is not None:
                con.unregister("rows")
            con.execute(f"SET preserve_insertion_order = {bool(preserved[0][0])}")

    def _sorted(self, con: duckdb.DuckDBPyConnection, table: str, key: str, origin: str,
                bind: _Binder) -> None:
        """``table`` as the rows of ``origin`` sorted by (key, id), a run at a time; one run
        reads the copy's own source (cheaper than the first table when it fits at once)."""
        runs = sort_runs(con, origin, key, self.count, bind)
        if len(runs) == 1 and origin != self.source:
            origin, bind = self.source, self.bind
        for index, run in enumerate(runs):
            where = run.where(key, bind)
            rows_of_run = f"SELECT * FROM {origin} WHERE {where} ORDER BY {_quote(key)}, id"
            statement = (f"CREATE TABLE {table} AS " if index == 0
                         else f"INSERT INTO {table} ") + rows_of_run
            con.execute(statement, bind())


def rewrite_serving_copy(path: Path, order: str, *,
                         memory_limit: str | None = WRITE_MEMORY) -> bool:
    """Write the serving copy of the Parquet file at ``path`` (sorted by ``order``) anew
    from that record when an older opencave wrote it with other blocks than
    :data:`SERVING_BLOCK_SIZE`: the same tables, replaced atomically. Returns whether it
    did."""
    serving = serving_path(path)
    if not serving.exists():
        return False
    with duckdb.connect(str(serving), read_only=True) as con:
        if block_size(con) == SERVING_BLOCK_SIZE:
            return False
        tables = con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
    keys = [name.removeprefix(_COPY_PREFIX) for (name,) in tables]
    keys.sort(key=lambda key: key != order)  # the record's own order needs no sort
    write_serving_copy(path, keys, memory_limit=memory_limit, order=order)
    return True


def block_size(con: duckdb.DuckDBPyConnection) -> int:
    """The block size of the database ``con`` opened."""
    return con.execute("SELECT block_size FROM pragma_database_size()").fetchall()[0][0]


def limit_memory(con: duckdb.DuckDBPyConnection, memory_limit: str | None) -> None:
    """Cap ``con``'s DuckDB memory (None: DuckDB's default, 80% of RAM)."""
    if memory_limit:
        con.execute("SET memory_limit = ?", [memory_limit])


def read_record_rows(path: Path, key: str, values: Sequence[Any]) -> pa.Table | None:
    """The rows of the Parquet record at ``path`` (sorted by ``key``) whose ``key`` is among
    ``values``, read from the row groups whose footer statistics may hold them; None when
    that is more than :data:`RECORD_LOOKUP_GROUPS` row groups (a scan for DuckDB)."""
    record = _record_index(str(path), key, path.stat().st_mtime_ns)
    wanted = np.unique(np.asarray([v for v in values if v is not None], dtype=np.int64))
    groups = record.groups_holding(wanted)
    if groups is None or len(groups) > RECORD_LOOKUP_GROUPS:
        return None
    reader = pq.ParquetFile(path, metadata=record.metadata)
    among = pa.array(wanted)
    pieces = [_rows_among(reader, g, key, among) for g in groups]
    return pa.concat_tables(pieces) if pieces else reader.schema_arrow.empty_table()


def _rows_among(reader: pq.ParquetFile, group: int, key: str, among: pa.Array) -> pa.Table:
    rows = reader.read_row_group(group)
    return rows.filter(pc.is_in(rows[key], value_set=among))


@dataclass(frozen=True)
class _RecordIndex:
    """A record's footer and the range of its sort key in each row group (non-decreasing,
    the file being sorted; row groups of NULL keys, last, get a range past every id)."""

    metadata: pq.FileMetaData
    lows: np.ndarray | None
    highs: np.ndarray | None

    def groups_holding(self, values: np.ndarray) -> list[int] | None:
        """Row groups whose range holds one of the sorted ``values`` (None: a group's range
        is unknown)."""
        if self.lows is None or self.highs is None:
            return None
        first = np.searchsorted(self.highs, values, side="left")
        last = np.searchsorted(self.lows, values, side="right")
        return sorted({g for a, b in zip(first, last, strict=True) for g in range(a, b)})


_PAST_IDS = np.iinfo(np.int64).max


#: One lock per record, held while its index is looked up or read: requests arriving
#: together at a fresh server (16 clients at once in the benchmark) wait for one reading of
#: each footer instead of all reading it on the same cores (first lookups took 3.5 s instead
#: of 0.5 s), and lookups in records already read do not wait for a new one's.
_RECORD_INDEX_LOCKS: collections.defaultdict[str, threading.Lock] = collections.defaultdict(
    threading.Lock)
_RECORD_INDEX_LOCKS_LOCK = threading.Lock()


def _record_index(path: str, key: str, mtime_ns: int) -> _RecordIndex:
    with _RECORD_INDEX_LOCKS_LOCK:
        lock = _RECORD_INDEX_LOCKS[path]
    with lock:
        return _read_record_index(path, key, mtime_ns)


@functools.lru_cache(maxsize=64)
def _read_record_index(path: str, key: str, mtime_ns: int) -> _RecordIndex:
    """Cached per file (records are immutable; ``mtime_ns`` keeps a rewritten path apart):
    the footer of a 10^8-row record takes tens of milliseconds to read and index."""
    metadata = pq.read_metadata(path)
    column = metadata.schema.to_arrow_schema().get_field_index(key)
    lows, highs = [], []
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(column).statistics
        if stats is not None and stats.has_min_max:
            lows.append(stats.min)
            highs.append(stats.max)
        elif stats is not None and stats.null_count == metadata.row_group(group).num_rows:
            lows.append(_PAST_IDS)  # all NULL: no value a lookup asks for
            highs.append(_PAST_IDS)
        else:
            return _RecordIndex(metadata, None, None)
    return _RecordIndex(metadata, np.asarray(lows, np.int64), np.asarray(highs, np.int64))


def id_bounds(path: Path) -> tuple[int, int] | None:
    """The smallest and largest row id in a Parquet file, from its footer (cached per file);
    None when the footer does not say."""
    index = _record_index(str(path), "id", path.stat().st_mtime_ns)
    if index.lows is None or index.highs is None or not len(index.lows):
        return None
    held = index.lows != _PAST_IDS
    if not held.any():
        return None
    return int(index.lows[held].min()), int(index.highs[held].max())


def max_id(path: Path) -> int:
    """The largest row id in a segment (0 if it has none): from its footer, else read."""
    bounds = id_bounds(path)
    if bounds is not None:
        return bounds[1]
    return int(pc.max(pq.read_table(path, columns=["id"])["id"]).as_py() or 0)


def write_id_set(path: Path, ids: np.ndarray) -> int:
    """A sorted, de-duplicated set of row ids (e.g. rows a version masks out of a segment)."""
    unique = np.unique(np.asarray(ids, dtype=np.int64))
    with atomic_path(path) as tmp:
        ids = pa.table({"id": unique})
        pq.write_table(ids, tmp, **parquet_encoding(ids.schema))
    return len(unique)


def write_mask(path: Path, rows: pa.Table, keys: Sequence[str]) -> int:
    """Rows a version masks out of a segment: their ids with the segment's values of the sort
    ``keys``, so that a query's filters on those keys apply to the mask too and a point
    lookup reads a few mask rows instead of the whole mask. Duplicate ids are dropped."""
    rows = rows.select(["id", *keys])
    ids = rows.column("id").to_numpy()
    ordered = np.sort(ids)
    if (ordered[1:] == ordered[:-1]).any():  # rare: merged masks are disjoint
        _, first = np.unique(ids, return_index=True)
        rows = rows.take(pa.array(first))
    return write_table_segment(path, rows, keys[0], keys)


def read_id_set(path: Path) -> np.ndarray:
    return pq.read_table(path, columns=["id"]).column("id").to_numpy()


def _quote(identifier: str) -> str:
    """Identifiers here come from schema definitions, never from requests."""
    return '"' + identifier.replace('"', '""') + '"'
