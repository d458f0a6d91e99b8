"""From (node id, point) to a supervoxel, for edits that name a segment and a position.

PyChunkedGraph reads the segmentation volume at the point. opencave has no volume, only
the chunk grid and, where the importer provided them, *anchors* (a representative position
per supervoxel, ``locate.py``). The rule: among the node's leaf supervoxels, keep those
whose layer-1 chunk is nearest to the point (distance from the point to the chunk's box, in
nm: 0 when the chunk contains it); of those, the one whose anchor is nearest to the point
(when anchors are known), else the smallest id. Deterministic, and exact whenever the node
has a single supervoxel in the point's chunk.

>>> from opencave.segmentation.ids import ChunkGeometry, IdLayout
>>> layout = IdLayout(n_layers=5, spatial_bits=2)
>>> geo = ChunkGeometry((0, 0, 0), chunk_size=(10, 10, 10), resolution=(1, 1, 1))
>>> leaves = layout.encode(1, [0, 1, 1], 0, 0, [5, 7, 6])
>>> int(nearest_leaf(leaves, layout, geo, (15, 2, 2))) == int(leaves[2])
True
>>> int(nearest_leaf(leaves, layout, geo, (80, 2, 2))) == int(leaves[2])  # nearest chunk
True
>>> anchors = np.array([[5, 5, 5], [18, 2, 2], [12, 8, 8]], dtype=float)
>>> int(nearest_leaf(leaves, layout, geo, (17, 2, 2), anchors)) == int(leaves[1])
True
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidRequest
from .ids import ChunkGeometry, IdLayout


def nearest_leaf(
    leaves: np.ndarray,
    layout: IdLayout,
    geometry: ChunkGeometry,
    point_nm: object,
    anchors: np.ndarray | None = None,
) -> np.uint64:
    """The supervoxel of ``leaves`` (layer-1 ids) that the point most plausibly hits.
    ``anchors``: (n, 3) positions of the leaves in base voxels, NaN where unknown."""
    leaves = np.asarray(leaves, dtype=np.uint64)
    if len(leaves) == 0:
        raise InvalidRequest("the segment has no supervoxels")
    res = np.asarray(geometry.resolution, dtype=np.float64)
    point = np.asarray(point_nm, dtype=np.float64).reshape(3) / res  # base voxels
    chunks = np.stack(layout.chunk_coordinates(leaves), axis=1).astype(np.float64)
    size = np.asarray(geometry.chunk_size, dtype=np.float64)
    lo = np.asarray(geometry.voxel_offset, dtype=np.float64) + chunks * size
    gap = np.maximum(np.maximum(lo - point, point - (lo + size)), 0.0) * res
    best = np.flatnonzero(_squared(gap) == _squared(gap).min())
    if anchors is not None:
        known = best[np.all(np.isfinite(anchors[best]), axis=1)]
        if len(known):
            dist = _squared((anchors[known] - point) * res)
            best = known[dist == dist.min()]
    return leaves[best][np.argmin(leaves[best])]


def _squared(vectors: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", vectors, vectors)


def is_node_id(value: object) -> bool:
    """An id as JSON carries it: an integer in uint64 range (a float has lost precision)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


def parse_points(values: object, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``[[id, x, y, z], ...]`` (ids exact, positions in nm) -> (ids, points (n, 3))."""
    if not isinstance(values, list) or not values:
        raise InvalidRequest(f"{what} must be a non-empty list of [id, x, y, z]")
    ids, points = [], []
    for item in values:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in item)
        ):
            raise InvalidRequest(f"each entry of {what} must be [id, x, y, z]; got {item!r}")
        if not is_node_id(item[0]):
            raise InvalidRequest(f"{what}: node id {item[0]!r} is not a uint64 integer")
        ids.append(item[0])
        points.append([float(v) for v in item[1:]])
    pts = np.asarray(points, dtype=np.float64)
    if not np.all(np.isfinite(pts)):
        raise InvalidRequest(f"{what}: coordinates must be finite numbers")
    return np.array(ids, dtype=np.uint64), pts
