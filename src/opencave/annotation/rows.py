"""Rows written through the API: the live delta of each annotation table.

Per annotation table the live store holds two append-only SQL tables:

- ``anno_<id>_rows``: new rows with every flattened column except ``deleted`` and
  ``superceded_id`` (a row never changes once written);
- ``anno_<id>_deletions``: ``(id, deleted, superceded_id)`` for any row of the table — a
  live row or one in an immutable segment. An update is a new row plus a deletion of the old
  one pointing at it (supersession), as in the original.

Together with the table's segments they define the table at any instant, which is what
versions and live queries read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from ..schemas import ColumnType
from ..storage import LiveStore, UTCDateTime
from ..storage.segments import arrow_schema
from .tables import AnnotationTable

_SQL_TYPES: dict[ColumnType, Any] = {
    ColumnType.INT64: sa.BigInteger,
    ColumnType.FLOAT64: sa.Float,
    ColumnType.STRING: sa.Text,
    ColumnType.BOOL: sa.Boolean,
    ColumnType.TIMESTAMP: UTCDateTime,
}
_DELETION_COLUMNS = ("deleted", "superceded_id")


class LiveRows:
    """SQL tables of API-written rows and deletions, built from each table's schema."""

    def __init__(self, live: LiveStore) -> None:
        self.live = live
        self._tables: dict[int, tuple[sa.Table, sa.Table]] = {}
        self._lock = threading.Lock()

    def sql_tables(self, table: AnnotationTable) -> tuple[sa.Table, sa.Table]:
        """``(rows, deletions)`` for ``table``, created in the database on first use."""
        with self._lock:
            cached = self._tables.get(table.id)
            if cached is not None:
                return cached
            metadata = sa.MetaData()
            columns = [
                sa.Column(c.name, _SQL_TYPES[c.type], primary_key=c.name == "id",
                          autoincrement=False, nullable=c.nullable or c.name != "id")
                for c in table.schema.columns() if c.name not in _DELETION_COLUMNS
            ]
            rows = sa.Table(f"anno_{table.id}_rows", metadata, *columns,
                            sa.Index(f"anno_{table.id}_rows_created", "created"))
            deletions = sa.Table(
                f"anno_{table.id}_deletions", metadata,
                sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
                sa.Column("deleted", UTCDateTime, nullable=False),
                sa.Column("superceded_id", sa.BigInteger),
                sa.Index(f"anno_{table.id}_deletions_deleted", "deleted"),
            )
            metadata.create_all(self.live.engine)
            self._tables[table.id] = (rows, deletions)
            return rows, deletions

    # --- writes (inside the caller's transaction) -------------------------------------

    def insert(self, conn: sa.Connection, table: AnnotationTable,
               records: Sequence[dict[str, Any]], *, batch: int = 5_000) -> None:
        rows, _ = self.sql_tables(table)
        for start in range(0, len(records), batch):
            conn.execute(rows.insert(), list(records[start:start + batch]))

    def delete(self, conn: sa.Connection, table: AnnotationTable, ids: Sequence[int],
               when: datetime, superceded_by: Sequence[int | None] | None = None) -> None:
        _, deletions = self.sql_tables(table)
        successors = superceded_by or [None] * len(ids)
        conn.execute(deletions.insert(), [
            {"id": int(i), "deleted": when, "superceded_id": s}
            for i, s in zip(ids, successors, strict=True)
        ])

    # --- reads -------------------------------------------------------------------------

    def deleted_ids(self, table: AnnotationTable, ids: Iterable[int],
                    conn: sa.Connection | None = None) -> set[int]:
        """Which of ``ids`` were deleted (or superseded) through the API."""
        return self._present(self.sql_tables(table)[1], ids, conn)

    def live_ids(self, table: AnnotationTable, ids: Iterable[int],
                 conn: sa.Connection | None = None) -> set[int]:
        """Which of ``ids`` are rows written through the API."""
        return self._present(self.sql_tables(table)[0], ids, conn)

    def _present(self, sql_table: sa.Table, ids: Iterable[int],
                 conn: sa.Connection | None) -> set[int]:
        wanted = [int(i) for i in ids]
        found: set[int] = set()
        with self._connection(conn) as c:
            for chunk in _chunks(wanted):
                found.update(c.execute(sa.select(sql_table.c.id).where(
                    sql_table.c.id.in_(chunk))).scalars())
        return found

    def rows(self, table: AnnotationTable, *, created_after: datetime | None = None,
             created_until: datetime | None = None, ids: Iterable[int] | None = None
             ) -> pa.Table:
        """Live rows (with their deletion state) as an Arrow table of the table's schema."""
        rows, deletions = self.sql_tables(table)
        query = sa.select(rows, deletions.c.deleted, deletions.c.superceded_id).outerjoin(
            deletions, deletions.c.id == rows.c.id)
        if created_after is not None:
            query = query.where(rows.c.created > created_after)
        if created_until is not None:
            query = query.where(rows.c.created <= created_until)
        if ids is not None:
            query = query.where(rows.c.id.in_([int(i) for i in ids]))
        with self.live.connect() as conn:
            result = conn.execute(query.order_by(rows.c.id)).mappings().all()
        schema = arrow_schema(table.schema)
        return pa.Table.from_arrays(
            [pa.array([r[f.name] for r in result], type=f.type) for f in schema], schema=schema)

    def deletions(self, table: AnnotationTable, *, after: datetime | None = None,
                  until: datetime | None = None) -> tuple[np.ndarray, list[datetime]]:
        """Ids deleted in ``(after, until]`` and when."""
        _, deletions = self.sql_tables(table)
        query = sa.select(deletions.c.id, deletions.c.deleted)
        if after is not None:
            query = query.where(deletions.c.deleted > after)
        if until is not None:
            query = query.where(deletions.c.deleted <= until)
        with self.live.connect() as conn:
            found = conn.execute(query.order_by(deletions.c.id)).all()
        return np.array([r.id for r in found], dtype=np.int64), [r.deleted for r in found]

    def deletion_records(self, table: AnnotationTable, ids: Iterable[int]) -> dict[int, Any]:
        _, deletions = self.sql_tables(table)
        with self.live.connect() as conn:
            found = conn.execute(sa.select(deletions).where(
                deletions.c.id.in_([int(i) for i in ids]))).mappings().all()
        return {int(r["id"]): r for r in found}

    def count(self, table: AnnotationTable) -> tuple[int, int]:
        """(live rows, deletions)."""
        rows, deletions = self.sql_tables(table)
        with self.live.connect() as conn:
            return (int(conn.execute(sa.select(sa.func.count()).select_from(rows)).scalar()),
                    int(conn.execute(sa.select(sa.func.count()).select_from(deletions))
                        .scalar()))

    def _connection(self, conn: sa.Connection | None
                    ) -> AbstractContextManager[sa.Connection]:
        return nullcontext(conn) if conn is not None else self.live.connect()


def _chunks(values: list[int], size: int = 900) -> Iterable[list[int]]:
    """Stay under SQLite's bound-parameter limit."""
    for start in range(0, len(values), size):
        yield values[start:start + size]
