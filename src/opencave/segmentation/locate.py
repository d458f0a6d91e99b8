"""Finding the supervoxel under a point.

The original service reads the segmentation volume at the point. opencave keeps an *anchor*
per supervoxel — a representative position inside it — and takes, among the supervoxels of
the point's layer-1 chunk, the one whose anchor is nearest (a Voronoi labelling of each
chunk). Points farther than ``max_distance_nm`` from any anchor of their chunk are outside
the segmentation: supervoxel 0, as the original reports for unsegmented voxels.

Anchors live in ``anchors.npz`` next to the graph's base arrays: supervoxel ids (sorted, so
a chunk's supervoxels form one contiguous run, ids being chunk-prefixed) and positions in
the graph's base voxels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..storage.files import write_atomic
from .ids import ChunkGeometry, IdLayout

ANCHORS = "anchors.npz"
_BATCH = 50_000


class SupervoxelLocator:
    def __init__(self, ids: np.ndarray, positions: np.ndarray, layout: IdLayout,
                 geometry: ChunkGeometry, max_distance_nm: float = 2_000.0) -> None:
        order = np.argsort(ids, kind="stable")
        self.ids = np.asarray(ids, dtype=np.uint64)[order]
        self.positions = np.asarray(positions, dtype=np.float64)[order]
        self.layout = layout
        self.geometry = geometry
        self.max_distance_nm = max_distance_nm

    @staticmethod
    def write(directory: Path, ids: np.ndarray, positions: np.ndarray) -> None:
        """Store anchors: ``positions`` (n, 3) in the graph's base voxels."""
        def save(path: Path) -> None:
            with open(path, "wb") as f:
                np.savez(f, ids=np.asarray(ids, np.uint64),
                         positions=np.asarray(positions, np.int32))

        write_atomic(Path(directory) / ANCHORS, save)

    @classmethod
    def open(cls, directory: Path, layout: IdLayout, geometry: ChunkGeometry
             ) -> SupervoxelLocator | None:
        path = Path(directory) / ANCHORS
        if not path.exists():
            return None
        with np.load(path) as data:
            return cls(data["ids"], data["positions"], layout, geometry)

    def locate(self, points: np.ndarray, resolution: tuple[float, float, float]) -> np.ndarray:
        """Supervoxel ids (uint64, 0 outside) of points given in voxels at ``resolution``."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        base = points * np.asarray(resolution) / np.asarray(self.geometry.resolution)
        chunks = self.geometry.chunk_coordinates_of(base)
        inside = self._in_grid(chunks)
        chunk_ids = np.zeros(len(points), dtype=np.uint64)
        chunk_ids[inside] = self.layout.encode(1, chunks[inside, 0], chunks[inside, 1],
                                               chunks[inside, 2], 0)
        span = np.uint64(1) << np.uint64(self.layout.segment_bits(1))
        lo = np.searchsorted(self.ids, chunk_ids)
        hi = np.where(inside, np.searchsorted(self.ids, chunk_ids + span), lo)
        out = np.zeros(len(points), dtype=np.uint64)
        for start in range(0, len(points), _BATCH):
            part = slice(start, start + _BATCH)
            out[part] = self._nearest(base[part], lo[part], hi[part])
        return out

    def _nearest(self, base: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Vectorized over (point, candidate) pairs: every anchor of the point's chunk."""
        counts = hi - lo
        out = np.zeros(len(base), dtype=np.uint64)
        if counts.sum() == 0:
            return out
        point = np.repeat(np.arange(len(base)), counts)
        first = np.cumsum(counts) - counts
        candidate = lo[point] + (np.arange(len(point)) - first[point])
        scale = np.asarray(self.geometry.resolution)
        distance = np.sqrt((((base[point] - self.positions[candidate]) * scale) ** 2).sum(1))
        order = np.lexsort((distance, point))
        has = counts > 0
        best = order[first[has]]
        close = distance[best] <= self.max_distance_nm
        out[np.flatnonzero(has)[close]] = self.ids[candidate[best[close]]]
        return out

    def _in_grid(self, chunks: np.ndarray) -> np.ndarray:
        limit = 1 << self.layout.bits(1)
        return ((chunks >= 0) & (chunks < limit)).all(axis=1)
