"""Bulk construction of the base graph from supervoxel ids and atomic edges.

Vectorized end to end: the edges are mapped to supervoxel positions, made canonical
(a < b), sorted and deduplicated once; the hierarchy comes from one connected-components
pass per layer over a shrinking contracted graph (:mod:`.layers`). Ids are deterministic:
nodes are numbered per chunk in order of their smallest supervoxel, roots in the same order
from ``root_segment_start``. ``meta.json`` is written last, so a directory with a
``meta.json`` always holds a complete graph.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path

import numpy as np

from ..errors import Conflict, InvalidRequest, describe_choices
from .arrays import components, first_occurrences, ptr_from_counts, ranges, unique
from .base import BaseMeta, lookup_runs, make_runs
from .ids import ChunkGeometry, IdLayout, as_ids
from .layers import LayerNodes, Units, build_layers, mint_in_chunks

#: Supervoxels per batch of the streamed layer-2 pass (bounds memory).
BATCH_NODES = 4_000_000


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
    progress: bool = False,
    batch_nodes: int = BATCH_NODES,
) -> BaseMeta:
    directory = Path(directory)
    if (directory / "meta.json").exists():
        raise Conflict(f"a segmentation graph already exists in {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    with _progress(progress, layout.n_layers + 2) as step:
        sv = _prepare_supervoxels(layout, supervoxel_ids)
        step("supervoxels")
        ea, eb = _prepare_edges(directory, sv, edges, affinities)
        step("edges")
        writer = _NodeWriter(layout, sv, root_segment_start)
        units, ea, eb = writer.layer2(ea, eb, batch_nodes)
        step("layer 2")
        build_layers(
            layout,
            units,
            ea,
            eb,
            writer.allocate,
            writer.record,
            start_layer=3,
            on_progress=lambda layer: step(f"layer {layer}"),
        )
        del ea, eb, units
        n_nodes, n_roots = writer.save(directory)
        step("nodes")
    meta = BaseMeta(
        table_id=table_id,
        layout=layout,
        geometry=geometry,
        base_timestamp=timestamp_us,
        root_segment_start=root_segment_start,
        n_supervoxels=len(sv),
        n_nodes=n_nodes,
        n_edges=int(np.load(directory / "edge_a.npy", mmap_mode="r").shape[0]),
        n_roots=n_roots,
    )
    tmp = directory / "meta.json.partial"
    tmp.write_text(json.dumps(meta.to_json(), indent=2))
    os.replace(tmp, directory / "meta.json")
    return meta


def _prepare_supervoxels(layout: IdLayout, supervoxel_ids: object) -> np.ndarray:
    sv = unique(as_ids(supervoxel_ids))
    if len(sv) and sv[0] == 0:
        raise InvalidRequest("supervoxel id 0 is reserved for 'no segment'")
    bad = (sv >> np.uint64(56)) != 1
    if np.any(bad):
        raise InvalidRequest(
            f"supervoxel ids must be layer-1 ids; got {describe_choices(sv[bad][:5].tolist())}"
        )
    # Sorted supervoxels list their chunks in order: check the (few) distinct chunks only.
    chunks = unique(layout.chunk_id(sv[_chunk_starts(layout, sv)]))
    limit = layout.grid_limit()
    if any(np.any(c >= limit) for c in layout.chunk_coordinates(chunks)):
        raise InvalidRequest(
            f"chunk coordinates must stay below {limit} so that one top-layer chunk holds "
            f"every root (n_layers={layout.n_layers})"
        )
    return sv


def _chunk_starts(layout: IdLayout, sv: np.ndarray) -> np.ndarray:
    """Positions where a new layer-1 chunk begins in sorted supervoxel ids."""
    chunk = sv >> np.uint64(layout.segment_bits(1))
    starts = np.ones(len(sv), dtype=bool)
    starts[1:] = chunk[1:] != chunk[:-1]
    return np.flatnonzero(starts)


def _prepare_edges(
    directory: Path, sv: np.ndarray, edges: object, affinities: object | None
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical, deduplicated edges as positions into ``sv``; writes the edge arrays."""
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
    if np.any(~np.isfinite(aff) & ~np.isposinf(aff)) or np.any(aff < 0):
        raise InvalidRequest("affinities must be non-negative numbers")
    run_start, run_pos = make_runs(sv)
    ea = _positions(run_start, run_pos, pairs[:, 0])
    eb = _positions(run_start, run_pos, pairs[:, 1])
    missing = (ea < 0) | (eb < 0)
    if np.any(missing):
        bad = unique(pairs[missing].reshape(-1))[:5]
        raise InvalidRequest(f"edges name unknown supervoxels, e.g. {bad.tolist()}")
    del pairs
    ea, eb = np.minimum(ea, eb), np.maximum(ea, eb)
    loop = ea == eb
    if np.any(loop):
        ea, eb, aff = ea[~loop], eb[~loop], aff[~loop]
    n = max(len(sv), 1)
    key = ea * n + eb
    del ea, eb
    if len(key) > 1 and np.any(key[1:] < key[:-1]):
        order = np.argsort(key)
        key, aff = key[order], aff[order]
        del order
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if len(key) else key
    if len(starts) < len(key):
        # Duplicate edges keep their largest affinity.
        key, aff = key[starts], np.maximum.reduceat(aff, starts)
    del starts
    index_dtype = np.int32 if len(sv) < 2**31 - 1 else np.int64
    ea, eb = (key // n).astype(index_dtype), (key % n).astype(index_dtype)
    del key
    _save(directory, "edge_a", sv[ea])
    _save(directory, "edge_b", sv[eb])
    _save(directory, "edge_aff", aff)
    _save(directory, "edge_ptr_a", ptr_from_counts(np.bincount(ea, minlength=len(sv))))
    _save(directory, "edge_order_b", np.argsort(eb, kind="stable"))
    _save(directory, "edge_ptr_b", ptr_from_counts(np.bincount(eb, minlength=len(sv))))
    return ea, eb


def _positions(run_start: np.ndarray, run_pos: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Supervoxel positions of ``ids`` in slices, bounding the lookup's temporaries."""
    out = np.empty(len(ids), dtype=np.int64)
    step = 1 << 24
    for lo in range(0, len(ids), step):
        out[lo : lo + step] = lookup_runs(run_start, run_pos, as_ids(ids[lo : lo + step]))
    return out


class _NodeWriter:
    """Allocates deterministic ids for the builder and collects nodes, children, parents."""

    def __init__(self, layout: IdLayout, sv: np.ndarray, root_segment_start: int) -> None:
        self.layout = layout
        self.sv = sv
        self.root_segment_start = root_segment_start
        self.offset = len(sv)  # position of the next layer's first node
        self.parent_sv = np.zeros(len(sv), dtype=np.uint64)
        self.layer_ids: list[np.ndarray] = []
        self.layer_parents: list[np.ndarray] = []
        self.layer_offsets: list[int] = []
        self.child_counts: list[np.ndarray] = []
        self.children: list[np.ndarray] = []
        self.n_roots = 0

    def layer2(
        self, ea: np.ndarray, eb: np.ndarray, batch_nodes: int
    ) -> tuple[Units, np.ndarray, np.ndarray]:
        """Layer 2, streamed over chunk-aligned batches of supervoxels (edges sorted by
        ``ea``) to bound memory. Returns the layer-2 nodes as units and the edges between
        them (every intra-chunk edge ends up inside a layer-2 node)."""
        sv, n = self.sv, len(self.sv)
        unit_of_sv = np.empty(n, dtype=ea.dtype)
        parts: dict[str, list[np.ndarray]] = {"ids": [], "counts": [], "children": [], "sv": []}
        n_units = 0
        for lo, hi in pairwise(_batch_cuts(self.layout, sv, batch_nodes)):
            e_lo, e_hi = np.searchsorted(ea, [lo, hi])
            a, b = ea[e_lo:e_hi] - lo, eb[e_lo:e_hi] - lo
            chunk = sv[lo:hi] >> np.uint64(self.layout.segment_bits(1))
            inside = b < hi - lo
            a, b = a[inside], b[inside]
            same = chunk[a] == chunk[b]
            labels, k = components(hi - lo, a[same], b[same])
            first = first_occurrences(labels, k)
            # Components come in order of their smallest supervoxel, hence of their chunk:
            # minted per chunk from 1, the ids are sorted and independent of the batching.
            ids, _ = mint_in_chunks(self.layout.chunk_id_at_layer(sv[lo + first], 2), 0)
            self._check_segments(ids, 2)
            self.parent_sv[lo:hi] = ids[labels]
            parts["ids"].append(ids)
            parts["counts"].append(np.bincount(labels, minlength=k))
            parts["children"].append(sv[lo:hi][np.argsort(labels, kind="stable")])
            parts["sv"].append(sv[lo + first])
            unit_of_sv[lo:hi] = labels + n_units
            n_units += k
        ids = np.concatenate(parts["ids"]) if parts["ids"] else np.zeros(0, np.uint64)
        self._add_layer(
            ids,
            _concat(parts["counts"], np.int64),
            _concat(parts["children"], np.uint64),
        )
        keys = len(sv) + np.arange(len(ids), dtype=np.int64)
        units = Units(ids, keys, _concat(parts["sv"], np.uint64))
        ua, ub = unit_of_sv[ea], unit_of_sv[eb]
        del unit_of_sv
        cross = ua != ub
        return units, ua[cross], ub[cross]

    def _check_segments(self, ids: np.ndarray, layer: int) -> None:
        if len(ids) and int(self.layout.segment(ids).max()) > self.layout.max_segment(layer):
            raise InvalidRequest(f"a layer-{layer} chunk holds more nodes than its ids allow")

    def _add_layer(self, ids: np.ndarray, counts: np.ndarray, children: np.ndarray) -> None:
        self.layer_ids.append(ids)
        self.layer_offsets.append(self.offset)
        self.layer_parents.append(np.zeros(len(ids), dtype=np.uint64))
        self.child_counts.append(counts)
        self.children.append(children)
        self.offset += len(ids)

    def allocate(
        self, layer: int, chunk_ids: np.ndarray, ptr: np.ndarray, children: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        k = len(chunk_ids)
        if layer == self.layout.n_layers:
            last = self.root_segment_start + k - 1
            if k and last > self.layout.max_segment(layer):
                raise InvalidRequest("root_segment_start leaves too few root ids")
            segments = np.arange(k, dtype=np.uint64) + np.uint64(self.root_segment_start)
            ids = np.uint64(self.layout.root_chunk()) | segments
            order = np.arange(k)
            self.n_roots = k
        else:
            ids, order = mint_in_chunks(chunk_ids, 0)
            self._check_segments(ids, layer)
        keys = np.empty(k, dtype=np.int64)
        keys[order] = self.offset + np.arange(k, dtype=np.int64)
        return ids, keys

    def record(self, nodes: LayerNodes) -> None:
        counts = np.diff(nodes.ptr)
        owner_ids = np.repeat(nodes.ids, counts)
        self._set_parents(nodes.child_keys, owner_ids)
        order = np.argsort(nodes.keys, kind="stable")
        idx, _ = ranges(nodes.ptr[:-1][order], nodes.ptr[1:][order])
        self._add_layer(nodes.ids[order], counts[order], nodes.children[idx])

    def _set_parents(self, child_keys: np.ndarray, parents: np.ndarray) -> None:
        is_sv = child_keys < len(self.sv)
        self.parent_sv[child_keys[is_sv]] = parents[is_sv]
        rest = np.flatnonzero(~is_sv)
        if len(rest) == 0:
            return
        which = np.searchsorted(self.layer_offsets, child_keys[rest], side="right") - 1
        for i in unique(which):
            sel = rest[which == i]
            self.layer_parents[i][child_keys[sel] - self.layer_offsets[i]] = parents[sel]

    def save(self, directory: Path) -> tuple[int, int]:
        ids = np.concatenate([self.sv, *self.layer_ids])
        run_start, run_pos = make_runs(ids)
        _save(directory, "ids", ids)
        del ids
        _save(directory, "run_start", run_start)
        _save(directory, "run_pos", run_pos)
        _save(directory, "parent", np.concatenate([self.parent_sv, *self.layer_parents]))
        _save(directory, "child_ptr", ptr_from_counts(np.concatenate(self.child_counts)))
        _save(directory, "children", np.concatenate(self.children))
        return self.offset - len(self.sv), self.n_roots


def _batch_cuts(layout: IdLayout, sv: np.ndarray, batch: int) -> np.ndarray:
    """Batch boundaries at chunk starts, about ``batch`` supervoxels apart."""
    starts = _chunk_starts(layout, sv)
    wanted = np.searchsorted(starts, np.arange(0, len(sv), batch))
    return unique(np.concatenate([starts[np.minimum(wanted, len(starts) - 1)], [len(sv)]]))


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _save(directory: Path, name: str, array: np.ndarray) -> None:
    np.save(directory / f"{name}.npy", np.ascontiguousarray(array))


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator:
    if not enabled:
        yield lambda _label: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("segmentation graph", total=total)

        def step(label: str) -> None:
            bar.update(task, advance=1, description=f"segmentation graph: {label}")

        yield step
