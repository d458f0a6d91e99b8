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
from ..segmentation.buckets import Buckets
from . import world
from .cells import Cells
from .geometry import chunk_coordinates
from .synapses import chunk_ids

#: Rows per batch read from the work database.
BATCH_ROWS = 1 << 22

_CREATE_PIECES = """
CREATE OR REPLACE TABLE pieces AS
WITH counted AS (
    SELECT cell, chunk, count(*) AS n, bool_or(side = 2) AS has_soma
    FROM endpoints GROUP BY cell, chunk
), sized AS (
    SELECT cell, chunk, has_soma, ((n + {per} - 1) // {per})::BIGINT AS n_sv FROM counted
)
SELECT cell, chunk, has_soma, n_sv,
       (chunk + 1 + coalesce(sum(n_sv) OVER (
           PARTITION BY chunk ORDER BY cell
           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0))::BIGINT AS first_sv
FROM sized
"""

_ASSIGN = """
CREATE OR REPLACE TABLE endpoint_sv AS
SELECT e.eid, e.side,
       (p.first_sv + CASE WHEN e.side = 2 THEN 0
                          ELSE (hash(e.eid, e.side) % p.n_sv)::BIGINT END)::BIGINT AS sv,
       e.x, e.y, e.z
FROM endpoints e JOIN pieces p USING (cell, chunk)
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

#: Each piece's supervoxel range with the mean position of its endpoints (a piece is a
#: (cell, chunk), so a plain GROUP BY): the anchor of its supervoxels without endpoints.
_PIECE_CENTERS = """
CREATE OR REPLACE TABLE piece_centers AS
SELECT p.first_sv, p.n_sv, m.x, m.y, m.z
FROM pieces p JOIN (
    SELECT cell, chunk, avg(x) AS x, avg(y) AS y, avg(z) AS z FROM endpoints
    GROUP BY cell, chunk
) m USING (cell, chunk)
"""
#: Anchors are computed one range of supervoxels at a time, from the endpoints and pieces
#: of that range: both are first dealt into per-range files in one pass each, so the cost
#: is linear (a query per range over the whole endpoint table was quadratic: 8 of the 54
#: minutes of the 10^8 build).
_ENDPOINT = np.dtype([("sv", np.int64), ("x", np.int64), ("y", np.int64), ("z", np.int64)])
_PIECE = np.dtype([("first_sv", np.int64), ("n_sv", np.int64), ("x", np.float64),
                   ("y", np.float64), ("z", np.float64)])
#: Supervoxels per anchor range: bounds the NumPy memory of one range (a few hundred MB); the
#: number of ranges costs nothing since each reads only its own files.
ANCHOR_RANGE = 1 << 22
#: Where the anchor ranges start: at a piece (a piece is a run of ids), the first piece of
#: each ~{size} supervoxels counted in id order. Found by DuckDB: pieces number 10^7–10^8.
_ANCHOR_RANGES = """
SELECT min(first_sv) AS lo FROM (
    SELECT first_sv, sum(n_sv) OVER (ORDER BY first_sv ROWS UNBOUNDED PRECEDING) - n_sv
           AS before
    FROM piece_centers
) GROUP BY before // {size} ORDER BY lo
"""


def assign(con: duckdb.DuckDBPyConnection, raw_parts: list[str], cells: Cells) -> None:
    """Create the ``endpoints``, ``pieces`` and ``endpoint_sv`` tables."""
    segmented = cells.segmented
    somas = pa.table({
        "cell": segmented.astype(np.int64),
        "chunk": chunk_ids(_soma_chunks(cells, segmented)),
        "x": cells.position[segmented, 0], "y": cells.position[segmented, 1],
        "z": cells.position[segmented, 2],
    })
    con.register("somas", somas)
    con.execute(
        """
        CREATE OR REPLACE TABLE endpoints AS
        SELECT id AS eid, 0::UTINYINT AS side, pre_cell AS cell, pre_chunk AS chunk,
               pre_x AS x, pre_y AS y, pre_z AS z
            FROM read_parquet($parts)
        UNION ALL
        SELECT id, 1::UTINYINT, post_cell, post_chunk, post_x, post_y, post_z
            FROM read_parquet($parts)
        UNION ALL
        SELECT cell, 2::UTINYINT, cell, chunk, x, y, z FROM somas
        """,
        {"parts": raw_parts},
    )
    con.unregister("somas")
    con.execute(_CREATE_PIECES.format(per=world.ENDPOINTS_PER_SUPERVOXEL))
    con.execute(_ASSIGN)


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


def anchor_batches(con: duckdb.DuckDBPyConnection, work: Path
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """A position inside each supervoxel (ids ascending, positions (n, 3) in annotation
    voxels), in batches: what point lookups snap to — the mean of the supervoxel's
    endpoints, else its piece's center. ``work``: a directory for the per-range files."""
    con.execute(_PIECE_CENTERS)
    starts = con.sql(_ANCHOR_RANGES.format(size=ANCHOR_RANGE)).fetchnumpy()["lo"]
    if not len(starts):
        con.execute("DROP TABLE piece_centers")
        return
    cuts = np.asarray(starts, dtype=np.int64)
    endpoints = _deal(con, "SELECT sv, x, y, z FROM endpoint_sv", "sv", _ENDPOINT,
                      Buckets(work / "endpoints", cuts, _ENDPOINT))
    pieces = _deal(con, "SELECT first_sv, n_sv, x, y, z FROM piece_centers", "first_sv",
                   _PIECE, Buckets(work / "pieces", cuts, _PIECE))
    con.execute("DROP TABLE piece_centers")
    try:
        for index in range(len(cuts)):
            yield _range_anchors(pieces.read(index), endpoints.read(index))
            pieces.drop(index)
            endpoints.drop(index)
    finally:
        pieces.remove()
        endpoints.remove()


def _deal(con: duckdb.DuckDBPyConnection, sql: str, key: str, dtype: np.dtype,
          buckets: Buckets) -> Buckets:
    """The query's rows, as records of ``dtype``, dealt into ``buckets`` by ``key``."""
    for batch in _batches(con, sql):
        records = np.empty(batch.num_rows, dtype=dtype)
        for name in dtype.names or ():
            records[name] = batch.column(name).to_numpy()
        buckets.add(records[key], records)
    return buckets


def _range_anchors(pieces: np.ndarray, endpoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Anchors of one range: every supervoxel of its pieces, at the mean of its endpoints
    (sums of integer coordinates, exact in float64 in any order), else at its piece's
    center."""
    pieces = pieces[np.argsort(np.ascontiguousarray(pieces["first_sv"]))]
    svs, owner = ranges(pieces["first_sv"], pieces["first_sv"] + pieces["n_sv"])
    positions = np.stack([pieces[axis] for axis in "xyz"], axis=1)[owner]
    if len(endpoints):
        # Sorted by supervoxel (one column sorted, the others gathered: sorting the records
        # or searching unsorted ids was several times slower).
        order = np.argsort(np.ascontiguousarray(endpoints["sv"]))
        sv = endpoints["sv"][order]
        first = np.flatnonzero(np.concatenate([[True], sv[1:] != sv[:-1]]))
        counts = np.diff(np.concatenate([first, [len(sv)]]))
        at = np.searchsorted(svs, sv[first])
        for k, axis in enumerate("xyz"):
            column = np.ascontiguousarray(endpoints[axis])[order]
            positions[at, k] = np.add.reduceat(column, first) / counts
    return svs.astype(np.uint64), positions


def soma_supervoxels(con: duckdb.DuckDBPyConnection, n_cells: int) -> np.ndarray:
    """Supervoxel of each cell's soma (0 for cells outside the segmentation)."""
    rows = con.sql("SELECT cell, first_sv FROM pieces WHERE has_soma").fetchnumpy()
    out = np.zeros(n_cells, dtype=np.uint64)
    out[np.asarray(rows["cell"], dtype=np.int64)] = np.asarray(rows["first_sv"], np.uint64)
    return out
