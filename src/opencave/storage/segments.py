"""Row segments: immutable Parquet files holding the flattened rows of one annotation table,
sorted by the table's cluster key so that range filters on it skip most of the file.

A segment's root ids are valid as of ``roots_at``; versions made later reuse the segment and
mask the rows whose roots changed (see :mod:`opencave.materialize.snapshots`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..schemas import ColumnType, SchemaType
from .files import atomic_path

ROW_GROUP_SIZE = 122_880
_COMPRESSION = "zstd"

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


def write_table_segment(path: Path, table: pa.Table, sort_key: str) -> int:
    """Sort an in-memory table by ``(sort_key, id)`` and write it atomically."""
    table = table.sort_by([(sort_key, "ascending"), ("id", "ascending")])
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, compression=_COMPRESSION)
    return table.num_rows


def copy_sorted_segment(con: duckdb.DuckDBPyConnection, path: Path, select: str,
                        params: dict[str, Any] | list[Any] | None, sort_key: str) -> int:
    """Write the rows of a DuckDB query as a segment sorted by ``(sort_key, id)``, atomically.
    DuckDB sorts out of core, so this works for tables far larger than memory."""
    with atomic_path(path) as tmp:
        con.execute(
            f"COPY ({select} ORDER BY {_quote(sort_key)}, id) TO '{_sql_string(tmp)}' "
            f"(FORMAT parquet, COMPRESSION {_COMPRESSION}, ROW_GROUP_SIZE {ROW_GROUP_SIZE})",
            params,
        )
    return pq.ParquetFile(path).metadata.num_rows


def max_id(path: Path) -> int:
    """The largest row id in a segment, from the Parquet footer's statistics (0 if empty)."""
    meta = pq.ParquetFile(path).metadata
    index = meta.schema.to_arrow_schema().get_field_index("id")
    best = 0
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(index).statistics
        if stats is not None and stats.has_min_max:
            best = max(best, int(stats.max))
    return best


def write_id_set(path: Path, ids: np.ndarray) -> int:
    """A sorted, de-duplicated set of row ids (e.g. rows a version masks out of a segment)."""
    unique = np.unique(np.asarray(ids, dtype=np.int64))
    with atomic_path(path) as tmp:
        pq.write_table(pa.table({"id": unique}), tmp, compression=_COMPRESSION)
    return len(unique)


def read_id_set(path: Path) -> np.ndarray:
    return pq.read_table(path, columns=["id"]).column("id").to_numpy()


def _quote(identifier: str) -> str:
    """Identifiers here come from schema definitions, never from requests."""
    return '"' + identifier.replace('"', '""') + '"'


def _sql_string(path: Path) -> str:
    return str(path).replace("'", "''")
