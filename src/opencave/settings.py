"""Settings of one opencave instance, from arguments or ``OPENCAVE_*`` environment
variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    #: SQLAlchemy URL of the live store; default: SQLite inside the data directory.
    database_url: str | None = field(default_factory=lambda: os.environ.get(
        "OPENCAVE_DATABASE_URL") or None)
    #: Cap on rows per query (the original's QUERY_LIMIT_SIZE); None means no cap.
    row_cap: int | None = field(default_factory=lambda: _env_int("OPENCAVE_ROW_CAP"))
    #: DuckDB worker threads and memory limit for queries (None: DuckDB's defaults).
    query_threads: int | None = field(default_factory=lambda: _env_int("OPENCAVE_THREADS"))
    query_memory_limit: str | None = field(default_factory=lambda: os.environ.get(
        "OPENCAVE_MEMORY_LIMIT") or None)
    #: Make a version of every datastack daily at this UTC time ("08:10"); None: never.
    materialize_at: str | None = field(default_factory=lambda: os.environ.get(
        "OPENCAVE_MATERIALIZE_AT") or None)
    #: Days a new version stays listed before it expires; None keeps versions forever.
    #: Expired versions stay on disk and queryable by number; they leave default listings.
    version_lifetime_days: int | None = field(
        default_factory=lambda: _env_int("OPENCAVE_VERSION_LIFETIME_DAYS"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
