"""Storage shared by the components: the transactional live store (SQLAlchemy Core) and the
immutable columnar snapshot files (Parquet, read with DuckDB)."""

from .live import LIVE_METADATA, LiveStore, UTCDateTime

__all__ = ["LIVE_METADATA", "LiveStore", "UTCDateTime"]
