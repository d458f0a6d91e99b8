"""The original CAVE's PostgreSQL layout of a version, derived from opencave's schemas, the
loader that copies an opencave version into it, and the original's query shape."""

from __future__ import annotations

import queue
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from opencave.instance import OpenCave
from opencave.schemas import ColumnType, Role

from .postgres import CopyIn, Postgres

DATASTACK = "minnie65_public"
ALIGNED_VOLUME = "minnie65_phase3"

_PG_TYPES = {
    ColumnType.INT64: "bigint",
    ColumnType.FLOAT64: "double precision",
    ColumnType.STRING: "varchar",
    ColumnType.BOOL: "boolean",
    ColumnType.TIMESTAMP: "timestamptz",
}


def database(version: int) -> str:
    """The original names a version's database ``{datastack}__mat{N}``."""
    return f"{DATASTACK}__mat{version}"


@dataclass(frozen=True)
class CaveTable:
    """One opencave table as the original lays it out: annotation + segmentation table."""

    name: str
    annotation: tuple[tuple[str, str], ...]  # (column, PostgreSQL type)
    segmentation: tuple[tuple[str, str], ...]  # id + supervoxel/root columns; () if none
    segmentation_name: str
    roots: tuple[str, ...]
    positions: tuple[str, ...]  # split position columns, e.g. pre_pt_position_x
    resolution: tuple[float, float, float]
    reference: bool

    @classmethod
    def of(cls, cave: OpenCave, table: str) -> CaveTable:
        meta = cave.tables.get(ALIGNED_VOLUME, table)
        annotation, segmentation, roots, positions = [], [("id", "bigint")], [], []
        for column in meta.schema.columns():
            pg = (column.name, _PG_TYPES[column.type])
            if column.role in (Role.SUPERVOXEL, Role.ROOT):
                segmentation.append(pg)
                if column.role is Role.ROOT:
                    roots.append(column.name)
            else:
                annotation.append(pg)
                if column.role is Role.POSITION:
                    positions.append(column.name)
        return cls(table, tuple(annotation), tuple(segmentation) if roots else (),
                   f"{table}__{meta.pcg_table_name}", tuple(roots), tuple(positions),
                   meta.voxel_resolution, meta.schema.is_reference)

    # -- DDL ----------------------------------------------------------------------------------
    def create_sql(self) -> str:
        parts = [_create(self.name, self.annotation)]
        if self.segmentation:
            parts.append(_create(self.segmentation_name, self.segmentation))
        return ";\n".join(parts)

    def index_sql(self) -> list[str]:
        """Primary keys, B-trees on root ids (segmentation) and ``target_id`` (references),
        as the original's index manager builds them."""
        out = [f'ALTER TABLE "{self.name}" ADD PRIMARY KEY (id)']
        if self.segmentation:
            out.append(f'ALTER TABLE "{self.segmentation_name}" ADD PRIMARY KEY (id)')
            out += [f'CREATE INDEX ON "{self.segmentation_name}" ("{r}")' for r in self.roots]
        if self.reference:
            out.append(f'CREATE INDEX ON "{self.name}" (target_id)')
        return out

    # -- queries ------------------------------------------------------------------------------
    def select_list(self, alias: str, seg_alias: str, *,
                    desired_resolution: Sequence[float] | None, suffix: str = "",
                    hidden: Sequence[str] = ("deleted",)) -> list[str]:
        """Output columns: positions converted to the desired resolution in SQL, as the
        original does (``ST_X(pos) * table_res / desired_res``)."""
        out = []
        for name, _ in self.annotation:
            if name in hidden:
                continue
            if name in self.positions and desired_resolution is not None:
                axis = "xyz".index(name[-1])
                factor = self.resolution[axis] / float(desired_resolution[axis])
                out.append(f'{alias}."{name}" * {factor:g} AS "{name}{suffix}"')
            else:
                out.append(f'{alias}."{name}" AS "{name}{suffix}"')
        for name, _ in self.segmentation[1:]:
            out.append(f'{seg_alias}."{name}" AS "{name}{suffix}"')
        return out

    def from_sql(self, alias: str, seg_alias: str) -> str:
        if not self.segmentation:
            return f'"{self.name}" {alias}'
        return (f'"{self.name}" {alias} LEFT OUTER JOIN "{self.segmentation_name}" {seg_alias}'
                f" ON {alias}.id = {seg_alias}.id")


def _create(name: str, columns: Sequence[tuple[str, str]]) -> str:
    body = ", ".join(f'"{c}" {t}' for c, t in columns)
    return f'CREATE TABLE "{name}" ({body})'


def in_list(values: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(v)) for v in values) + ")"


def simple_query(table: CaveTable, *, equal: Mapping[str, object] | None = None,
                 within: Mapping[str, Sequence[int]] | None = None,
                 desired_resolution: Sequence[float] | None = None) -> str:
    """The original's query of one table: annotation ⟕ segmentation on id, root-id filters as
    ``=`` / ``IN`` on the segmentation table, ``valid = true``."""
    where = ["a.valid = true"]
    for column, value in (equal or {}).items():
        where.append(f'{_owner(table, column)}."{column}" = {_literal(value)}')
    for column, values in (within or {}).items():
        where.append(f'{_owner(table, column)}."{column}" IN {in_list(values)}')
    select = ", ".join(table.select_list("a", "s", desired_resolution=desired_resolution))
    return f"SELECT {select} FROM {table.from_sql('a', 's')} WHERE {' AND '.join(where)}"


def reference_join_query(reference: CaveTable, target: CaveTable, *,
                         equal: Mapping[str, object]) -> str:
    """A reference table joined to its target (caveclient's ``merge_reference``): the
    original's join query of ``[[ref, target_id], [target, id]]``, target suffixed."""
    where = ["r.valid = true", "t.valid = true"]
    for column, value in equal.items():
        where.append(f'r."{column}" = {_literal(value)}')
    select = reference.select_list("r", "rs", desired_resolution=None,
                                   hidden=("deleted", "superceded_id"))
    select += target.select_list("t", "ts", desired_resolution=None, suffix="_ref",
                                 hidden=("deleted", "superceded_id"))
    return (f"SELECT {', '.join(select)} FROM \"{reference.name}\" r "
            f"JOIN {target.from_sql('t', 'ts')} ON r.target_id = t.id "
            f"WHERE {' AND '.join(where)}")


def _owner(table: CaveTable, column: str) -> str:
    return "s" if any(column == c for c, _ in table.segmentation[1:]) else "a"


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


# -- loading ----------------------------------------------------------------------------------
@dataclass
class LoadReport:
    version: int
    table: str
    rows: int
    copy_seconds: float
    index_seconds: float
    bytes: int


def load_version(pg: Postgres, cave: OpenCave, version: int, tables: Sequence[str], *,
                 spill: Path, log: callable = print) -> list[LoadReport]:  # type: ignore[valid-type]
    """Copy a version's visible rows of ``tables`` (those it has) from opencave into the CAVE
    layout."""
    name = database(version)
    pg.create_database(name)
    svc = cave.materialization()
    held = set(svc.table_names(DATASTACK, version))
    reports = []
    for table_name in (t for t in tables if t in held):
        table = CaveTable.of(cave, table_name)
        pg.sql(table.create_sql(), name)
        started = time.perf_counter()
        result = svc.query_table(DATASTACK, version, table_name, {})
        anno_cols = [c for c, _ in table.annotation if c != "deleted"]
        copies = [pg.copy_in(name, table.name, anno_cols)]
        if table.segmentation:
            copies.append(pg.copy_in(name, table.segmentation_name,
                                     [c for c, _ in table.segmentation]))
        rows = _copy_sorted_by_id(result.stream, copies, spill)
        copied = time.perf_counter()
        for statement in table.index_sql():
            pg.sql(statement, name)
        pg.sql(f'VACUUM ANALYZE "{table.name}"', name)
        if table.segmentation:
            pg.sql(f'VACUUM ANALYZE "{table.segmentation_name}"', name)
        indexed = time.perf_counter()
        size = int(pg.sql(
            f"SELECT pg_total_relation_size('\"{table.name}\"')"
            + (f" + pg_total_relation_size('\"{table.segmentation_name}\"')"
               if table.segmentation else ""), name).strip())
        reports.append(LoadReport(version, table_name, rows, copied - started,
                                  indexed - copied, size))
        log(f"  postgres v{version} {table_name}: {rows:,} rows, copy {copied - started:.1f} s, "
            f"indexes {indexed - copied:.1f} s, {size / 2**30:.2f} GiB")
    return reports


def _copy_sorted_by_id(stream, copies: list[CopyIn], spill: Path) -> int:  # type: ignore[no-untyped-def]
    """Sort the version's rows by id (out of core, in a scratch DuckDB) and feed every COPY
    from the same pass, one writer thread per COPY."""
    spill.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=spill) as scratch:
        con = duckdb.connect(":memory:")
        con.execute("SET memory_limit = '2GB'")
        con.execute("SET temp_directory = ?", [scratch])
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET TimeZone = 'UTC'")
        reader = pa.RecordBatchReader.from_batches(stream.schema, iter(stream))  # noqa: F841
        sorted_rows = con.sql("SELECT * FROM reader ORDER BY id").to_arrow_reader(100_000)
        queues = [queue.Queue(maxsize=4) for _ in copies]
        errors: list[BaseException] = []

        def feed(q: queue.Queue, copy: CopyIn) -> None:
            try:
                while (batch := q.get()) is not None:
                    copy.write(batch)
            except BaseException as exc:  # surfaced after the pass
                errors.append(exc)
                while q.get() is not None:
                    pass

        threads = [threading.Thread(target=feed, args=(q, c)) for q, c in zip(queues, copies,
                                                                                strict=True)]
        for t in threads:
            t.start()
        rows = 0
        try:
            for batch in sorted_rows:
                rows += batch.num_rows
                for q in queues:
                    q.put(batch)
        finally:
            for q in queues:
                q.put(None)
            for t in threads:
                t.join()
            con.close()
        for copy in copies:
            copy.close()
        if errors:
            raise errors[0]
    return rows
