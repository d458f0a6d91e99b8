"""Node ids: PyChunkedGraph's bit layout, vectorized."""

from __future__ import annotations

import numpy as np
import pytest

from opencave.errors import InvalidRequest
from opencave.segmentation import ChunkGeometry, IdLayout
from opencave.segmentation.ids import as_ids

MINNIE = IdLayout(n_layers=12, spatial_bits=10)
EXAMPLE = 107314878901080533  # a real minnie65 supervoxel


def test_minnie_example_decodes() -> None:
    assert int(MINNIE.layer(EXAMPLE)) == 1
    assert MINNIE.chunk_coordinates(EXAMPLE) == (501, 37, 21)
    assert int(MINNIE.segment(EXAMPLE)) == 217557
    assert int(MINNIE.encode(1, 501, 37, 21, 217557)) == EXAMPLE


def test_minnie_bits_and_roots() -> None:
    assert [MINNIE.bits(layer) for layer in range(1, 13)] == [10, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 1]
    assert MINNIE.root_chunk() == 12 << 56 == 864691128455135232
    root = int(MINNIE.encode(12, 0, 0, 0, 7_000_000_000))
    assert str(root).startswith("8646911354")
    assert MINNIE.max_segment(1) == 2**26 - 1
    assert MINNIE.max_segment(12) == 2**53 - 1


def test_chunk_ids() -> None:
    chunk = int(MINNIE.chunk_id(EXAMPLE))
    assert int(MINNIE.segment(chunk)) == 0
    assert MINNIE.chunk_coordinates(chunk) == (501, 37, 21)
    assert int(MINNIE.chunk_id_at_layer(EXAMPLE, 1)) == chunk
    layer2 = int(MINNIE.chunk_id_at_layer(EXAMPLE, 2))
    assert int(MINNIE.layer(layer2)) == 2 and MINNIE.chunk_coordinates(layer2) == (501, 37, 21)
    layer3 = int(MINNIE.chunk_id_at_layer(EXAMPLE, 3))
    assert MINNIE.chunk_coordinates(layer3) == (250, 18, 10)
    layer5 = int(MINNIE.chunk_id_at_layer(layer3, 5))
    assert MINNIE.chunk_coordinates(layer5) == (62, 4, 2)
    assert int(MINNIE.chunk_id_at_layer(EXAMPLE, 12)) == MINNIE.root_chunk()
    with pytest.raises(InvalidRequest):
        MINNIE.chunk_id_at_layer(layer3, 2)


def test_vectorized_round_trip() -> None:
    rng = np.random.default_rng(1)
    n = 1000
    layer = rng.integers(1, 12, n)
    limits = np.array([1 << MINNIE.bits(int(layer_)) for layer_ in layer])
    x, y, z = (rng.integers(0, limits) for _ in range(3))
    seg = np.array([rng.integers(1, MINNIE.max_segment(int(layer_))) for layer_ in layer])
    ids = MINNIE.encode(layer, x, y, z, seg)
    assert ids.dtype == np.uint64 and ids.shape == (n,)
    assert np.array_equal(MINNIE.layer(ids), layer)
    cx, cy, cz = MINNIE.chunk_coordinates(ids)
    assert np.array_equal(cx, x) and np.array_equal(cy, y) and np.array_equal(cz, z)
    assert np.array_equal(MINNIE.segment(ids), seg.astype(np.uint64))
    assert np.array_equal(MINNIE.chunk_id(ids) | MINNIE.segment(ids), ids)
    assert np.all(ids < np.uint64(2**63))  # ids fit int64


def test_small_layouts_follow_pychunkedgraph() -> None:
    layout = IdLayout(n_layers=6, spatial_bits=3)
    assert [layout.bits(layer) for layer in range(1, 7)] == [4, 4, 3, 2, 1, 1]
    assert layout.grid_limit() == 16


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(InvalidRequest):
        MINNIE.encode(1, 1024, 0, 0, 1)
    with pytest.raises(InvalidRequest):
        MINNIE.encode(13, 0, 0, 0, 1)
    with pytest.raises(InvalidRequest):
        MINNIE.encode(1, 0, 0, 0, 2**26)
    with pytest.raises(InvalidRequest):
        IdLayout(n_layers=2)


def test_as_ids_accepts_lists_and_int64() -> None:
    assert as_ids([1, 2]).dtype == np.uint64
    assert as_ids(np.array([5], dtype=np.int64)).tolist() == [5]
    assert as_ids(7).tolist() == [7]
    assert as_ids([]).shape == (0,)
    with pytest.raises(InvalidRequest):
        as_ids([-1])
    with pytest.raises(InvalidRequest):
        as_ids(["a"])


def test_geometry_maps_points_to_chunks() -> None:
    geo = ChunkGeometry(voxel_offset=(100, 200, 10), chunk_size=(256, 256, 512))
    # Points at 4x4x40 nm are half the 8x8x40 base voxel coordinates in x and y.
    points = [[200 + 2 * 256, 400, 10], [200 + 2 * 256 - 2, 400, 522]]
    coords = geo.chunk_coordinates_of(points, points_resolution=(4, 4, 40))
    assert coords.tolist() == [[1, 0, 0], [0, 0, 1]]
    assert geo.chunk_bounds((1, 0, 0)) == ((356, 612), (200, 456), (10, 522))
    assert geo.chunk_bounds((1, 0, 0), layer=3) == ((612, 1124), (200, 712), (10, 1034))
    box = geo.bounds_in_chunks(((356, 612), (200, 456), (10, 522)))
    assert box.tolist() == [[1.0, 2.0], [0.0, 1.0], [0.0, 1.0]]
    assert ChunkGeometry.from_json(geo.to_json()) == geo
