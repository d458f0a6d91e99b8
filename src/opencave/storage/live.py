"""The live store: small transactional writes (metadata, API-written annotations, the
segmentation edit log) in SQLAlchemy Core.

Embedded default: SQLite in the data directory (WAL, so readers never block the single
writer, and several processes — ``opencave serve`` plus CLI commands — share one file).
Shared deployments: any SQLAlchemy URL, e.g. PostgreSQL.

Each component declares its tables on :data:`LIVE_METADATA` in its own module; the store
creates whatever is declared.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, MetaData, TypeDecorator, create_engine, event

from ..timestamps import as_utc
from .files import DataDir

#: Every live table of every component is declared on this one MetaData.
LIVE_METADATA = MetaData()


class LiveStore:
    """A SQLAlchemy engine over the live database, with the tables created."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = _make_engine(url)
        LIVE_METADATA.create_all(self.engine)

    @classmethod
    def in_directory(cls, data_dir: Path) -> LiveStore:
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{DataDir(data_dir).live_store}")

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def _make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    return engine


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as naive UTC, always read back as timezone-aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return as_utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)
