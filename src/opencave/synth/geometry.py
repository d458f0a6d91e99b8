"""Where things are in the chunkedgraph's grid (positions in 4×4×40 nm voxels)."""

from __future__ import annotations

import numpy as np

from ..segmentation import ChunkGeometry, IdLayout
from . import world

LAYOUT = IdLayout(n_layers=world.N_LAYERS, spatial_bits=world.SPATIAL_BITS)
GEOMETRY = ChunkGeometry(voxel_offset=world.GRAPH_OFFSET, chunk_size=world.CHUNK_SIZE,
                         resolution=world.GRAPH_RESOLUTION)


def chunk_coordinates(points: np.ndarray) -> np.ndarray:
    """Layer-1 chunk coordinates (n, 3) of points given in annotation voxels."""
    return np.asarray(GEOMETRY.chunk_coordinates_of(points, world.VOXEL_RESOLUTION),
                      dtype=np.int64).reshape(-1, 3)
