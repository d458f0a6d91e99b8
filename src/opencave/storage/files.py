"""The data directory and its immutable files.

Layout (everything under one root, so a data directory can be copied or synced as a whole)::

    live.sqlite                         the live store (SQLite default)
    tables/<aligned_volume>/<table>/    immutable row segments of each annotation table
    versions/<datastack>/<version>/     per-version files: deletion sets, manifest.json
    segmentation/<table_id>/            the segmentation graph's base arrays

Files are published atomically: written under a temporary name, flushed to disk, then
renamed into place, so a reader never sees a partial file and a killed writer leaves at
most an orphaned temporary file (cleaned up by :meth:`DataDir.remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

_TMP_MARK = ".tmp-"


@dataclass(frozen=True)
class DataDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def versions(self) -> Path:
        return self.root / "versions"

    @property
    def spill(self) -> Path:
        """Where DuckDB spills what does not fit in its memory."""
        return self.root / ".spill"

    @property
    def segmentation(self) -> Path:
        return self.root / "segmentation"

    def table_dir(self, aligned_volume: str, table: str) -> Path:
        return self.tables / aligned_volume / table

    def version_dir(self, datastack: str, version: int) -> Path:
        return self.versions / datastack / str(version)

    def relative(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.root).as_posix()

    def absolute(self, relative: str) -> Path:
        return self.root / relative

    def exists(self) -> bool:
        return (self.root / "live.sqlite").exists()

    def remove_stale_temporaries(self) -> int:
        """Delete temporaries left by killed writers — files, and the spill directories DuckDB
        keeps beside a database it is writing; returns how many were removed."""
        removed = 0
        for path in list(self.root.rglob(f"*{_TMP_MARK}*")):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
        return removed


def unique_name(prefix: str, suffix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}{suffix}"


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success it is synced and renamed to
    ``final``; on failure it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}{_TMP_MARK}{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(final: Path, write: Callable[[Path], None]) -> Path:
    with atomic_path(final) as tmp:
        write(tmp)
    return final


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with suppress(OSError):  # some file systems cannot sync directories
        _fsync(path)
