"""The streamed builder: inputs in batches, outputs on disk as produced. The base files must
not depend on how inputs are batched or where the grouping cuts its slabs, and must describe
the hierarchy the definition gives (checked against a networkx model)."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from opencave.errors import InvalidRequest
from opencave.segmentation import SegmentationGraph
from opencave.segmentation.base import ARRAYS
from opencave.segmentation.build import build_base, build_base_streamed
from opencave.segmentation.locate import SupervoxelLocator
from opencave.storage import LiveStore
from opencave.timestamps import to_micros

from .helpers import GEOMETRY, LAYOUT, T0, Model, actual_structure, build


def random_graph(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chunks spread over the whole grid; chains inside chunks, links to neighbours in id
    order (across chunks and slabs), a few long-range edges, duplicates both ways round,
    and lone supervoxels."""
    rng = np.random.default_rng(seed)
    limit = LAYOUT.grid_limit()
    coords = {tuple(c) for c in rng.integers(0, limit, (int(rng.integers(2, 40)), 3)).tolist()}
    parts = [LAYOUT.encode(1, x, y, z, np.arange(1, int(rng.integers(1, 12)) + 1))
             for x, y, z in sorted(coords)]
    svs = np.concatenate(parts).astype(np.uint64)
    n = len(svs)
    a = rng.integers(0, n, 2 * n)
    b = np.clip(a + rng.integers(-2, 3, 2 * n), 0, n - 1)
    far = rng.random(2 * n) < 0.15
    b[far] = rng.integers(0, n, int(far.sum()))
    lone = rng.random(2 * n) < 0.3  # drop some edges so that some supervoxels stay alone
    edges = np.stack([svs[a[~lone]], svs[b[~lone]]], axis=1)
    edges = np.concatenate([edges, edges[: len(edges) // 4, ::-1]])
    return svs, edges, rng.random(len(edges)).astype(np.float32)


def _batches(rng: np.random.Generator, n: int) -> list[slice]:
    cuts = np.unique(np.concatenate([[0, n], rng.integers(0, n + 1, 4)]))
    return [slice(int(lo), int(hi)) for lo, hi in pairwise(cuts.tolist())]


def _streamed(directory: Path, svs: np.ndarray, edges: np.ndarray, aff: np.ndarray,
              seed: int, batch_nodes: int) -> None:
    rng = np.random.default_rng(seed + 100)
    order = rng.permutation(len(edges))
    edges, aff = edges[order], aff[order]
    build_base_streamed(
        directory, table_id="t", layout=LAYOUT, geometry=GEOMETRY,
        supervoxels=(svs[s] for s in _batches(rng, len(svs))),
        edges=((edges[s, 0], edges[s, 1], aff[s]) for s in _batches(rng, len(edges))),
        timestamp_us=to_micros(T0), root_segment_start=11, batch_nodes=batch_nodes,
    )


def _same_files(one: Path, other: Path) -> None:
    for name in ARRAYS:
        x, y = np.load(one / f"{name}.npy"), np.load(other / f"{name}.npy")
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert json.loads((one / "meta.json").read_text()) == json.loads(
        (other / "meta.json").read_text())


@pytest.mark.parametrize("seed", range(8))
def test_batching_and_slabs_do_not_change_the_files(tmp_path: Path, seed: int) -> None:
    svs, edges, aff = random_graph(seed)
    build_base(tmp_path / "memory", table_id="t", layout=LAYOUT, geometry=GEOMETRY,
               supervoxel_ids=svs[::-1], edges=edges, affinities=aff,
               timestamp_us=to_micros(T0), root_segment_start=11)
    for batch_nodes in (1, 5, 40):
        _streamed(tmp_path / f"streamed{batch_nodes}", svs, edges, aff, seed, batch_nodes)
        _same_files(tmp_path / "memory", tmp_path / f"streamed{batch_nodes}")
    assert not (tmp_path / "streamed1" / ".build").exists()  # the work files are gone


@pytest.mark.parametrize("seed", range(4))
def test_tiny_slabs_build_the_defined_hierarchy(tmp_path: Path, seed: int) -> None:
    svs, edges, aff = random_graph(seed)
    _streamed(tmp_path / "g", svs, edges, aff, seed, batch_nodes=3)
    graph = SegmentationGraph.open(LiveStore.in_directory(tmp_path), tmp_path / "g", "t")
    model = Model(svs, edges, aff)
    assert actual_structure(graph, T0, svs) == model.expected_structure(T0)
    roots = graph.get_roots(svs)
    # Roots are numbered from root_segment_start in order of their smallest supervoxel.
    first = {int(r): int(svs[roots == r].min()) for r in np.unique(roots)}
    by_sv = sorted(first, key=first.__getitem__)
    assert LAYOUT.segment(np.array(by_sv, np.uint64)).tolist() == list(range(11, 11 + len(by_sv)))


def test_create_streamed_matches_create(tmp_path: Path) -> None:
    svs, edges, aff = random_graph(3)
    live = LiveStore.in_directory(tmp_path)
    whole = build(tmp_path, svs, edges, aff, live=live, table_id="whole")
    streamed = SegmentationGraph.create_streamed(
        live, tmp_path / "streamed", table_id="streamed", layout=LAYOUT, geometry=GEOMETRY,
        supervoxels=[svs[:7], svs[7:]], edges=[(edges[:, 0], edges[:, 1], aff)], timestamp=T0)
    assert np.array_equal(whole.get_roots(svs), streamed.get_roots(svs))
    assert streamed.base.meta.n_edges == whole.base.meta.n_edges


@pytest.mark.parametrize("batches", [
    [[3, 2]],  # unsorted
    [[1, 2], [2, 3]],  # a duplicate across batches
    [[2, 3], [1]],  # batches out of order
])
def test_streamed_supervoxels_must_be_sorted(tmp_path: Path, batches: list[list[int]]) -> None:
    ids = [LAYOUT.encode(1, 0, 0, 0, np.array(b)) for b in batches]
    with pytest.raises(InvalidRequest, match="sorted"):
        build_base_streamed(tmp_path / "g", table_id="t", layout=LAYOUT, geometry=GEOMETRY,
                            supervoxels=ids, edges=[], timestamp_us=0, root_segment_start=1)


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    svs = LAYOUT.encode(1, 0, 0, 0, np.arange(1, 5))
    unknown = LAYOUT.encode(1, 1, 0, 0, 1)
    common = dict(table_id="t", layout=LAYOUT, geometry=GEOMETRY, supervoxels=[svs],
                  timestamp_us=0, root_segment_start=1)
    with pytest.raises(InvalidRequest, match="unknown supervoxels"):
        build_base_streamed(tmp_path / "g", edges=[([svs[0]], [unknown], None)], **common)
    assert list((tmp_path / "g").iterdir()) == []
    meta = build_base_streamed(tmp_path / "g", edges=[([svs[0]], [svs[1]], None)], **common)
    assert meta.n_roots == 3


def test_anchors_written_in_batches_are_memory_mapped(tmp_path: Path) -> None:
    ids = LAYOUT.encode(1, 0, 0, 0, np.arange(1, 7))
    positions = np.arange(18).reshape(6, 3)
    SupervoxelLocator.write_batches(tmp_path, [(ids[:2], positions[:2]), (ids[2:], positions[2:])],
                                    LAYOUT, GEOMETRY)
    locator = SupervoxelLocator.open(tmp_path, LAYOUT, GEOMETRY)
    assert locator is not None and isinstance(locator.stored, np.memmap)
    # consecutive ids are stored as one run, not one by one
    assert len(locator.ids.run_start) == 1 and np.array_equal(locator.ids.at(range(6)), ids)
    assert np.array_equal(locator.positions(np.arange(6)), positions)
    with pytest.raises(ValueError, match="sorted"):
        SupervoxelLocator.write_batches(tmp_path, [(ids[2:], positions[2:]),
                                                   (ids[:2], positions[:2])], LAYOUT, GEOMETRY)
    assert np.array_equal(SupervoxelLocator.open(tmp_path, LAYOUT, GEOMETRY).ids.at(range(6)), ids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anchors"]


def test_anchors_are_stored_as_short_offsets_from_their_chunk(tmp_path: Path) -> None:
    """6 bytes per supervoxel instead of 12; an anchor far from its chunk widens the file
    and still reads back exactly."""
    ids = np.concatenate([LAYOUT.encode(1, 0, 0, 0, np.array([1, 2])),
                          LAYOUT.encode(1, 5, 6, 7, np.array([1]))])
    corner = np.array(GEOMETRY.voxel_offset) + np.array([5, 6, 7]) * np.array(GEOMETRY.chunk_size)
    positions = np.array([[0, 0, 0], [63, 63, 31], corner + np.array([10, 20, 30])])
    SupervoxelLocator.write(tmp_path, ids, positions, LAYOUT, GEOMETRY)
    stored = np.load(tmp_path / "anchors" / "offsets.npy")
    assert stored.dtype == np.int16 and stored.tolist() == [[0, 0, 0], [63, 63, 31], [10, 20, 30]]
    located = SupervoxelLocator.open(tmp_path, LAYOUT, GEOMETRY)
    assert located is not None
    assert located.locate(positions, GEOMETRY.resolution).tolist() == ids.tolist()
    far = positions + np.array([[0, 0, 0], [0, 0, 0], [100_000, 0, -5]])
    SupervoxelLocator.write_batches(tmp_path, [(ids[:2], far[:2]), (ids[2:], far[2:])],
                                    LAYOUT, GEOMETRY)
    assert np.load(tmp_path / "anchors" / "offsets.npy").dtype == np.int32
    locator = SupervoxelLocator.open(tmp_path, LAYOUT, GEOMETRY)
    assert locator is not None and np.array_equal(locator.positions([2, 0]), far[[2, 0]])


def test_anchors_of_the_earlier_layouts_still_locate(tmp_path: Path) -> None:
    ids = LAYOUT.encode(1, 0, 0, 0, np.array([1, 2, 3, 9]))
    positions = np.array([[1, 1, 1], [20, 20, 5], [40, 40, 10], [60, 60, 20]])
    SupervoxelLocator.write(tmp_path, ids, positions, LAYOUT, GEOMETRY)
    new = SupervoxelLocator.open(tmp_path, LAYOUT, GEOMETRY)
    folder = tmp_path / "anchors"
    (folder / "offsets.npy").unlink()
    np.save(folder / "positions.npy", positions.astype(np.int32))  # absolute until format 3
    absolute = SupervoxelLocator.open(tmp_path, LAYOUT, GEOMETRY)
    np.save(folder / "ids.npy", ids)  # format 1 kept the ids themselves
    for name in ("run_start.npy", "run_pos.npy"):
        (folder / name).unlink()
    old = SupervoxelLocator.open(tmp_path, LAYOUT, GEOMETRY)
    for locator in (new, absolute, old):
        assert locator is not None
        assert locator.locate(positions, GEOMETRY.resolution).tolist() == ids.tolist()
    assert absolute is not None and not absolute.relative
