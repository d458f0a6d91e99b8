"""Settings of one opencave instance, from arguments or ``OPENCAVE_*`` environment
variables."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidRequest
from .materialize.compaction import SMALL_TABLE_ROWS

DEFAULT_QUERY_MEMORY = "1GB"
#: Disk for finished results kept for repeats (:mod:`opencave.materialize.results`).
DEFAULT_RESULT_CACHE = 2 * 2**30
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}

#: Whole-number settings: field -> (its environment variable, the smallest value accepted).
_WHOLE_NUMBERS = {
    "row_cap": ("OPENCAVE_ROW_CAP", 1), "query_threads": ("OPENCAVE_THREADS", 1),
    "max_queries": ("OPENCAVE_MAX_QUERIES", 1),
    "lookup_queries": ("OPENCAVE_LOOKUP_QUERIES", 1),
    "compact_whole_rows": ("OPENCAVE_COMPACT_WHOLE_ROWS", 0),
    "version_lifetime_days": ("OPENCAVE_VERSION_LIFETIME_DAYS", 1),
}


#: How Arrow results are compressed: "auto" leaves them uncompressed for clients on this
#: machine (loopback: compressing and decompressing cost more than moving the bytes) and
#: LZ4-compresses them for everyone else.
ARROW_COMPRESSIONS = ("auto", "lz4", "zstd", "none")


class InvalidSetting(InvalidRequest):
    kind = "invalid_setting"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidSetting(f"{name} must be a whole number, got {value!r}") from None


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    #: SQLAlchemy URL of the live store; default: SQLite inside the data directory.
    database_url: str | None = field(default_factory=lambda: os.environ.get(
        "OPENCAVE_DATABASE_URL") or None)
    #: Cap on rows per query (the original's QUERY_LIMIT_SIZE); None means no cap.
    row_cap: int | None = field(default_factory=lambda: _env_int("OPENCAVE_ROW_CAP"))
    #: DuckDB worker threads for queries (None: one per core).
    query_threads: int | None = field(default_factory=lambda: _env_int("OPENCAVE_THREADS"))
    #: Queries running at once; more wait for a slot (a 503 after two minutes).
    max_queries: int | None = field(default_factory=lambda: _env_int("OPENCAVE_MAX_QUERIES"))
    #: Slots kept for lookups (a few neurons' rows, small tables) beside those: a neuron's
    #: synapses do not wait while other clients download large results.
    lookup_queries: int | None = field(default_factory=lambda: _env_int(
        "OPENCAVE_LOOKUP_QUERIES"))
    #: DuckDB memory for queries; beyond it, joins and sorts spill to ``<data>/.spill``.
    #: It also bounds DuckDB's cache of file blocks, which at DuckDB's default (80% of RAM)
    #: grew a server streaming a 10^8-row table to 6 GiB; at 1 GB the server peaked at
    #: 1.4 GiB at the same speed.
    query_memory_limit: str | None = field(default_factory=lambda: os.environ.get(
        "OPENCAVE_MEMORY_LIMIT") or DEFAULT_QUERY_MEMORY)
    #: Tables with fewer visible rows are compacted into one part as versions are made.
    compact_whole_rows: int = field(default_factory=lambda: _default(
        _env_int("OPENCAVE_COMPACT_WHOLE_ROWS"), SMALL_TABLE_ROWS))
    #: Compression of Arrow results (one of ``ARROW_COMPRESSIONS``).
    arrow_compression: str = field(default_factory=lambda: os.environ.get(
        "OPENCAVE_ARROW_COMPRESSION") or "auto")
    #: Make a version of every datastack daily at this UTC time ("08:10"); None: never.
    materialize_at: str | None = field(default_factory=lambda: os.environ.get(
        "OPENCAVE_MATERIALIZE_AT") or None)
    #: Days a new version stays listed before it expires; None keeps versions forever.
    #: Expired versions stay on disk and queryable by number; they leave default listings.
    version_lifetime_days: int | None = field(
        default_factory=lambda: _env_int("OPENCAVE_VERSION_LIFETIME_DAYS"))

    #: Bytes of disk for query results kept for repeats (``<data>/results``); 0: none.
    result_cache_bytes: int = field(default_factory=lambda: _env_size(
        "OPENCAVE_RESULT_CACHE", DEFAULT_RESULT_CACHE))

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        for name, (variable, minimum) in _WHOLE_NUMBERS.items():
            value = getattr(self, name)
            if value is not None and value < minimum:
                raise InvalidSetting(f"{name} ({variable}) must be at least {minimum}, "
                                     f"got {value}")
        if self.result_cache_bytes < 0:
            raise InvalidSetting("result_cache_bytes (OPENCAVE_RESULT_CACHE) must not be "
                                 f"negative, got {self.result_cache_bytes}")
        if self.arrow_compression not in ARROW_COMPRESSIONS:
            raise InvalidSetting(
                f"arrow_compression (OPENCAVE_ARROW_COMPRESSION) must be one of "
                f"{', '.join(ARROW_COMPRESSIONS)}; got {self.arrow_compression!r}")


def parse_size(text: str, name: str) -> int:
    """A size in bytes from ``"2GiB"``, ``"500MB"``, ``"0"`` (units: B, KB, MB, GB, TB and
    KiB … TiB, any case)."""
    number = text.strip().upper().rstrip("BIKMGT ")
    unit = text.strip().upper()[len(number):].strip()
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _SIZE_UNITS or not 0 <= value < math.inf:  # also refuses nan
        raise InvalidSetting(f"{name} must be a size such as 2GiB, 500MB or 0 (units: B, "
                             f"KB, MB, GB, TB, KiB, MiB, GiB, TiB); got {text!r}")
    return int(value * _SIZE_UNITS[unit])


def _env_size(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return parse_size(value, name) if value else default


def _default(value: int | None, default: int) -> int:
    return default if value is None else value
