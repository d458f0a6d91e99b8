"""One opencave instance: the components of a data directory, wired together."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from .annotation import AnnotationTables
from .annotation.rows import LiveRows
from .annotation.service import AnnotationService
from .annotation.service import Segmentation as WriteSegmentation
from .auth import Access, AuthService
from .info import InfoService
from .materialize.changes import ChangeFinder
from .materialize.compaction import Compactor
from .materialize.engine import QueryEngine
from .materialize.materializer import MaterializationReport, Materializer
from .materialize.results import ResultCache
from .materialize.service import MaterializationService
from .materialize.versions import Version, Versions
from .materialize.view import SegmentationView
from .materialize.views import Views
from .segmentation import SegmentationGraph
from .segmentation.locate import SupervoxelLocator
from .settings import Settings
from .storage import LiveStore
from .storage.files import DataDir, disk_bytes
from .storage.segments import rewrite_serving_copy, serving_path
from .timestamps import now


@dataclass(frozen=True)
class Garbage:
    """Files no one needed, their bytes, and whether they were removed (not on a dry run)."""

    paths: list[Path]
    bytes: int
    removed: bool


class OpenCave:
    """Everything one data directory holds. Components are created once and shared; the
    segmentation graphs open lazily on first use."""

    def __init__(self, settings: Settings | Path | str) -> None:
        if not isinstance(settings, Settings):
            settings = Settings(Path(settings))
        self.settings = settings
        self.data = DataDir(settings.data_dir)
        self._lock = self.data.lock()  # shared: see collect_garbage
        self.live = (LiveStore(settings.database_url) if settings.database_url
                     else LiveStore.in_directory(self.data.root))
        self.info = InfoService(self.live)
        self.tables = AnnotationTables(self.live)
        self.versions = Versions(self.live)
        self.rows = LiveRows(self.live)
        self.auth = AuthService(self.live)
        self.access = Access(self.auth, self.info)
        self.engine = QueryEngine(threads=settings.query_threads,
                                  memory_limit=settings.query_memory_limit,
                                  spill_dir=self.data.spill,
                                  max_queries=settings.max_queries,
                                  lookup_queries=settings.lookup_queries)
        self.results = (ResultCache(self.data.results, settings.result_cache_bytes)
                        if settings.result_cache_bytes else None)
        self.changes = ChangeFinder(self.data, self.tables, self.rows, self.engine)
        self.views = Views(self.live)
        self._graphs: dict[str, SegmentationGraph] = {}
        self._writers: dict[str, WriteSegmentation] = {}
        self._graph_lock = threading.Lock()

    def segmentation(self, table_id: str) -> SegmentationGraph:
        with self._graph_lock:
            graph = self._graphs.get(table_id)
            if graph is None:
                graph = SegmentationGraph.open(self.live, self.data.segmentation / table_id,
                                               table_id)
                self._graphs[table_id] = graph
            return graph

    def segmentation_view(self, table_id: str) -> SegmentationView:
        return SegmentationView.of(self.segmentation(table_id))

    def materialization(self) -> MaterializationService:
        return MaterializationService(self.data, self.access, self.tables, self.versions,
                                      self.engine, self.changes, self.segmentation_view,
                                      self.views, row_cap=self.settings.row_cap,
                                      results=self.results)

    def annotations(self) -> AnnotationService:
        return AnnotationService(self.data, self.info, self.tables, self.rows, self.access,
                                 self._write_segmentation, self.engine.run)

    def _write_segmentation(self, table_id: str) -> WriteSegmentation | None:
        """Point lookups for writes (the supervoxel anchors load once)."""
        directory = self.data.segmentation / table_id
        if not directory.exists():
            return None
        with self._graph_lock:
            cached = self._writers.get(table_id)
        if cached is not None:
            return cached
        graph = self.segmentation(table_id)
        locator = SupervoxelLocator.open(directory, graph.layout, graph.geometry)
        writer = WriteSegmentation(
            locate=None if locator is None else locator.locate,
            get_roots=lambda ids, ts: graph.get_roots(ids, timestamp=ts),
        )
        with self._graph_lock:
            return self._writers.setdefault(table_id, writer)

    def new_version(self, datastack: str, timestamp: datetime | None = None,
                    version: int | None = None) -> MaterializationReport:
        """Materialize a version (now by default) with the expiry policy of the settings,
        then expire versions that are due."""
        timestamp = timestamp or now()
        days = self.settings.version_lifetime_days
        expires = timestamp + timedelta(days=days) if days else None
        report = self.materializer().materialize(datastack, timestamp, version=version,
                                                 expires_on=expires)
        self.versions.expire(datastack, now())
        return report

    def compact(self, datastack: str, *,
                on_version: Callable[[Version, int, int], None] | None = None) -> int:
        """Compact the versions of ``datastack`` made before compaction existed (versions
        made since are compacted as they are made); returns the bytes written."""
        ds = self.info.datastack(datastack)
        tables = {t.table_name: t for t in self.tables.list(ds.aligned_volume.name)}
        return self.compactor().compact_history(self.versions, tables, datastack,
                                                on_version=on_version)

    def compactor(self) -> Compactor:
        return Compactor(self.data, self.engine, whole_below=self.settings.compact_whole_rows,
                         memory_limit=self.settings.query_memory_limit)

    def materializer(self) -> Materializer:
        return Materializer(self.data, self.info, self.tables, self.versions,
                            self.segmentation_view, self.engine, self.changes,
                            self.compactor(), memory_limit=self.settings.query_memory_limit)

    def collect_garbage(self, *, dry_run: bool = False) -> Garbage:
        """Remove the files no version and no table uses — segments and masks that
        compaction replaced, files of failed or killed runs, temporaries of killed writers.
        Only alone in the directory (Conflict otherwise): a running server may still read
        replaced files through the snapshots it cached, a writer's files are not yet used."""
        with self._lock.alone("remove files no version uses"):
            used = self.versions.files() | self.tables.segment_files()
            kept = {self.data.absolute(path) for path in used}
            paths = self.data.garbage(kept | {serving_path(path) for path in kept})
            size = sum(disk_bytes(path) for path in paths)
            if not dry_run:
                DataDir.remove(paths)
        return Garbage(paths, size, removed=not dry_run)

    def rewrite_serving_copies(self, *,
                               on_file: Callable[[str, bool, int], None] | None = None) -> int:
        """Write anew, from their Parquet records, the serving copies an older opencave wrote
        with another layout (:func:`~opencave.storage.segments.rewrite_serving_copy`);
        returns how many. ``on_file(path, rewritten, files)`` after each keyed file of the
        versions and tables. Safe beside a running server, which reads the new copies after
        a restart (it holds the old ones open)."""
        keys = self.versions.sort_keys() | self.tables.segment_sort_keys()
        rewritten = 0
        for path, key in sorted(keys.items()):
            done = rewrite_serving_copy(self.data.absolute(path), key,
                                        memory_limit=self.settings.query_memory_limit)
            rewritten += done
            if on_file is not None:
                on_file(path, done, len(keys))
        return rewritten

    def close(self) -> None:
        self.engine.close()
        self.live.dispose()
        self._lock.release()

    def __enter__(self) -> OpenCave:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
