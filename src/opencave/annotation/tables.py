"""Annotation tables: their metadata, and the bulk segments that hold their loaded rows.

A table belongs to an aligned volume, has one schema type, a voxel resolution for its
points, permissions, and (for reference types) the table its ``target_id`` points into.
Rows loaded in bulk live in immutable Parquet segments registered here; rows written through
the API live in the live store (see :mod:`opencave.annotation.rows`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..errors import Conflict, InvalidRequest, TableNotFound, describe_choices
from ..schemas import Role, SchemaType, get_schema_type
from ..storage import LIVE_METADATA, LiveStore, UTCDateTime
from ..storage.segments import Segment, serving_keys
from ..timestamps import format_iso, now

PERMISSIONS = ("PUBLIC", "GROUP", "PRIVATE")
_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

annotation_tables = sa.Table(
    "annotation_tables",
    LIVE_METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("aligned_volume", sa.String, nullable=False),
    sa.Column("table_name", sa.String, nullable=False),
    sa.Column("schema_type", sa.String, nullable=False),
    sa.Column("reference_table", sa.String),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("notice_text", sa.Text),
    sa.Column("user_id", sa.String, nullable=False),
    sa.Column("voxel_resolution_x", sa.Float, nullable=False),
    sa.Column("voxel_resolution_y", sa.Float, nullable=False),
    sa.Column("voxel_resolution_z", sa.Float, nullable=False),
    sa.Column("read_permission", sa.String, nullable=False, default="PUBLIC"),
    sa.Column("write_permission", sa.String, nullable=False, default="PRIVATE"),
    sa.Column("flat_segmentation_source", sa.String),
    sa.Column("pcg_table_name", sa.String),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("last_modified", UTCDateTime, nullable=False),
    sa.Column("last_updated", UTCDateTime),
    sa.Column("deleted", UTCDateTime),
    sa.Column("valid", sa.Boolean, nullable=False, default=True),
    # The next row id to hand out: above every id in the table's segments and live rows.
    sa.Column("next_id", sa.BigInteger, nullable=False, default=1),
    sa.UniqueConstraint("aligned_volume", "table_name"),
)

table_segments = sa.Table(
    "table_segments",
    LIVE_METADATA,
    sa.Column("table_id", sa.ForeignKey("annotation_tables.id"), nullable=False),
    sa.Column("path", sa.String, primary_key=True),
    sa.Column("num_rows", sa.BigInteger, nullable=False),
    sa.Column("sort_key", sa.String, nullable=False),
    sa.Column("roots_at", sa.BigInteger),
    sa.Column("added", UTCDateTime, nullable=False),
)


@dataclass(frozen=True)
class AnnotationTable:
    """Metadata of one annotation table."""

    id: int
    aligned_volume: str
    table_name: str
    schema_type: str
    user_id: str
    voxel_resolution: tuple[float, float, float]
    created: datetime
    last_modified: datetime
    description: str = ""
    reference_table: str | None = None
    notice_text: str | None = None
    read_permission: str = "PUBLIC"
    write_permission: str = "PRIVATE"
    flat_segmentation_source: str | None = None
    pcg_table_name: str | None = None
    last_updated: datetime | None = None
    deleted: datetime | None = None
    valid: bool = True
    next_id: int = 1

    @property
    def schema(self) -> SchemaType:
        return get_schema_type(self.schema_type)

    @property
    def cluster_key(self) -> str:
        """The column its segments are sorted by: the first root id, else ``target_id``,
        else ``id`` — the columns queries filter on most."""
        for column in self.schema.columns():
            if column.role is Role.ROOT:
                return column.name
        if self.schema.is_reference:
            return "target_id"
        return "id"

    @property
    def serving_keys(self) -> tuple[str, ...]:
        """The sort keys of its segments' serving copies (cluster key, other root ids)."""
        return serving_keys(self.schema.columns(), self.cluster_key)

    def metadata(self) -> dict[str, Any]:
        """The metadata dict both the annotation and the materialization services return."""
        vx, vy, vz = self.voxel_resolution
        return {
            "id": self.id,
            "aligned_volume": self.aligned_volume,
            "table_name": self.table_name,
            "annotation_table": self.table_name,
            "schema": self.schema_type,
            "schema_type": self.schema_type,
            "valid": self.valid,
            "created": format_iso(self.created),
            "user_id": self.user_id,
            "description": self.description,
            "notice_text": self.notice_text,
            "reference_table": self.reference_table,
            "flat_segmentation_source": self.flat_segmentation_source,
            "write_permission": self.write_permission,
            "read_permission": self.read_permission,
            "last_modified": format_iso(self.last_modified),
            "segmentation_source": "",
            "pcg_table_name": self.pcg_table_name,
            "last_updated": format_iso(self.last_updated),
            "voxel_resolution_x": vx,
            "voxel_resolution_y": vy,
            "voxel_resolution_z": vz,
        }


class AnnotationTables:
    """Create, find and describe annotation tables of the aligned volumes."""

    def __init__(self, live: LiveStore) -> None:
        self.live = live

    def create(
        self,
        aligned_volume: str,
        table_name: str,
        schema_type: str,
        *,
        user_id: str,
        voxel_resolution: tuple[float, float, float],
        description: str = "",
        reference_table: str | None = None,
        notice_text: str | None = None,
        read_permission: str = "PUBLIC",
        write_permission: str = "PRIVATE",
        flat_segmentation_source: str | None = None,
        pcg_table_name: str | None = None,
        created: datetime | None = None,
    ) -> AnnotationTable:
        schema = get_schema_type(schema_type)
        _check_table_name(table_name)
        _check_permissions(read_permission, write_permission)
        _check_resolution(voxel_resolution)
        if schema.is_reference and not reference_table:
            raise InvalidRequest(
                f"schema {schema_type!r} is a reference type: give reference_table, the table "
                "whose ids target_id points to"
            )
        if not schema.is_reference and reference_table:
            raise InvalidRequest(
                f"schema {schema_type!r} has no target_id, so reference_table must be empty"
            )
        created = created or now()
        with self.live.begin() as conn:
            if reference_table:
                self._require(conn, aligned_volume, reference_table)
            if self._find(conn, aligned_volume, table_name) is not None:
                raise Conflict(f"table {table_name!r} already exists in {aligned_volume!r}")
            vx, vy, vz = voxel_resolution
            conn.execute(
                annotation_tables.insert().values(
                    aligned_volume=aligned_volume, table_name=table_name,
                    schema_type=schema_type, reference_table=reference_table or None,
                    description=description, notice_text=notice_text, user_id=user_id,
                    voxel_resolution_x=vx, voxel_resolution_y=vy, voxel_resolution_z=vz,
                    read_permission=read_permission, write_permission=write_permission,
                    flat_segmentation_source=flat_segmentation_source,
                    pcg_table_name=pcg_table_name, created=created, last_modified=created,
                    valid=True,
                )
            )
        return self.get(aligned_volume, table_name)

    def get(self, aligned_volume: str, table_name: str) -> AnnotationTable:
        with self.live.connect() as conn:
            return self._require(conn, aligned_volume, table_name)

    def list(self, aligned_volume: str) -> list[AnnotationTable]:
        query = sa.select(annotation_tables).where(
            annotation_tables.c.aligned_volume == aligned_volume,
            annotation_tables.c.deleted.is_(None),
        ).order_by(annotation_tables.c.id)
        with self.live.connect() as conn:
            return [_from_row(r) for r in conn.execute(query).mappings()]

    def names(self, aligned_volume: str) -> list[str]:
        return [t.table_name for t in self.list(aligned_volume)]

    def touch_in(self, conn: sa.Connection, table: AnnotationTable, when: datetime) -> None:
        """Record a change to the table's rows (inside the writer's transaction)."""
        conn.execute(annotation_tables.update().where(annotation_tables.c.id == table.id)
                     .values(last_modified=when))

    def allocate_ids(self, conn: sa.Connection, table: AnnotationTable, count: int) -> int:
        """Reserve ``count`` consecutive row ids; returns the first. The UPDATE comes first
        so that it takes the write lock before anyone reads the counter."""
        conn.execute(annotation_tables.update().where(annotation_tables.c.id == table.id)
                     .values(next_id=annotation_tables.c.next_id + count))
        after = conn.execute(sa.select(annotation_tables.c.next_id).where(
            annotation_tables.c.id == table.id)).scalar_one()
        return int(after) - count

    def add_segment(self, table: AnnotationTable, segment: Segment, max_id: int,
                    when: datetime | None = None) -> None:
        """Register a bulk-loaded segment (whose largest row id is ``max_id``) as part of the
        table's rows."""
        with self.live.begin() as conn:
            conn.execute(
                table_segments.insert().values(
                    table_id=table.id, path=segment.path, num_rows=segment.num_rows,
                    sort_key=segment.sort_key, roots_at=segment.roots_at, added=when or now(),
                )
            )
            conn.execute(
                annotation_tables.update()
                .where(annotation_tables.c.id == table.id)
                .values(last_modified=when or now(),
                        next_id=sa.case((annotation_tables.c.next_id <= max_id, max_id + 1),
                                        else_=annotation_tables.c.next_id))
            )

    def segments(self, table: AnnotationTable) -> list[Segment]:
        query = sa.select(table_segments).where(table_segments.c.table_id == table.id)
        with self.live.connect() as conn:
            rows = conn.execute(query.order_by(table_segments.c.added)).mappings().all()
        return [Segment(r["path"], r["num_rows"], r["sort_key"], r["roots_at"]) for r in rows]

    def segment_files(self) -> set[str]:
        """The files of every table's registered segments (bulk loads)."""
        with self.live.connect() as conn:
            return set(conn.execute(sa.select(table_segments.c.path)).scalars())

    def segment_sort_keys(self) -> dict[str, str]:
        """The key each registered segment is sorted by."""
        with self.live.connect() as conn:
            rows = conn.execute(sa.select(table_segments.c.path, table_segments.c.sort_key))
            return {path: key for path, key in rows}

    def _find(self, conn: sa.Connection, aligned_volume: str,
              table_name: str) -> AnnotationTable | None:
        row = conn.execute(
            sa.select(annotation_tables).where(
                annotation_tables.c.aligned_volume == aligned_volume,
                annotation_tables.c.table_name == table_name,
                annotation_tables.c.deleted.is_(None),
            )
        ).mappings().first()
        return None if row is None else _from_row(row)

    def _require(self, conn: sa.Connection, aligned_volume: str,
                 table_name: str) -> AnnotationTable:
        table = self._find(conn, aligned_volume, table_name)
        if table is None:
            known = conn.execute(
                sa.select(annotation_tables.c.table_name).where(
                    annotation_tables.c.aligned_volume == aligned_volume,
                    annotation_tables.c.deleted.is_(None),
                )
            ).scalars()
            raise TableNotFound(
                f"no table {table_name!r} in aligned volume {aligned_volume!r}; tables: "
                f"{describe_choices(known)}",
                table=table_name,
            )
        return table


def _from_row(row: Any) -> AnnotationTable:
    values = dict(row)
    resolution = (
        values.pop("voxel_resolution_x"),
        values.pop("voxel_resolution_y"),
        values.pop("voxel_resolution_z"),
    )
    return AnnotationTable(voxel_resolution=resolution, **values)


def _check_table_name(name: str) -> None:
    if not _TABLE_NAME.match(name):
        raise InvalidRequest(
            f"table name {name!r} is not accepted: use 1-63 lower-case letters, digits and "
            "underscores, starting with a letter"
        )


def _check_permissions(read: str, write: str) -> None:
    for label, value in (("read_permission", read), ("write_permission", write)):
        if value not in PERMISSIONS:
            raise InvalidRequest(f"{label} {value!r} is not one of {', '.join(PERMISSIONS)}")


def _check_resolution(resolution: tuple[float, float, float]) -> None:
    if len(resolution) != 3 or any(not (float(r) > 0) for r in resolution):
        raise InvalidRequest(
            f"voxel resolution {resolution!r} must be three positive numbers (nm per voxel)"
        )
