"""Supervoxels and their edges, assigned in a DuckDB work database (bounded memory at any
scale: DuckDB spills to disk).

Every synapse endpoint and soma belongs to a *piece*: the part of one cell (or orphan
fragment) inside one layer-1 chunk. A piece gets one supervoxel per few endpoints; the
supervoxels of a chunk are numbered densely, piece after piece, giving PyChunkedGraph ids
(chunk id + segment number). Edges chain the supervoxels of a piece and the pieces of a cell
(in chunk order), so every cell is one connected object with a real supervoxel graph that
splits can cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from . import world
from .cells import Cells
from .geometry import chunk_coordinates
from .synapses import chunk_ids

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
                          ELSE (hash(e.eid, e.side) % p.n_sv)::BIGINT END)::BIGINT AS sv
FROM endpoints e JOIN pieces p USING (cell, chunk)
"""


@dataclass
class SupervoxelGraph:
    supervoxels: np.ndarray  # uint64, sorted
    edges: np.ndarray  # (n, 2) uint64
    affinities: np.ndarray  # float32


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
        SELECT id AS eid, 0::UTINYINT AS side, pre_cell AS cell, pre_chunk AS chunk
            FROM read_parquet($parts)
        UNION ALL
        SELECT id, 1::UTINYINT, post_cell, post_chunk FROM read_parquet($parts)
        UNION ALL
        SELECT cell, 2::UTINYINT, cell, chunk FROM somas
        """,
        {"parts": raw_parts},
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE endpoint_positions AS
        SELECT id AS eid, 0::UTINYINT AS side, pre_x AS x, pre_y AS y, pre_z AS z
            FROM read_parquet($parts)
        UNION ALL
        SELECT id, 1::UTINYINT, post_x, post_y, post_z FROM read_parquet($parts)
        UNION ALL
        SELECT cell, 2::UTINYINT, x, y, z FROM somas
        """,
        {"parts": raw_parts},
    )
    con.unregister("somas")
    con.execute(_CREATE_PIECES.format(per=world.ENDPOINTS_PER_SUPERVOXEL))
    con.execute(_ASSIGN)


def _soma_chunks(cells: Cells, index: np.ndarray) -> np.ndarray:
    return chunk_coordinates(cells.position[index])


def graph(con: duckdb.DuckDBPyConnection) -> SupervoxelGraph:
    """All supervoxels and the edges that make each cell one connected object."""
    svs = con.sql(
        "SELECT first_sv + unnest(range(n_sv)) AS sv FROM pieces ORDER BY sv"
    ).fetchnumpy()["sv"]
    edges = con.sql(
        """
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
    ).fetchnumpy()
    a = np.asarray(edges["a"], dtype=np.uint64)
    b = np.asarray(edges["b"], dtype=np.uint64)
    return SupervoxelGraph(
        supervoxels=np.asarray(svs, dtype=np.uint64),
        edges=np.stack([a, b], axis=1) if len(a) else np.zeros((0, 2), dtype=np.uint64),
        affinities=edge_affinity(a, b),
    )


def edge_affinity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A deterministic affinity in [0.5, 1) per edge (the min-cut capacity)."""
    mixed = (np.asarray(a, np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.asarray(b, np.uint64)
    return (0.5 + (mixed % np.uint64(1000)).astype(np.float32) / 2000.0).astype(np.float32)


def anchors(con: duckdb.DuckDBPyConnection) -> tuple[np.ndarray, np.ndarray]:
    """A position inside each supervoxel (the mean of its endpoints, else of its piece's),
    in annotation voxels: what point lookups snap to."""
    rows = con.sql(
        """
        WITH located AS (
            SELECT s.sv, p.x, p.y, p.z FROM endpoint_sv s
            JOIN endpoint_positions p USING (eid, side)
        ), per_sv AS (
            SELECT sv, avg(x) AS x, avg(y) AS y, avg(z) AS z FROM located GROUP BY sv
        ), per_piece AS (
            SELECT pc.first_sv, pc.n_sv, avg(l.x) AS x, avg(l.y) AS y, avg(l.z) AS z
            FROM located l JOIN pieces pc
              ON l.sv >= pc.first_sv AND l.sv < pc.first_sv + pc.n_sv
            GROUP BY pc.first_sv, pc.n_sv
        ), every_sv AS (
            SELECT first_sv + unnest(range(n_sv)) AS sv, x, y, z FROM per_piece
        )
        SELECT e.sv, coalesce(s.x, e.x) AS x, coalesce(s.y, e.y) AS y, coalesce(s.z, e.z) AS z
        FROM every_sv e LEFT JOIN per_sv s USING (sv) ORDER BY e.sv
        """
    ).fetchnumpy()
    positions = np.stack([rows["x"], rows["y"], rows["z"]], axis=1)
    return np.asarray(rows["sv"], dtype=np.uint64), positions


def soma_supervoxels(con: duckdb.DuckDBPyConnection, n_cells: int) -> np.ndarray:
    """Supervoxel of each cell's soma (0 for cells outside the segmentation)."""
    rows = con.sql("SELECT cell, first_sv FROM pieces WHERE has_soma").fetchnumpy()
    out = np.zeros(n_cells, dtype=np.uint64)
    out[np.asarray(rows["cell"], dtype=np.int64)] = np.asarray(rows["first_sv"], np.uint64)
    return out
