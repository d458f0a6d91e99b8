"""Supervoxels and their edges, assigned in a DuckDB work database and streamed out in
batches (bounded memory at any scale: DuckDB spills to disk, nothing is fetched whole).

Every synapse endpoint and soma belongs to a *piece*: the part of one cell (or orphan
fragment) inside one layer-1 chunk. A piece gets one supervoxel per few endpoints; the
supervoxels of a chunk are numbered densely, piece after piece, giving PyChunkedGraph ids
(chunk id + segment number). Edges chain the supervoxels of a piece and the pieces of a cell
(in chunk order), so every cell is one connected object with a real supervoxel graph that
splits can cut.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from ..segmentation.arrays import ranges
from ..storage.files import DataDir, sql_string
from ..storage.segments import create_table_by_runs, sort_runs
from . import world
from .cells import Cells
from .geometry import chunk_coordinates
from .synapses import chunk_ids

#: Rows per batch read from the work database.
BATCH_ROWS = 1 << 22

#: Every synapse endpoint (side 0: pre, 1: post) and each soma (side 2), with its cell and
#: chunk, stored in a scratch database of its own: the work database's largest table, which
#: only the two statements after it read. Stored, DuckDB knows how many rows it aggregates;
#: a CTE over the raw parts left it guessing, and its aggregation ran out of 4 GB at
#: 3.4x10^8 synapses where it spilled from a table. Deleting the scratch file gives the
#: disk back (a dropped table's blocks stay in its database file).
_ENDPOINTS = """
CREATE TABLE scratch.endpoints AS
SELECT id AS eid, 0::UTINYINT AS side, pre_cell AS cell, pre_chunk AS chunk,
       pre_x AS x, pre_y AS y, pre_z AS z
    FROM read_parquet($parts)
UNION ALL
SELECT id, 1::UTINYINT, post_cell, post_chunk, post_x, post_y, post_z
    FROM read_parquet($parts)
UNION ALL
SELECT cell, 2::UTINYINT, cell, chunk, x, y, z FROM somas
"""

#: Each piece's supervoxels (numbered after those of its chunk's earlier cells) and its
#: center, the mean of its endpoints: the anchor of its supervoxels without endpoints. Made
#: a range of chunks at a time (``{run}``: the condition on ``chunk``): a piece and the
#: numbering of its chunk's supervoxels lie in one chunk, and at 3.4x10^8 synapses one
#: aggregation of all ~6x10^8 pieces spilled more than the disk had.
_PIECES = """
WITH counted AS (
    SELECT cell, chunk, count(*) AS n, bool_or(side = 2) AS has_soma,
           avg(x) AS x, avg(y) AS y, avg(z) AS z
    FROM scratch.endpoints WHERE {run} GROUP BY cell, chunk
), sized AS (
    SELECT cell, chunk, has_soma, ((n + {per} - 1) // {per})::BIGINT AS n_sv, x, y, z
    FROM counted
)
SELECT cell, chunk, has_soma, n_sv,
       (chunk + 1 + coalesce(sum(n_sv) OVER (
           PARTITION BY chunk ORDER BY cell
           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0))::BIGINT AS first_sv,
       x, y, z
FROM sized
"""

#: Each endpoint's supervoxel, in the same ranges of chunks (``{run}`` twice).
_ASSIGN = """
SELECT e.eid, e.side,
       (p.first_sv + CASE WHEN e.side = 2 THEN 0
                          ELSE (hash(e.eid, e.side) % p.n_sv)::BIGINT END)::BIGINT AS sv,
       e.x, e.y, e.z
FROM (SELECT * FROM scratch.endpoints WHERE {run}) e
JOIN (SELECT * FROM pieces WHERE {run}) p USING (cell, chunk)
"""

#: Edges that chain the supervoxels of a piece and the pieces of a cell (in chunk order).
EDGES = """
WITH within AS (
    SELECT first_sv + k AS a, first_sv + k + 1 AS b
    FROM (SELECT first_sv, unnest(range(n_sv - 1)) AS k FROM pieces WHERE n_sv > 1)
), between_pieces AS (
    SELECT first_sv AS a,
           lag(first_sv) OVER (PARTITION BY cell ORDER BY chunk) AS b
    FROM pieces
)
SELECT a, b FROM within
UNION ALL SELECT a, b FROM between_pieces WHERE b IS NOT NULL
"""

#: Pieces per batch of anchors: bounds the NumPy memory of one batch (a few hundred MB).
ANCHOR_BATCH = 1 << 22


def assign(con: duckdb.DuckDBPyConnection, raw_parts: list[str], cells: Cells,
           scratch: Path) -> None:
    """Create the ``pieces`` and ``endpoint_sv`` tables from the raw parts' endpoints, which
    are stored meanwhile in a database at ``scratch`` (deleted after)."""
    segmented = cells.segmented
    somas = pa.table({
        "cell": segmented.astype(np.int64),
        "chunk": chunk_ids(_soma_chunks(cells, segmented)),
        "x": cells.position[segmented, 0], "y": cells.position[segmented, 1],
        "z": cells.position[segmented, 2],
    })
    scratch_files = [scratch, scratch.with_name(scratch.name + ".wal")]
    DataDir.remove(scratch_files)  # left by a run stopped in this step
    con.execute(f"ATTACH '{sql_string(scratch)}' AS scratch")
    con.register("somas", somas)
    try:
        con.execute(_ENDPOINTS, {"parts": raw_parts})
        rows = con.execute("SELECT count(*) FROM scratch.endpoints").fetchall()[0][0]
        runs = sort_runs(con, "scratch.endpoints", "chunk", rows)
        pieces = _PIECES.format(run="{run}", per=world.ENDPOINTS_PER_SUPERVOXEL)
        create_table_by_runs(con, "pieces", pieces, "chunk", runs)
        create_table_by_runs(con, "endpoint_sv", _ASSIGN, "chunk", runs, conditions=2)
    finally:
        con.unregister("somas")
        con.execute("DETACH scratch")
        DataDir.remove(scratch_files)


def _soma_chunks(cells: Cells, index: np.ndarray) -> np.ndarray:
    return chunk_coordinates(cells.position[index])


def _batches(con: duckdb.DuckDBPyConnection, sql: str,
             rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The query's result in record batches (its own cursor, so other queries may run)."""
    cursor = con.cursor()
    try:
        reader = cursor.sql(sql).to_arrow_reader(rows)
        for batch in reader:
            if batch.num_rows:
                yield batch
    finally:
        cursor.close()


def supervoxel_count(con: duckdb.DuckDBPyConnection) -> int:
    """How many supervoxels there are."""
    row = con.sql("SELECT coalesce(sum(n_sv), 0) FROM pieces").fetchone()
    return int(row[0]) if row else 0


def supervoxel_batches(con: duckdb.DuckDBPyConnection) -> Iterator[np.ndarray]:
    """Every supervoxel id, ascending, in batches (pieces are runs of consecutive ids)."""
    for batch in _batches(con, "SELECT first_sv, n_sv FROM pieces ORDER BY first_sv"):
        first = batch.column("first_sv").to_numpy()
        idx, _ = ranges(first, first + batch.column("n_sv").to_numpy())
        yield idx.astype(np.uint64)


def edge_batches(con: duckdb.DuckDBPyConnection, extra: np.ndarray
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The edges (a, b, affinity) in batches, then ``extra`` (n, 2)."""
    for batch in _batches(con, EDGES):
        a = batch.column("a").to_numpy().astype(np.uint64)
        b = batch.column("b").to_numpy().astype(np.uint64)
        yield a, b, edge_affinity(a, b)
    if len(extra):
        yield extra[:, 0], extra[:, 1], edge_affinity(extra[:, 0], extra[:, 1])


def edge_affinity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A deterministic affinity in [0.5, 1) per edge (the min-cut capacity)."""
    mixed = (np.asarray(a, np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.asarray(b, np.uint64)
    return (0.5 + (mixed % np.uint64(1000)).astype(np.float32) / 2000.0).astype(np.float32)


def anchor_batches(con: duckdb.DuckDBPyConnection) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """A position inside each supervoxel (ids ascending, positions (n, 3) in annotation
    voxels), in batches: what point lookups snap to — the mean of the supervoxel's
    endpoints, else its piece's center (a piece's mean endpoint).

    A merge of two streams sorted by DuckDB (on both cores, spilling beyond its memory
    limit): the pieces by first supervoxel and the endpoints by supervoxel. A batch of
    pieces covers a run of ids, so its endpoints are the next ones below its end."""
    rows = ANCHOR_BATCH  # read at each call: a test makes many small batches
    sorted_endpoints = _batches(con, "SELECT sv, x, y, z FROM endpoint_sv ORDER BY sv", rows)
    endpoints = _SortedRows(sorted_endpoints)
    try:
        for pieces in _batches(
                con, "SELECT first_sv, n_sv, x, y, z FROM pieces ORDER BY first_sv", rows):
            first = pieces.column("first_sv").to_numpy()
            end = int(first[-1] + pieces.column("n_sv").to_numpy()[-1])
            yield _anchors_of(pieces, endpoints.below(end))
    finally:
        sorted_endpoints.close()


class _SortedRows:
    """A stream of record batches sorted by their first column, taken in consecutive
    key ranges."""

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        self._batches = batches
        self._pending: pa.RecordBatch | None = None

    def below(self, bound: int) -> list[pa.RecordBatch]:
        """The next rows whose key is below ``bound``."""
        taken = []
        while True:
            batch = self._pending if self._pending is not None else next(self._batches, None)
            if batch is None:
                return taken
            cut = int(np.searchsorted(batch.column(0).to_numpy(), bound))
            taken.append(batch.slice(0, cut))
            self._pending = batch.slice(cut) if cut < batch.num_rows else None
            if self._pending is not None:
                return taken


def _anchors_of(pieces: pa.RecordBatch, endpoints: list[pa.RecordBatch]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Anchors of a run of pieces: every supervoxel of them, at the mean of its endpoints
    (sorted by supervoxel; sums of integer coordinates, exact in float64 in any order),
    else at its piece's center."""
    first = pieces.column("first_sv").to_numpy()
    svs, owner = ranges(first, first + pieces.column("n_sv").to_numpy())
    positions = np.stack([pieces.column(axis).to_numpy() for axis in "xyz"], axis=1)[owner]
    rows = pa.Table.from_batches(endpoints) if endpoints else pa.table({})
    if rows.num_rows:
        sv = rows.column("sv").to_numpy()
        starts = np.flatnonzero(np.concatenate([[True], sv[1:] != sv[:-1]]))
        counts = np.diff(np.concatenate([starts, [len(sv)]]))
        at = np.searchsorted(svs, sv[starts])
        for k, axis in enumerate("xyz"):
            positions[at, k] = np.add.reduceat(rows.column(axis).to_numpy(), starts) / counts
    return svs.astype(np.uint64), positions


def soma_supervoxels(con: duckdb.DuckDBPyConnection, n_cells: int) -> np.ndarray:
    """Supervoxel of each cell's soma (0 for cells outside the segmentation)."""
    rows = con.sql("SELECT cell, first_sv FROM pieces WHERE has_soma").fetchnumpy()
    out = np.zeros(n_cells, dtype=np.uint64)
    out[np.asarray(rows["cell"], dtype=np.int64)] = np.asarray(rows["first_sv"], np.uint64)
    return out
