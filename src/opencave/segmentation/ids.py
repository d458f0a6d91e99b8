"""PyChunkedGraph-compatible node ids and the chunk geometry behind them.

A node id is a uint64 (it also fits int64: layers stay below 128)::

    | layer: 8 bits | x: b | y: b | z: b | segment: 56 - 3b bits |

with ``b = bits(layer)``. Layers 1 (supervoxels) and 2 share one chunk grid and use
``max(spatial_bits, n_layers - 2)`` bits per coordinate; a layer ``L >= 3`` uses
``max(1, n_layers - L)``. The chunk grid halves per layer above 2 (fan-out 2), and the top
layer has a single chunk ``(0, 0, 0)`` that holds every root. Id 0 means "no segment".

>>> layout = IdLayout(n_layers=12, spatial_bits=10)
>>> int(layout.layer(107314878901080533)), layout.chunk_coordinates(107314878901080533)
(1, (501, 37, 21))
>>> int(layout.segment(107314878901080533))
217557
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import InvalidRequest

U64 = np.uint64
LAYER_SHIFT = 56
Bounds = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]


def as_ids(values: object) -> np.ndarray:
    """Node ids as a 1-d uint64 array (accepts scalars, lists, int64 arrays)."""
    if not isinstance(values, np.ndarray):
        # Lists may mix Python ints and NumPy uint64s, which NumPy would promote to float.
        try:
            values = np.array(values, dtype=np.int64)
        except (OverflowError, ValueError, TypeError) as exc:
            raise InvalidRequest("node ids must be non-negative 64-bit integers") from exc
    arr = np.asarray(values)
    if arr.dtype == np.uint64:
        return arr.reshape(-1)
    if arr.size == 0:
        return np.zeros(0, dtype=U64)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(arr == np.floor(arr)):
            arr = arr.astype(np.int64)
        else:
            raise InvalidRequest("node ids must be integers")
    if arr.dtype.kind == "i" and np.any(arr < 0):
        raise InvalidRequest("node ids must not be negative")
    return arr.astype(U64).reshape(-1)


@dataclass(frozen=True)
class IdLayout:
    """Bit layout of node ids for a graph of ``n_layers`` layers (vectorized).

    >>> layout = IdLayout()
    >>> root = layout.encode(12, 0, 0, 0, 7_000_000_000)
    >>> int(root)
    864691135455135232
    >>> layer3 = layout.chunk_id_at_layer(107314878901080533, 3)
    >>> layout.chunk_coordinates(layer3)
    (250, 18, 10)
    """

    n_layers: int = 12
    spatial_bits: int = 10

    def __post_init__(self) -> None:
        if not 3 <= self.n_layers <= 127:
            raise InvalidRequest(f"n_layers must be in [3, 127], got {self.n_layers}")
        if self.bits(2) * 3 > LAYER_SHIFT - 1:
            raise InvalidRequest(f"spatial_bits={self.spatial_bits} leaves no segment bits")

    # -- per-layer constants -------------------------------------------------------------
    def bits(self, layer: int) -> int:
        """Bits per chunk coordinate at ``layer``."""
        if layer <= 2:
            return max(self.spatial_bits, self.n_layers - 2)
        return max(1, self.n_layers - layer)

    def segment_bits(self, layer: int) -> int:
        return LAYER_SHIFT - 3 * self.bits(layer)

    def max_segment(self, layer: int) -> int:
        """The largest segment id a chunk of ``layer`` can hold."""
        return (1 << self.segment_bits(layer)) - 1

    @cached_property
    def _bits_table(self) -> np.ndarray:
        # Indexed by layer (0..255) so that per-element layouts are one gather.
        table = np.zeros(256, dtype=U64)
        for layer in range(1, self.n_layers + 1):
            table[layer] = self.bits(layer)
        return table

    # -- encoding --------------------------------------------------------------------------
    def encode(self, layer: object, x: object, y: object, z: object, segment: object) -> np.ndarray:
        """Ids from their parts (arrays broadcast; a scalar input gives a 0-d array)."""
        layer_a = np.asarray(layer, dtype=np.int64)
        if np.any((layer_a < 1) | (layer_a > self.n_layers)):
            raise InvalidRequest(f"layer must be in [1, {self.n_layers}]")
        bits = self._bits_table[layer_a].astype(np.int64)
        parts = [np.asarray(v, dtype=np.int64) for v in (x, y, z, segment)]
        if any(np.any(p < 0) for p in parts):
            raise InvalidRequest("chunk coordinates and segment ids must not be negative")
        seg_bits = LAYER_SHIFT - 3 * bits
        if any(np.any(p >= (1 << bits)) for p in parts[:3]):
            raise InvalidRequest("chunk coordinate out of range for its layer")
        if np.any(parts[3] >= (np.int64(1) << seg_bits)):
            raise InvalidRequest("segment id out of range for its layer")
        out = layer_a.astype(U64) << U64(LAYER_SHIFT)
        for i, part in enumerate(parts[:3]):
            shift = (seg_bits + (2 - i) * bits).astype(U64)
            out = out | (part.astype(U64) << shift)
        return out | parts[3].astype(U64)

    # -- decoding --------------------------------------------------------------------------
    def layer(self, ids: object) -> np.ndarray:
        return (np.asarray(ids, dtype=U64) >> U64(LAYER_SHIFT)).astype(np.int64)

    def _seg_bits(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bits = self._bits_table[ids >> U64(LAYER_SHIFT)]
        return bits, U64(LAYER_SHIFT) - U64(3) * bits

    def chunk_coordinates(self, ids: object) -> tuple:
        """``(x, y, z)`` of each node's chunk in its own layer's grid."""
        arr = np.asarray(ids, dtype=U64)
        bits, seg_bits = self._seg_bits(arr)
        mask = (U64(1) << bits) - U64(1)
        coords = [((arr >> (seg_bits + U64(k) * bits)) & mask).astype(np.int64) for k in (2, 1, 0)]
        if arr.ndim == 0:
            return tuple(int(c) for c in coords)
        return tuple(coords)

    def segment(self, ids: object) -> np.ndarray:
        arr = np.asarray(ids, dtype=U64)
        _, seg_bits = self._seg_bits(arr)
        return arr & ((U64(1) << seg_bits) - U64(1))

    def chunk_id(self, ids: object) -> np.ndarray:
        """The id with its segment bits zeroed: identifies the node's chunk."""
        arr = np.asarray(ids, dtype=U64)
        _, seg_bits = self._seg_bits(arr)
        return arr & ~((U64(1) << seg_bits) - U64(1))

    def chunk_id_at_layer(self, ids: object, layer: int) -> np.ndarray:
        """The chunk of ``layer`` that contains each node (``layer`` >= the node's layer)."""
        arr = np.asarray(ids, dtype=U64)
        if not 1 <= layer <= self.n_layers:
            raise InvalidRequest(f"layer must be in [1, {self.n_layers}]")
        own = self.layer(arr)
        if np.any(own > layer):
            raise InvalidRequest(f"some nodes lie above layer {layer}")
        if layer == self.n_layers:
            return self.encode(layer, 0, 0, 0, 0) + np.zeros(arr.shape, dtype=U64)
        if layer <= 2:
            # Layers 1 and 2 share the grid and the bit widths: swap the layer byte only.
            low = U64((1 << LAYER_SHIFT) - 1)
            return (self.chunk_id(arr) & low) | (U64(layer) << U64(LAYER_SHIFT))
        # Layers 1 and 2 share a grid; each layer above halves it.
        shift = np.maximum(layer, 2) - np.maximum(own, 2)
        x, y, z = (np.asarray(c) >> shift for c in self._coords_array(arr))
        return self.encode(layer, x, y, z, 0)

    def _coords_array(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        coords = self.chunk_coordinates(arr)
        return tuple(np.asarray(c, dtype=np.int64) for c in coords)  # type: ignore[return-value]

    def root_chunk(self) -> int:
        return int(self.encode(self.n_layers, 0, 0, 0, 0))

    def grid_limit(self) -> int:
        """Chunk coordinates at layers 1-2 must stay below this so the top layer has one chunk."""
        return 1 << min(self.bits(2), self.n_layers - 2)

    def to_json(self) -> dict[str, int]:
        return {"n_layers": self.n_layers, "spatial_bits": self.spatial_bits}


@dataclass(frozen=True)
class ChunkGeometry:
    """Where layer-1 chunks sit in space: voxel offset, chunk size and base resolution (nm).

    >>> geo = ChunkGeometry(voxel_offset=(0, 0, 0))
    >>> geo.chunk_coordinates_of([[1024, 600, 1100]], points_resolution=(4, 4, 40)).tolist()
    [[2, 1, 2]]
    >>> geo.chunk_bounds((2, 1, 2))
    ((512, 768), (256, 512), (1024, 1536))
    """

    voxel_offset: tuple[int, int, int]
    chunk_size: tuple[int, int, int] = (256, 256, 512)
    resolution: tuple[float, float, float] = (8.0, 8.0, 40.0)

    def chunk_coordinates_of(
        self, points: object, points_resolution: object | None = None
    ) -> np.ndarray:
        """Layer-1 chunk coordinates (n, 3) of points given in voxels at ``points_resolution``
        (default: the base resolution)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        if points_resolution is not None:
            pts = pts * np.asarray(points_resolution, dtype=np.float64) / self.resolution
        rel = (pts - np.asarray(self.voxel_offset)) / np.asarray(self.chunk_size)
        return np.floor(rel).astype(np.int64)

    def chunk_bounds(self, coords: tuple[int, int, int], layer: int = 1) -> Bounds:
        """Half-open base-voxel bounds ``((x0, x1), (y0, y1), (z0, z1))`` of a chunk."""
        scale = 1 << max(0, layer - 2)
        out = []
        for c, size, off in zip(coords, self.chunk_size, self.voxel_offset, strict=True):
            lo = off + int(c) * size * scale
            out.append((lo, lo + size * scale))
        return tuple(out)  # type: ignore[return-value]

    def bounds_in_chunks(self, bounds: object) -> np.ndarray:
        """Voxel bounds as fractional layer-1 chunk coordinates, shape (3, 2)."""
        arr = np.asarray(bounds, dtype=np.float64).reshape(3, 2)
        off = np.asarray(self.voxel_offset, dtype=np.float64)[:, None]
        return (arr - off) / np.asarray(self.chunk_size, dtype=np.float64)[:, None]

    def to_json(self) -> dict[str, list]:
        return {
            "voxel_offset": list(self.voxel_offset),
            "chunk_size": list(self.chunk_size),
            "resolution": list(self.resolution),
        }

    @classmethod
    def from_json(cls, data: dict) -> ChunkGeometry:
        return cls(
            voxel_offset=tuple(int(v) for v in data["voxel_offset"]),  # type: ignore[arg-type]
            chunk_size=tuple(int(v) for v in data["chunk_size"]),  # type: ignore[arg-type]
            resolution=tuple(float(v) for v in data["resolution"]),  # type: ignore[arg-type]
        )
