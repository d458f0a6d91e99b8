"""Materialized versions: frozen, immutable snapshots of a datastack's tables at a timestamp.

A version row is created RUNNING and invisible; it becomes AVAILABLE and valid in the single
transaction that also records its table snapshots, so readers see a version whole or not at
all. Versions are kept forever unless an expiry policy says otherwise.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from ..errors import Conflict, VersionNotFound, describe_choices
from ..storage import LIVE_METADATA, LiveStore, UTCDateTime
from ..timestamps import as_utc, format_version_timestamp, now
from .snapshots import TableSnapshot

versions = sa.Table(
    "versions",
    LIVE_METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("datastack", sa.String, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("time_stamp", UTCDateTime, nullable=False),
    sa.Column("expires_on", UTCDateTime),
    sa.Column("valid", sa.Boolean, nullable=False, default=False),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("parent_version", sa.Integer),
    sa.Column("is_merged", sa.Boolean, nullable=False, default=False),
    sa.Column("created", UTCDateTime, nullable=False),
    # host:pid of the process building a RUNNING version, to tell a live run from a crash
    sa.Column("runner", sa.String),
    sa.UniqueConstraint("datastack", "version"),
)

version_tables = sa.Table(
    "version_tables",
    LIVE_METADATA,
    sa.Column("version_id", sa.ForeignKey("versions.id"), primary_key=True),
    sa.Column("table_name", sa.String, primary_key=True),
    sa.Column("row_count", sa.BigInteger, nullable=False),
    sa.Column("snapshot", sa.JSON, nullable=False),
)


class Status(StrEnum):
    RUNNING = "RUNNING"
    AVAILABLE = "AVAILABLE"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class Version:
    id: int
    datastack: str
    version: int
    time_stamp: datetime
    status: Status
    valid: bool
    created: datetime
    expires_on: datetime | None = None
    parent_version: int | None = None
    is_merged: bool = False

    def to_json(self) -> dict[str, Any]:
        """The version metadata dict caveclient reads (timestamps without offset)."""
        return {
            "version": self.version,
            "time_stamp": format_version_timestamp(self.time_stamp),
            "expires_on": (
                None if self.expires_on is None else format_version_timestamp(self.expires_on)
            ),
            "id": self.id,
            "datastack": self.datastack,
            "valid": self.valid,
            "status": self.status.value,
            "is_merged": self.is_merged,
            "parent_version": self.parent_version,
        }


class Versions:
    """The registry of versions in the live store."""

    def __init__(self, live: LiveStore) -> None:
        self.live = live

    def list(self, datastack: str, *, include_invalid: bool = False) -> list[Version]:
        query = sa.select(versions).where(versions.c.datastack == datastack)
        if not include_invalid:
            query = query.where(versions.c.valid.is_(True))
        with self.live.connect() as conn:
            rows = conn.execute(query.order_by(versions.c.version)).mappings().all()
        return [_version(r) for r in rows]

    def available(self, datastack: str, *, include_expired: bool = False) -> list[Version]:
        """Queryable versions: AVAILABLE ones, plus EXPIRED ones if asked (their files are kept
        unless a policy removed them)."""
        statuses = [Status.AVAILABLE] + ([Status.EXPIRED] if include_expired else [])
        return [v for v in self.list(datastack, include_invalid=True) if v.status in statuses]

    def get(self, datastack: str, version: int) -> Version:
        with self.live.connect() as conn:
            row = conn.execute(
                sa.select(versions).where(
                    versions.c.datastack == datastack, versions.c.version == version
                )
            ).mappings().first()
        if row is None or row["status"] not in (Status.AVAILABLE, Status.EXPIRED):
            known = [v.version for v in self.available(datastack, include_expired=True)]
            raise VersionNotFound(
                f"no version {version} of datastack {datastack!r}; available versions: "
                f"{describe_choices(known)}",
                version=version,
            )
        return _version(row)

    def latest(self, datastack: str) -> Version | None:
        available = self.available(datastack)
        return available[-1] if available else None

    def at_or_before(self, datastack: str, timestamp: datetime) -> Version | None:
        """The newest available version whose timestamp is ≤ ``timestamp``."""
        candidates = [v for v in self.available(datastack) if v.time_stamp <= as_utc(timestamp)]
        return max(candidates, key=lambda v: v.time_stamp) if candidates else None

    def next_number(self, datastack: str) -> int:
        with self.live.connect() as conn:
            current = conn.execute(
                sa.select(sa.func.max(versions.c.version)).where(
                    versions.c.datastack == datastack
                )
            ).scalar()
        return 1 if current is None else int(current) + 1

    def begin(self, datastack: str, version: int, time_stamp: datetime, *,
              parent_version: int | None = None, expires_on: datetime | None = None) -> Version:
        """Register a RUNNING (invisible) version. A failed earlier attempt with the same
        number is replaced; an available one is a conflict."""
        try:
            return self._begin(datastack, version, time_stamp, parent_version, expires_on)
        except sa.exc.IntegrityError:
            raise Conflict(f"version {version} of {datastack!r} is being created by another "
                           "run; try again when it is done") from None

    def _begin(self, datastack: str, version: int, time_stamp: datetime,
               parent_version: int | None, expires_on: datetime | None) -> Version:
        with self.live.begin() as conn:
            existing = conn.execute(
                sa.select(versions).where(
                    versions.c.datastack == datastack, versions.c.version == version
                )
            ).mappings().first()
            if existing is not None:
                if existing["status"] in (Status.AVAILABLE, Status.EXPIRED):
                    raise Conflict(f"version {version} of {datastack!r} already exists")
                if existing["status"] == Status.RUNNING and _alive(existing["runner"]):
                    raise Conflict(f"version {version} of {datastack!r} is being created "
                                   f"right now (by {existing['runner']})")
                conn.execute(version_tables.delete().where(
                    version_tables.c.version_id == existing["id"]))
                conn.execute(versions.delete().where(versions.c.id == existing["id"]))
            conn.execute(
                versions.insert().values(
                    datastack=datastack, version=version, time_stamp=as_utc(time_stamp),
                    expires_on=expires_on, valid=False, status=Status.RUNNING,
                    parent_version=parent_version, is_merged=False, created=now(),
                    runner=f"{socket.gethostname()}:{os.getpid()}",
                )
            )
            row = conn.execute(
                sa.select(versions).where(
                    versions.c.datastack == datastack, versions.c.version == version
                )
            ).mappings().one()
        return _version(row)

    def publish(self, version: Version, snapshots: list[TableSnapshot]) -> Version:
        """Record the table snapshots and make the version visible, in one transaction."""
        with self.live.begin() as conn:
            for snap in snapshots:
                conn.execute(
                    version_tables.insert().values(
                        version_id=version.id, table_name=snap.table,
                        row_count=snap.row_count, snapshot=snap.to_json(),
                    )
                )
            conn.execute(
                versions.update().where(versions.c.id == version.id)
                .values(status=Status.AVAILABLE, valid=True)
            )
        return self.get(version.datastack, version.version)

    def replace_snapshots(self, version: Version, snapshots: list[TableSnapshot]) -> None:
        """Swap table snapshots of a published version for equivalent ones (same rows, e.g.
        compacted), in one transaction."""
        with self.live.begin() as conn:
            for snap in snapshots:
                conn.execute(
                    version_tables.update().where(
                        version_tables.c.version_id == version.id,
                        version_tables.c.table_name == snap.table,
                    ).values(row_count=snap.row_count, snapshot=snap.to_json())
                )

    def expire(self, datastack: str, when: datetime) -> list[int]:
        """Apply the expiry policy: available versions whose ``expires_on`` has passed leave
        the default listings (their files stay; they remain queryable by number)."""
        with self.live.begin() as conn:
            due = conn.execute(sa.select(versions.c.id, versions.c.version).where(
                versions.c.datastack == datastack, versions.c.status == Status.AVAILABLE,
                versions.c.expires_on.is_not(None), versions.c.expires_on <= as_utc(when),
            )).all()
            if due:
                conn.execute(versions.update().where(versions.c.id.in_([d.id for d in due]))
                             .values(status=Status.EXPIRED))
        return [d.version for d in due]

    def keep(self, datastack: str, version: int) -> Version:
        """Keep a version forever (an "LTS" version): no expiry, listed again."""
        found = self.get(datastack, version)
        with self.live.begin() as conn:
            conn.execute(versions.update().where(versions.c.id == found.id)
                         .values(expires_on=None, status=Status.AVAILABLE, valid=True))
        return self.get(datastack, version)

    def fail(self, version: Version) -> None:
        with self.live.begin() as conn:
            conn.execute(
                versions.update().where(versions.c.id == version.id)
                .values(status=Status.FAILED, valid=False)
            )

    def snapshots(self, version: Version) -> dict[str, TableSnapshot]:
        with self.live.connect() as conn:
            rows = conn.execute(
                sa.select(version_tables.c.snapshot).where(
                    version_tables.c.version_id == version.id
                ).order_by(version_tables.c.table_name)
            ).scalars().all()
        snaps = [TableSnapshot.from_json(r) for r in rows]
        return {s.table: s for s in snaps}

    def files(self) -> set[str]:
        """Every file a snapshot of any version (of any status) uses."""
        return {path for snapshot in self._snapshots() for path in snapshot.files()}

    def sort_keys(self) -> dict[str, str]:
        """The key each keyed file of any version's snapshots is sorted by."""
        return {path: key for snapshot in self._snapshots()
                for path, key in snapshot.sort_keys().items()}

    def _snapshots(self) -> list[TableSnapshot]:
        """The table snapshots of every version, of any status."""
        with self.live.connect() as conn:
            rows = conn.execute(sa.select(version_tables.c.snapshot)).scalars().all()
        return [TableSnapshot.from_json(row) for row in rows]

    def table_names(self, version: Version) -> list[str]:
        with self.live.connect() as conn:
            return list(conn.execute(
                sa.select(version_tables.c.table_name).where(
                    version_tables.c.version_id == version.id
                ).order_by(version_tables.c.table_name)
            ).scalars())


def _alive(runner: str | None) -> bool:
    """Whether the process that started a RUNNING version still runs (same host only; a
    run from another host is assumed alive)."""
    if not runner or ":" not in runner:
        return False
    host, pid = runner.rsplit(":", 1)
    if host != socket.gethostname():
        return True
    if int(pid) == os.getpid():
        return False  # this process: the earlier attempt has failed and returned
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _version(row: Any) -> Version:
    return Version(
        id=row["id"], datastack=row["datastack"], version=row["version"],
        time_stamp=row["time_stamp"], status=Status(row["status"]), valid=row["valid"],
        created=row["created"], expires_on=row["expires_on"],
        parent_version=row["parent_version"], is_merged=row["is_merged"],
    )
