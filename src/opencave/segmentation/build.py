"""Bulk construction of the base graph from supervoxel ids and atomic edges, streamed.

Inputs arrive in batches (supervoxels sorted, edges in any order) and every output array is
written to disk as it is produced, so memory stays bounded by the batch size plus about five
bytes per unit of the layer being grouped, however large the graph (10⁹ supervoxels fit):

1. supervoxels are kept as runs of consecutive ids (their positions follow);
2. edges become supervoxel positions, canonical (a < b), and go to bucket files by range
   of ``a`` (an external distribution sort, :mod:`.buckets`);
3. per range of whole chunks, the bucket is sorted and deduplicated (the largest affinity
   wins), appended to the edge arrays, and the range's supervoxels are grouped into
   layer-2 nodes (:mod:`.slabs`);
4. layers 3 … top-1 group what the layer below left, slab by slab (:mod:`.slabs`);
5. the roots: one per component left at the top or dropped below for having no edge.

Ids are deterministic and independent of the batch sizes: nodes are numbered per chunk in
order of their smallest supervoxel, roots in the same order from ``root_segment_start``.
``meta.json`` is written last, so a directory with a ``meta.json`` holds a complete graph.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np

from ..errors import Conflict, InvalidRequest, describe_choices
from ..progress import Steps, steps
from ..storage.files import GRAPH_BUILD_WORK
from .arrays import unique
from .base import ARRAYS, BaseMeta, SortedIds
from .buckets import Buckets
from .ids import ChunkGeometry, IdLayout, as_ids
from .npyfile import NpyFile
from .slabs import Grouping, Outputs, batch_cuts, chunk_starts

#: Supervoxels (or units) per slab of the grouping, and per batch of the in-memory inputs.
BATCH_NODES = 4_000_000

#: An edge batch: ids of one end, ids of the other end, affinities (None: all 1.0).
EdgeBatch = tuple[object, object, object | None]


def build_base(
    directory: Path,
    *,
    table_id: str,
    layout: IdLayout,
    geometry: ChunkGeometry,
    supervoxel_ids: object,
    edges: object,
    affinities: object | None,
    timestamp_us: int,
    root_segment_start: int,
    progress: bool | Steps = False,
    batch_nodes: int = BATCH_NODES,
) -> BaseMeta:
    """Build from in-memory arrays: supervoxel ids in any order (duplicates allowed) and
    edges ``(n, 2)``."""
    sv = unique(as_ids(supervoxel_ids))
    pairs, aff = _edge_arrays(edges, affinities)
    step = max(1, batch_nodes)
    return build_base_streamed(
        directory,
        table_id=table_id,
        layout=layout,
        geometry=geometry,
        supervoxels=(sv[i : i + step] for i in range(0, len(sv), step)),
        edges=(
            (pairs[i : i + step, 0], pairs[i : i + step, 1], aff[i : i + step])
            for i in range(0, len(pairs), step)
        ),
        timestamp_us=timestamp_us,
        root_segment_start=root_segment_start,
        progress=progress,
        batch_nodes=batch_nodes,
    )


def build_base_streamed(
    directory: Path,
    *,
    table_id: str,
    layout: IdLayout,
    geometry: ChunkGeometry,
    supervoxels: Iterable[object],
    edges: Iterable[EdgeBatch],
    timestamp_us: int,
    root_segment_start: int,
    progress: bool | Steps = False,
    batch_nodes: int = BATCH_NODES,
) -> BaseMeta:
    """Build from batches: ``supervoxels`` yields sorted id arrays (ascending across
    batches, no duplicates), ``edges`` yields ``(a, b, affinities)`` in any order."""
    directory = Path(directory)
    if (directory / "meta.json").exists():
        raise Conflict(f"a segmentation graph already exists in {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    with _bar(progress) as bar:
        builder = _Builder(directory, layout, root_segment_start, batch_nodes, bar)
        try:
            builder.run(supervoxels, edges)
        except BaseException:
            builder.discard()
            raise
    meta = BaseMeta(
        table_id=table_id,
        layout=layout,
        geometry=geometry,
        base_timestamp=timestamp_us,
        root_segment_start=root_segment_start,
        n_supervoxels=builder.n_sv,
        n_nodes=builder.out.length - builder.n_sv,
        n_edges=builder.n_edges,
        n_roots=builder.n_roots,
    )
    tmp = directory / "meta.json.partial"
    tmp.write_text(json.dumps(meta.to_json(), indent=2))
    os.replace(tmp, directory / "meta.json")
    return meta


@contextlib.contextmanager
def _bar(progress: bool | Steps) -> Iterator[Steps]:
    if isinstance(progress, Steps):
        yield progress
    else:
        with steps(bool(progress)) as bar:
            yield bar


def _edge_arrays(edges: object, affinities: object | None) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.asarray(edges)
    if pairs.size == 0:
        pairs = np.zeros((0, 2), dtype=np.uint64)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise InvalidRequest(f"edges must have shape (n, 2), got {pairs.shape}")
    aff = (
        np.ones(len(pairs), dtype=np.float32)
        if affinities is None
        else np.asarray(affinities, dtype=np.float32).reshape(-1)
    )
    if len(aff) != len(pairs):
        raise InvalidRequest(f"{len(aff)} affinities for {len(pairs)} edges")
    return pairs, aff


def _edge_records(n_sv: int) -> np.dtype:
    index = np.int32 if n_sv < 2**31 - 1 else np.int64
    return np.dtype([("a", index), ("b", index), ("w", np.float32)])


class _Builder:
    """One build: the output files, the work directory and the counts."""

    def __init__(
        self, directory: Path, layout: IdLayout, root_segment_start: int, batch_nodes: int,
        bar: Steps,
    ) -> None:
        self.layout = layout
        self.root_segment_start = root_segment_start
        self.batch_nodes = max(1, batch_nodes)
        self.bar = bar
        self.work = directory / GRAPH_BUILD_WORK
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir()
        self.out = Outputs(directory)
        self.edges = {name: NpyFile(directory / f"{name}.npy", np.uint32, wider=np.int64)
                      for name in ("edge_a", "edge_b", "edge_order_b", "edge_ptr_b")}
        self.edges["edge_aff"] = NpyFile(directory / "edge_aff.npy", np.float32)
        self.n_sv = 0
        self.n_edges = 0
        self.n_roots = 0
        self.sv_ids = SortedIds.of(np.zeros(0, np.uint64))

    def run(self, supervoxels: Iterable[object], edges: Iterable[EdgeBatch]) -> None:
        starts = self._supervoxels(supervoxels)
        cuts = batch_cuts(starts, self.n_sv, self.batch_nodes)
        buckets = self._distribute(edges, cuts)
        grouping = Grouping(self.layout, self.out, self.work, self.batch_nodes, self.bar)
        layer2 = grouping.start(self.n_sv)
        by_b = Buckets(self.work / "by_b", cuts[:-1], [("b", np.int64), ("i", np.int64)])
        task = self.bar.task("segmentation graph: edges and layer 2", self.n_sv)
        for i, (lo, hi) in enumerate(pairwise(cuts.tolist())):
            ea, eb = self._edges_of(buckets, i, lo, hi, by_b)
            positions = np.arange(lo, hi, dtype=np.int64)
            grouping.slab(layer2, lo, hi, positions, self.sv_ids.at(positions), ea, eb)
            self.bar.advance(task, hi - lo)
        buckets.remove()
        self._edges_by_b(by_b, cuts)
        units = grouping.finish(layer2)
        for layer in range(3, self.layout.n_layers):
            units = grouping.layer(layer, units)
        self.n_roots = grouping.roots(units, self.root_segment_start)
        self._finish()

    # -- 1. supervoxels ----------------------------------------------------------------------
    def _supervoxels(self, batches: Iterable[object]) -> np.ndarray:
        """Take the supervoxels in as the first nodes; returns the positions where chunks
        start."""
        task = self.bar.task("segmentation graph: supervoxels")
        starts: list[np.ndarray] = []
        last = -1
        for batch in batches:
            ids = as_ids(batch)
            if len(ids) == 0:
                continue
            _check_supervoxels(self.layout, ids, last)
            begin = chunk_starts(self.layout, ids)
            if last >= 0 and self.layout.chunk_id(ids[:1])[0] == self.layout.chunk_id(
                    np.array([last], np.uint64))[0]:
                begin = begin[1:]
            starts.append(begin + self.n_sv)
            self.out.append_nodes(ids)
            self.n_sv += len(ids)
            last = int(ids[-1])
            self.bar.advance(task, len(ids))
        self.bar.done(task)
        self.sv_ids = self.out.runs.ids()
        return np.concatenate(starts) if starts else np.zeros(0, np.int64)

    # -- 2. edges to buckets -----------------------------------------------------------------
    def _distribute(self, batches: Iterable[EdgeBatch], cuts: np.ndarray) -> Buckets:
        task = self.bar.task("segmentation graph: edges in")
        records = _edge_records(self.n_sv)
        buckets = Buckets(self.work / "edges", cuts[:-1], records)
        for a_ids, b_ids, affinities in batches:
            a, b, aff = self._edge_batch(a_ids, b_ids, affinities)
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            keep = lo != hi
            rec = np.empty(int(keep.sum()), dtype=records)
            rec["a"], rec["b"], rec["w"] = lo[keep], hi[keep], aff[keep]
            buckets.add(rec["a"], rec)
            self.bar.advance(task, len(a))
        self.bar.done(task)
        return buckets

    def _edge_batch(
        self, a_ids: object, b_ids: object, affinities: object | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Supervoxel positions of both ends, and the affinities, validated."""
        a_ids, b_ids = as_ids(a_ids), as_ids(b_ids)
        if len(a_ids) != len(b_ids):
            raise InvalidRequest(f"{len(a_ids)} edge ends against {len(b_ids)}")
        aff = (np.ones(len(a_ids), dtype=np.float32) if affinities is None
               else np.asarray(affinities, dtype=np.float32).reshape(-1))
        if len(aff) != len(a_ids):
            raise InvalidRequest(f"{len(aff)} affinities for {len(a_ids)} edges")
        if np.any(~np.isfinite(aff) & ~np.isposinf(aff)) or np.any(aff < 0):
            raise InvalidRequest("affinities must be non-negative numbers")
        a = self.sv_ids.positions(a_ids)
        b = self.sv_ids.positions(b_ids)
        missing = (a < 0) | (b < 0)
        if np.any(missing):
            bad = unique(np.concatenate([a_ids[missing], b_ids[missing]]))[:5]
            raise InvalidRequest(f"edges name unknown supervoxels, e.g. {bad.tolist()}")
        return a, b, aff

    # -- 3. final edge arrays ----------------------------------------------------------------
    def _edges_of(
        self, buckets: Buckets, index: int, lo: int, hi: int, by_b: Buckets
    ) -> tuple[np.ndarray, np.ndarray]:
        """The sorted, deduplicated edges whose smaller end lies in ``[lo, hi)``, appended to
        the edge arrays; returns their two ends as positions."""
        rec = buckets.read(index)
        buckets.drop(index)
        n = max(self.n_sv, 1)
        key = rec["a"].astype(np.int64) * n + rec["b"]
        aff = rec["w"]
        del rec
        if len(key) > 1 and np.any(key[1:] < key[:-1]):
            order = np.argsort(key)
            key, aff = key[order], aff[order]
        if len(key):
            starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
            if len(starts) < len(key):
                # Duplicate edges keep their largest affinity.
                key, aff = key[starts], np.maximum.reduceat(aff, starts)
        ea, eb = key // n, key % n
        first = self.n_edges
        self.edges["edge_a"].append(ea)
        self.edges["edge_b"].append(eb)
        self.edges["edge_aff"].append(aff)
        order_b = np.empty(len(eb), dtype=by_b.dtype)
        order_b["b"], order_b["i"] = eb, first + np.arange(len(eb))
        by_b.add(eb, order_b)
        self.n_edges += len(eb)
        return ea, eb

    def _edges_by_b(self, by_b: Buckets, cuts: np.ndarray) -> None:
        """The permutation of the edges by their larger end, and its CSR."""
        self.edges["edge_ptr_b"].append([0])
        seen = 0
        for i, (lo, hi) in enumerate(pairwise(cuts.tolist())):
            rec = by_b.read(i)
            by_b.drop(i)
            order = np.argsort(rec["b"], kind="stable")
            self.edges["edge_order_b"].append(rec["i"][order])
            counts = np.bincount(rec["b"] - lo, minlength=int(hi - lo))
            self.edges["edge_ptr_b"].append(seen + np.cumsum(counts))
            seen += len(rec)
        by_b.remove()

    # -- 5. files ----------------------------------------------------------------------------
    def _finish(self) -> None:
        self.out.runs.ids().save(self.out.directory)
        self.out.close()
        for f in self.edges.values():
            f.close()
        shutil.rmtree(self.work, ignore_errors=True)

    def discard(self) -> None:
        self.out.discard()
        for f in self.edges.values():
            f.discard()
        for name in ARRAYS:
            (self.out.directory / f"{name}.npy").unlink(missing_ok=True)
        shutil.rmtree(self.work, ignore_errors=True)


def _check_supervoxels(layout: IdLayout, ids: np.ndarray, last: int) -> None:
    """Sorted (across batches too), no duplicates, layer 1, chunks under one root."""
    if ids[0] == 0:
        raise InvalidRequest("supervoxel id 0 is reserved for 'no segment'")
    if int(ids[0]) <= last or np.any(ids[1:] <= ids[:-1]):
        raise InvalidRequest("supervoxel batches must be sorted and free of duplicates")
    bad = (ids >> np.uint64(56)) != 1
    if np.any(bad):
        raise InvalidRequest(
            f"supervoxel ids must be layer-1 ids; got {describe_choices(ids[bad][:5].tolist())}"
        )
    # Sorted supervoxels list their chunks in order: check the (few) distinct chunks only.
    chunks = layout.chunk_id(ids[chunk_starts(layout, ids)])
    limit = layout.grid_limit()
    if any(np.any(c >= limit) for c in layout.chunk_coordinates(chunks)):
        raise InvalidRequest(
            f"chunk coordinates must stay below {limit} so that one top-layer chunk holds "
            f"every root (n_layers={layout.n_layers})"
        )


