"""The annotation engine: create tables, write and read annotations, with permissions.

Writes are validated against the schema, points are looked up in the segmentation at write
time (supervoxel under the point, its root now), and each batch — of any size — is one
transaction: all of it is written or none of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from ..auth import Access, Level, User
from ..errors import InvalidRequest, NotFound
from ..info import InfoService
from ..schemas import Kind, flatten_annotations
from ..storage.files import DataDir
from ..timestamps import format_iso, now
from .rows import LiveRows
from .tables import PERMISSIONS, AnnotationTable, AnnotationTables, annotation_tables

_EDITABLE = ("description", "notice_text", "read_permission", "write_permission",
             "flat_segmentation_source")


@dataclass
class Segmentation:
    """What writes need from the segmentation: find the supervoxel under points, and roots."""

    locate: Callable[[np.ndarray, tuple[float, float, float]], np.ndarray] | None
    get_roots: Callable[[np.ndarray, datetime], np.ndarray]


class AnnotationService:
    def __init__(self, data: DataDir, info: InfoService, tables: AnnotationTables,
                 rows: LiveRows, access: Access,
                 segmentation: Callable[[str], Segmentation | None],
                 run_sql: Callable[..., pa.Table]) -> None:
        self.data = data
        self.info = info
        self.tables = tables
        self.rows = rows
        self.access = access
        self.segmentation = segmentation
        self._run_sql = run_sql

    # --- tables ----------------------------------------------------------------------

    def list_tables(self, user: User, volume: str) -> list[str]:
        level = self.access.volume_level(user, volume)
        if level < Level.VIEW:
            self.access.require_volume(user, volume, Level.VIEW)
        return [t.table_name for t in self.tables.list(volume)
                if self.access.may_read(user, t, level)]

    def table(self, user: User, volume: str, name: str) -> AnnotationTable:
        table = self.tables.get(volume, name)
        level = self.access.volume_level(user, volume)
        self.access.require_table(user, table, level, Level.VIEW)
        return table

    def create_table(self, user: User, volume: str, body: Mapping[str, Any]) -> AnnotationTable:
        self.access.require_volume(user, volume, Level.EDIT)
        meta = body.get("metadata") or {}
        if not isinstance(meta, Mapping):
            raise InvalidRequest("metadata must be an object")
        for key in ("schema_type", "table_name"):
            if not isinstance(body.get(key), str):
                raise InvalidRequest(f"create_table needs {key!r} (a string)")
        reference = (meta.get("table_metadata") or {}).get("reference_table")
        owner = user.user_id
        if meta.get("user_id") not in (None, "") and user.admin:
            owner = str(meta["user_id"])
        table = self.tables.create(
            volume, body["table_name"], body["schema_type"], user_id=owner,
            voxel_resolution=_resolution(meta),
            description=_text(meta.get("description", ""), "description"),
            reference_table=reference, notice_text=_notice(meta.get("notice_text")),
            read_permission=meta.get("read_permission", "PUBLIC"),
            write_permission=meta.get("write_permission", "PRIVATE"),
            flat_segmentation_source=meta.get("flat_segmentation_source"),
            pcg_table_name=self._segmentation_table(volume),
        )
        self.rows.sql_tables(table)
        return table

    def update_metadata(self, user: User, volume: str, name: str,
                        changes: Mapping[str, Any]) -> AnnotationTable:
        table = self.tables.get(volume, name)
        self.access.require_owner(user, table)
        values: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in _EDITABLE:
                raise InvalidRequest(f"metadata field {key!r} cannot be changed; editable: "
                                     f"{', '.join(_EDITABLE)}")
            if key.endswith("_permission") and value not in PERMISSIONS:
                raise InvalidRequest(f"{key} {value!r} is not one of {', '.join(PERMISSIONS)}")
            values[key] = _notice(value) if key == "notice_text" else value
        if values:
            with self.tables.live.begin() as conn:
                conn.execute(annotation_tables.update().where(
                    annotation_tables.c.id == table.id).values(last_modified=now(), **values))
        return self.tables.get(volume, name)

    def delete_table(self, user: User, volume: str, name: str) -> None:
        """Hide the table from now on; versions made before keep it."""
        table = self.tables.get(volume, name)
        self.access.require_owner(user, table)
        with self.tables.live.begin() as conn:
            conn.execute(annotation_tables.update().where(
                annotation_tables.c.id == table.id).values(deleted=now(), valid=False))

    def count(self, user: User, volume: str, name: str) -> int:
        """Annotations valid now."""
        table = self.table(user, volume, name)
        paths = self._segment_paths(table)
        stored = 0 if not paths else self._run_sql(
            "SELECT count(*) AS n FROM read_parquet(?) WHERE deleted IS NULL", [paths]
        ).column("n")[0].as_py()
        live, _ = self.rows.count(table)
        deleted, _ = self.rows.deletions(table)
        return int(stored) + live - len(deleted)

    # --- annotations -----------------------------------------------------------------

    def post(self, user: User, volume: str, name: str, annotations: Any) -> list[int]:
        table = self._writable(user, volume, name)
        records = flatten_annotations(table.schema, annotations)
        when = now()
        self._check_targets(table, records)
        self._complete(table, records, user, when)
        with self.tables.live.begin() as conn:
            first = self.tables.allocate_ids(conn, table, len(records))
            ids = list(range(first, first + len(records)))
            for record, new_id in zip(records, ids, strict=True):
                record["id"] = new_id
            self.rows.insert(conn, table, records)
            self.tables.touch_in(conn, table, when)
        return ids

    def update(self, user: User, volume: str, name: str, annotations: Any) -> dict[int, int]:
        table = self._writable(user, volume, name)
        records = flatten_annotations(table.schema, annotations, with_ids=True)
        old_ids = [r.pop("id") for r in records]
        if len(set(old_ids)) != len(old_ids):
            raise InvalidRequest("an update batch names the same annotation id twice")
        when = now()
        self._check_targets(table, records)
        self._complete(table, records, user, when)
        with self.tables.live.begin() as conn:
            self._require_valid(table, old_ids, conn)
            first = self.tables.allocate_ids(conn, table, len(records))
            new_ids = list(range(first, first + len(records)))
            for record, new_id in zip(records, new_ids, strict=True):
                record["id"] = new_id
            self.rows.insert(conn, table, records)
            self.rows.delete(conn, table, old_ids, when, new_ids)
            self.tables.touch_in(conn, table, when)
        return dict(zip(old_ids, new_ids, strict=True))

    def delete(self, user: User, volume: str, name: str, ids: Any) -> list[int]:
        table = self._writable(user, volume, name)
        wanted = _id_list(ids)
        when = now()
        with self.tables.live.begin() as conn:
            self._require_valid(table, wanted, conn)
            self.rows.delete(conn, table, wanted, when)
            self.tables.touch_in(conn, table, when)
        return wanted

    def get(self, user: User, volume: str, name: str, ids: Any) -> list[dict[str, Any]]:
        table = self.table(user, volume, name)
        wanted = _id_list(ids)
        found = self._stored_rows(table, wanted)
        live = self.rows.rows(table, ids=wanted).to_pylist()
        deletions = self.rows.deletion_records(table, wanted)
        by_id = {r["id"]: r for r in found + live}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise NotFound(f"no annotation(s) {missing[:10]} in table {name!r}")
        out = []
        for i in wanted:
            row = dict(by_id[i])
            if i in deletions:
                row["deleted"] = deletions[i]["deleted"]
                row["superceded_id"] = deletions[i]["superceded_id"]
            row["valid"] = row.get("deleted") is None
            out.append(_json_row(table, row))
        return out

    # --- internals -------------------------------------------------------------------

    def _writable(self, user: User, volume: str, name: str) -> AnnotationTable:
        table = self.tables.get(volume, name)
        level = self.access.volume_level(user, volume)
        self.access.require_table(user, table, level, Level.EDIT)
        return table

    def _segmentation_table(self, volume: str) -> str | None:
        stacks = self.info.datastacks_of_volume(volume)
        return stacks[0].segmentation_table if stacks else None

    def _complete(self, table: AnnotationTable, records: list[dict[str, Any]], user: User,
                  when: datetime) -> None:
        """Server-filled columns: creation time, validity, user ids, supervoxels, roots."""
        for record in records:
            record["created"] = when
            record["valid"] = True
            for field in table.schema.fields:
                if field.kind is Kind.USER_ID:
                    record[field.name] = int(user.user_id) if user.user_id.isdigit() else None
        points = table.schema.bound_points
        if not points:
            return
        seg = self.segmentation(table.pcg_table_name) if table.pcg_table_name else None
        for point in points:
            self._lookup(table, records, point, seg, when)

    def _lookup(self, table: AnnotationTable, records: list[dict[str, Any]], point: str,
                seg: Segmentation | None, when: datetime) -> None:
        sv_key, root_key = f"{point}_supervoxel_id", f"{point}_root_id"
        if seg is None:
            for record in records:
                record[root_key] = None
            return
        given = np.array([r[sv_key] or 0 for r in records], dtype=np.uint64)
        missing = np.flatnonzero(given == 0)
        if len(missing) and seg.locate is not None:
            xyz = np.array([[records[i][f"{point}_position_{a}"] for a in "xyz"]
                            for i in missing], dtype=np.float64)
            given[missing] = seg.locate(xyz, table.voxel_resolution)
        roots = seg.get_roots(given, when)
        for record, sv, root in zip(records, given, roots, strict=True):
            record[sv_key] = int(sv)
            record[root_key] = int(root)

    def _check_targets(self, table: AnnotationTable, records: list[dict[str, Any]]) -> None:
        if not table.reference_table:
            return
        target = self.tables.get(table.aligned_volume, table.reference_table)
        wanted = [int(r["target_id"]) for r in records]
        valid = self._valid_ids(target, wanted)
        for index, target_id in enumerate(wanted):
            if target_id not in valid:
                raise InvalidRequest(
                    f"annotation {index} field 'target_id': {target_id} is not a valid "
                    f"annotation of the reference table {target.table_name!r}")

    def _require_valid(self, table: AnnotationTable, ids: Sequence[int],
                       conn: sa.Connection) -> None:
        valid = self._valid_ids(table, ids, conn)
        for index, i in enumerate(ids):
            if i not in valid:
                raise InvalidRequest(f"annotation {index}: id {i} is not a valid annotation of "
                                     f"table {table.table_name!r} (unknown or already deleted)")

    def _valid_ids(self, table: AnnotationTable, ids: Iterable[int],
                   conn: sa.Connection | None = None) -> set[int]:
        wanted = sorted({int(i) for i in ids})
        present = self.rows.live_ids(table, wanted, conn) | {
            r["id"] for r in self._stored_rows(table, wanted, columns=("id", "deleted"))
            if r["deleted"] is None}
        return present - self.rows.deleted_ids(table, wanted, conn)

    def _stored_rows(self, table: AnnotationTable, ids: Sequence[int],
                     columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        paths = self._segment_paths(table)
        if not paths or not ids:
            return []
        select = "*" if columns is None else ", ".join(f'"{c}"' for c in columns)
        found = self._run_sql(
            f"SELECT DISTINCT ON (id) {select} FROM read_parquet(?) "
            "WHERE id IN (SELECT id FROM wanted) ORDER BY id",
            [paths], tables={"wanted": pa.table({"id": np.asarray(ids, dtype=np.int64)})})
        return found.to_pylist()

    def _segment_paths(self, table: AnnotationTable) -> list[str]:
        return [str(self.data.absolute(s.path)) for s in self.tables.segments(table)]


def _json_row(table: AnnotationTable, row: dict[str, Any]) -> dict[str, Any]:
    """A flat dict with points as ``<pt>_position: [x, y, z]`` (like the original)."""
    out: dict[str, Any] = {}
    for column in table.schema.columns():
        value = row.get(column.name)
        if column.axis is not None:
            base = column.name[:-2]
            out.setdefault(base, []).append(value)
            continue
        out[column.name] = format_iso(value) if isinstance(value, datetime) else value
    return out


def _id_list(ids: Any) -> list[int]:
    if isinstance(ids, int | str):
        ids = [ids]
    try:
        values = [int(i) for i in ids]
    except (TypeError, ValueError):
        raise InvalidRequest("annotation_ids must be a list of integer ids") from None
    if not values:
        raise InvalidRequest("give at least one annotation id")
    if len(set(values)) != len(values):
        raise InvalidRequest("the same annotation id is given twice")
    return values


def _resolution(meta: Mapping[str, Any]) -> tuple[float, float, float]:
    try:
        return (float(meta["voxel_resolution_x"]), float(meta["voxel_resolution_y"]),
                float(meta["voxel_resolution_z"]))
    except (KeyError, TypeError, ValueError):
        raise InvalidRequest("metadata needs voxel_resolution_x, _y and _z (nm per voxel)"
                             ) from None


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be text")
    return value


def _notice(value: Any) -> str | None:
    """caveclient sends "" to remove a notice."""
    if value in (None, ""):
        return None
    return _text(value, "notice_text")
