"""One opencave instance: the components of a data directory, wired together."""

from __future__ import annotations

import threading
from pathlib import Path

from .annotation import AnnotationTables
from .info import InfoService
from .materialize.engine import QueryEngine
from .materialize.materializer import Materializer, SegmentationView
from .materialize.versions import Versions
from .segmentation import SegmentationGraph
from .settings import Settings
from .storage import LiveStore
from .storage.files import DataDir


class OpenCave:
    """Everything one data directory holds. Components are created once and shared; the
    segmentation graphs open lazily on first use."""

    def __init__(self, settings: Settings | Path | str) -> None:
        if not isinstance(settings, Settings):
            settings = Settings(Path(settings))
        self.settings = settings
        self.data = DataDir(settings.data_dir)
        self.data.root.mkdir(parents=True, exist_ok=True)
        self.live = (LiveStore(settings.database_url) if settings.database_url
                     else LiveStore.in_directory(self.data.root))
        self.info = InfoService(self.live)
        self.tables = AnnotationTables(self.live)
        self.versions = Versions(self.live)
        self.engine = QueryEngine(threads=settings.query_threads,
                                  memory_limit=settings.query_memory_limit)
        self._graphs: dict[str, SegmentationGraph] = {}
        self._graph_lock = threading.Lock()

    def segmentation(self, table_id: str) -> SegmentationGraph:
        with self._graph_lock:
            graph = self._graphs.get(table_id)
            if graph is None:
                graph = SegmentationGraph.open(self.live, self.data.segmentation / table_id,
                                               table_id)
                self._graphs[table_id] = graph
            return graph

    def materializer(self) -> Materializer:
        return Materializer(
            self.data, self.info, self.tables, self.versions,
            lambda table_id: SegmentationView.of(self.segmentation(table_id)), self.engine,
        )

    def close(self) -> None:
        self.engine.close()
        self.live.dispose()
