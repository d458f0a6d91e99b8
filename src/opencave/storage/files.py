"""The data directory and its immutable files.

Layout (everything under one root, so a data directory can be copied or synced as a whole)::

    live.sqlite                         the live store (SQLite default)
    tables/<aligned_volume>/<table>/    immutable row segments of each annotation table
    versions/<datastack>/<version>/     the masks each version added (ids it hides)
    segmentation/<table_id>/            the segmentation graph's base arrays
    results/                            finished query results kept for repeats (a cache)
    .opencave.lock                      held shared by every process using the directory

Files are published atomically: written under a temporary name, flushed to disk, then
renamed into place, so a reader never sees a partial file and a killed writer leaves at
most an orphaned temporary file. Files are never changed, only superseded: compaction and
killed runs leave files no version uses, which :meth:`DataDir.garbage` finds and
``opencave gc`` removes while it has the directory to itself (:class:`DirectoryLock`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import Conflict

_TMP_MARK = ".tmp-"
_LOCK_NAME = ".opencave.lock"


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
    def live_store(self) -> Path:
        """The SQLite live store's file (when the live store is not on PostgreSQL)."""
        return self.root / "live.sqlite"

    @property
    def spill(self) -> Path:
        """Where DuckDB spills what does not fit in its memory."""
        return self.root / ".spill"

    @property
    def segmentation(self) -> Path:
        return self.root / "segmentation"

    @property
    def results(self) -> Path:
        """Finished query results kept for queries asked again (see
        :mod:`opencave.materialize.results`)."""
        return self.root / "results"

    def table_dir(self, aligned_volume: str, table: str) -> Path:
        return self.tables / aligned_volume / table

    def version_dir(self, datastack: str, version: int) -> Path:
        return self.versions / datastack / str(version)

    def relative(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.root).as_posix()

    def absolute(self, relative: str) -> Path:
        return self.root / relative

    def exists(self) -> bool:
        return self.live_store.exists()

    def lock(self) -> DirectoryLock:
        """The directory's lock, held shared until released (see :class:`DirectoryLock`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return DirectoryLock(self.root / _LOCK_NAME)

    def garbage(self, kept: set[Path]) -> list[Path]:
        """What no one needs: stored files (under ``tables/`` and ``versions/``) not in
        ``kept``, temporaries left by killed writers (files, and the spill directories DuckDB
        keeps beside a database it writes), DuckDB's spill files and the work directories of
        killed segmentation graph builds. Only safe to remove while no other process uses
        the directory: a writer's files are not kept by anyone yet."""
        kept = {path.resolve() for path in kept}
        temporaries = set(self.root.rglob(f"*{_TMP_MARK}*"))
        found = [p for p in temporaries if temporaries.isdisjoint(p.parents)]  # outermost
        if self.spill.is_dir():
            found.extend(self.spill.iterdir())
        found.extend(self.segmentation.glob(f"*/{GRAPH_BUILD_WORK}"))
        for top in (self.tables, self.versions):
            found.extend(p for p in top.rglob("*") if p.is_file() and p.resolve() not in kept
                         and _TMP_MARK not in self.relative(p))
        return found

    @staticmethod
    def remove(paths: list[Path]) -> None:
        """Delete files and directory trees."""
        for path in paths:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


#: Where a segmentation graph build keeps its work files (removed when it finishes).
GRAPH_BUILD_WORK = ".build"


class DirectoryLock:
    """Every process using a data directory holds its lock shared, for as long as it does;
    a task that must be alone in it — removing files no version uses, which a running server
    may still read through the snapshots it cached — takes it exclusively. ``flock``: held by
    an open file and dropped by the kernel when the process dies, on this machine only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None
        try:
            self._file = path.open("a")
            fcntl.flock(self._file, fcntl.LOCK_SH)  # waits only while a task is alone in it
        except OSError:  # read-only, or without locks (some network mounts): serve anyway
            self.release()

    @contextmanager
    def alone(self, task: str) -> Iterator[None]:
        """Hold the lock exclusively for the block; Conflict if another process uses the
        directory, or if its file system cannot tell (``task``: what could not be done)."""
        if self._file is None:
            raise Conflict(f"cannot {task}: {self.path} cannot be locked (a read-only file "
                           "system, or one without file locks), so whether another process "
                           "uses the directory is unknown")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self._file, fcntl.LOCK_SH)  # a failed conversion may drop it
            raise Conflict(
                f"cannot {task}: another opencave process (a server, a build, a "
                f"materialization) is using {self.path.parent}; stop it and try again"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(self._file, fcntl.LOCK_SH)

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def disk_bytes(path: Path) -> int:
    """Bytes of a file, or of the files in a directory tree (0 if gone)."""
    files = path.rglob("*") if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files if f.is_file())


def sql_string(path: str | Path) -> str:
    """A path as the text of an SQL string literal (DuckDB's ``'...'``; paths are ours, never
    a request's, but may hold quotes)."""
    return str(path).replace("'", "''")


def unique_name(prefix: str, suffix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}{suffix}"


def temporary_path(final: Path) -> Path:
    """A unique name beside ``final`` for writing it; garbage collection removes such files
    when their writer was killed."""
    return final.with_name(f"{final.name}{_TMP_MARK}{uuid.uuid4().hex[:8]}")


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success it is synced and renamed to
    ``final``; on failure it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final)
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
