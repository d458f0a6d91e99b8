"""Finding the supervoxel under a point.

The original service reads the segmentation volume at the point. opencave keeps an *anchor*
per supervoxel — a representative position inside it — and takes, among the supervoxels of
the point's layer-1 chunk, the one whose anchor is nearest (a Voronoi labelling of each
chunk). Points farther than ``max_distance_nm`` from any anchor of their chunk are outside
the segmentation: supervoxel 0, as the original reports for unsegmented voxels.

Anchors live in ``anchors/`` next to the graph's base arrays: the supervoxel ids, sorted,
as runs (``run_start.npy``, ``run_pos.npy``: :class:`~.base.SortedIds`, a few bytes per
chunk, as a chunk's supervoxels are consecutive ids) and ``offsets.npy`` ((n, 3), base voxels
from the corner of the supervoxel's chunk: ``int16``, 6 bytes per supervoxel, widened to
``int32`` only if an anchor lies that far from its chunk), memory-mapped on open so that 10⁹
anchors cost no memory. Earlier layouts are still read: absolute ``positions.npy`` ((n, 3)
int32: 1.0 GB more at 10^8 synapses), the ids themselves in ``ids.npy``, ``anchors.npz``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .base import RunBuilder, SortedIds
from .ids import ChunkGeometry, IdLayout
from .npyfile import NpyFile

ANCHORS = "anchors"
_OFFSETS = "offsets.npy"
_LEGACY = "anchors.npz"
_BATCH = 50_000


class SupervoxelLocator:
    def __init__(self, ids: SortedIds, stored: np.ndarray, layout: IdLayout,
                 geometry: ChunkGeometry, max_distance_nm: float = 2_000.0, *,
                 relative: bool = False) -> None:
        """``stored`` (n, 3) in ``ids`` order (an array or a memory map): base voxels, from
        the corner of each supervoxel's chunk when ``relative``."""
        self.ids = ids
        self.stored = stored
        self.relative = relative
        self.layout = layout
        self.geometry = geometry
        self.max_distance_nm = max_distance_nm

    def positions(self, index: np.ndarray, chunks: np.ndarray | None = None) -> np.ndarray:
        """Anchors (k, 3) in base voxels of the supervoxels at ``index`` (in ``ids``);
        ``chunks``: their chunks' coordinates (k, 3) when the caller knows them."""
        index = np.asarray(index, dtype=np.int64)
        stored = np.asarray(self.stored[index], dtype=np.int64)
        if not self.relative:
            return stored
        if chunks is None:
            chunks = _chunks_of(self.ids.at(index), self.layout)
        return stored + _corners(chunks, self.geometry)

    @staticmethod
    def write(directory: Path, ids: np.ndarray, positions: np.ndarray, layout: IdLayout,
              geometry: ChunkGeometry) -> None:
        """Store anchors: ``positions`` (n, 3) in the graph's base voxels, ids in any order."""
        order = np.argsort(np.asarray(ids, dtype=np.uint64), kind="stable")
        SupervoxelLocator.write_batches(
            directory, [(np.asarray(ids, np.uint64)[order], np.asarray(positions)[order])],
            layout, geometry)

    @staticmethod
    def write_batches(directory: Path, batches: Iterable[tuple[np.ndarray, np.ndarray]],
                      layout: IdLayout, geometry: ChunkGeometry) -> int:
        """Store anchors given in batches of (ids, positions in base voxels), ids ascending
        across batches; replaces the anchors in one rename once complete. Returns how
        many."""
        directory = Path(directory)
        tmp = directory / f"{ANCHORS}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        runs = RunBuilder()
        offsets = NpyFile(tmp / _OFFSETS, np.int16, row=(3,), wider=np.int32)
        try:
            _append_anchors(runs, offsets, batches, layout, geometry)
        except BaseException:
            offsets.discard()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        offsets.close()
        runs.ids().save(tmp)
        shutil.rmtree(directory / ANCHORS, ignore_errors=True)
        tmp.rename(directory / ANCHORS)
        (directory / _LEGACY).unlink(missing_ok=True)
        return offsets.length

    @classmethod
    def open(cls, directory: Path, layout: IdLayout, geometry: ChunkGeometry
             ) -> SupervoxelLocator | None:
        folder = Path(directory) / ANCHORS
        if folder.exists():
            ids = (SortedIds.load(folder) if (folder / "run_start.npy").exists()
                   else _runs_of_file(folder / "ids.npy"))
            if (folder / _OFFSETS).exists():
                return cls(ids, np.load(folder / _OFFSETS, mmap_mode="r"), layout, geometry,
                           relative=True)
            return cls(ids, np.load(folder / "positions.npy", mmap_mode="r"), layout, geometry)
        legacy = Path(directory) / _LEGACY
        if not legacy.exists():
            return None
        with np.load(legacy) as data:
            order = np.argsort(data["ids"], kind="stable")
            return cls(SortedIds.of(data["ids"][order]), data["positions"][order], layout,
                       geometry)

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
        lo = self.ids.searchsorted(chunk_ids)
        hi = np.where(inside, self.ids.searchsorted(chunk_ids + span), lo)
        out = np.zeros(len(points), dtype=np.uint64)
        for start in range(0, len(points), _BATCH):
            part = slice(start, start + _BATCH)
            out[part] = self._nearest(base[part], chunks[part], lo[part], hi[part])
        return out

    def _nearest(self, base: np.ndarray, chunks: np.ndarray, lo: np.ndarray, hi: np.ndarray
                 ) -> np.ndarray:
        """Vectorized over (point, candidate) pairs: every anchor of the point's chunk
        (``chunks``: each point's)."""
        counts = hi - lo
        out = np.zeros(len(base), dtype=np.uint64)
        if counts.sum() == 0:
            return out
        point = np.repeat(np.arange(len(base)), counts)
        first = np.cumsum(counts) - counts
        candidate = lo[point] + (np.arange(len(point)) - first[point])
        scale = np.asarray(self.geometry.resolution)
        anchors = self.positions(candidate, chunks[point])
        distance = np.sqrt((((base[point] - anchors) * scale) ** 2).sum(1))
        order = np.lexsort((distance, point))
        has = counts > 0
        best = order[first[has]]
        close = distance[best] <= self.max_distance_nm
        out[np.flatnonzero(has)[close]] = self.ids.at(candidate[best[close]])
        return out

    def _in_grid(self, chunks: np.ndarray) -> np.ndarray:
        limit = 1 << self.layout.bits(1)
        return ((chunks >= 0) & (chunks < limit)).all(axis=1)


def _runs_of_file(path: Path) -> SortedIds:
    """The runs of a sorted ids file of the earlier layout, read a block at a time."""
    ids = np.load(path, mmap_mode="r")
    runs = RunBuilder()
    for start in range(0, len(ids), 1 << 22):
        runs.add(np.array(ids[start:start + (1 << 22)]))
    return runs.ids()


def _chunks_of(ids: np.ndarray, layout: IdLayout) -> np.ndarray:
    """Chunk coordinates (k, 3) of layer-1 ids."""
    return np.stack(layout.chunk_coordinates(np.asarray(ids, dtype=np.uint64)),
                    axis=-1).reshape(-1, 3)


def _corners(chunks: np.ndarray, geometry: ChunkGeometry) -> np.ndarray:
    """The lowest base voxel (k, 3) of each layer-1 chunk."""
    return (np.asarray(geometry.voxel_offset, dtype=np.int64)
            + np.asarray(chunks, dtype=np.int64) * np.asarray(geometry.chunk_size, dtype=np.int64))


def _append_anchors(runs: RunBuilder, offsets: NpyFile,
                    batches: Iterable[tuple[np.ndarray, np.ndarray]], layout: IdLayout,
                    geometry: ChunkGeometry) -> None:
    last = -1
    for ids, positions in batches:
        ids = np.asarray(ids, dtype=np.uint64)
        if len(ids) and (int(ids[0]) <= last or np.any(ids[1:] <= ids[:-1])):
            raise ValueError("anchor batches must be sorted by id, without duplicates")
        runs.add(ids)
        absolute = np.asarray(positions, dtype=np.int64).reshape(-1, 3)
        offsets.append(absolute - _corners(_chunks_of(ids, layout), geometry))
        last = int(ids[-1]) if len(ids) else last
