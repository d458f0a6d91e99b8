"""The bulk builder's layer grouping, slab by slab, with everything large on disk.

Same hierarchy as :func:`.layers.build_layers` (which edits use on a few roots): at layer L
the *units* (supervoxels at layer 2, then what the layer below left) joined by an edge
within one layer-L chunk form components; layer 2 materializes every component, layers
3 … top-1 those of ≥ 2 members, the top layer every component (a root).

Why slabs work: units are kept in order of their smallest supervoxel, whose id starts with
the chunk's x coordinate, so a run of whole x-columns of layer-L chunks is a contiguous
range of units and contains every edge inside its chunks. Components found per slab, in
order, are exactly the global ones in the global order; nodes are minted per chunk, so ids
do not depend on where slabs are cut.

Per layer, memory holds one slab; what spans the layer's units (where each unit goes next,
and whether an edge from an earlier slab reaches it) is in files read a slab at a time.
Edges that leave the slab wait on disk until the later slab has been grouped. A component
left without edges will only ever be skipped up to the top: it leaves the grouping at once
and waits, with the top layer's components, for its root id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

from ..errors import InvalidRequest
from ..progress import Steps
from .arrays import components, first_occurrences, ptr_from_counts, ranges, unique
from .base import RunBuilder
from .buckets import Buckets
from .ids import IdLayout
from .layers import mint_in_chunks
from .npyfile import NpyFile

#: Edges per read of a pending-edge file.
_READ = 1 << 22


def chunk_starts(layout: IdLayout, sv: np.ndarray) -> np.ndarray:
    """Positions where a new layer-1 chunk begins in sorted supervoxel ids."""
    chunk = sv >> np.uint64(layout.segment_bits(1))
    starts = np.ones(len(sv), dtype=bool)
    starts[1:] = chunk[1:] != chunk[:-1]
    return np.flatnonzero(starts)


def batch_cuts(starts: np.ndarray, n: int, batch: int) -> np.ndarray:
    """Slab boundaries ``[0, …, n]`` chosen among ``starts`` (sorted, from 0), about
    ``batch`` apart (farther when one group between starts is larger)."""
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    wanted = np.searchsorted(starts, np.arange(0, n, batch))
    return unique(np.concatenate([starts[np.minimum(wanted, len(starts) - 1)], [n]]))


def _pairs(n_units: int) -> np.dtype:
    index = np.int32 if n_units < 2**31 - 1 else np.int64
    return np.dtype([("a", index), ("b", index)])


class Outputs:
    """The node arrays being written: ``parent``, ``child_ptr`` and ``children`` (nodes named
    by position, see :mod:`.base`), and the ids' runs."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.parent = NpyFile(self.directory / "parent.npy", np.uint32, wider=np.int64)
        self.child_ptr = NpyFile(self.directory / "child_ptr.npy", np.uint32, wider=np.int64)
        self.children = NpyFile(self.directory / "children.npy", np.uint32, wider=np.int64)
        self.child_ptr.append([0])
        self.runs = RunBuilder()

    @property
    def length(self) -> int:
        """Nodes so far: the next node's position."""
        return len(self.runs)

    def append_nodes(self, ids: np.ndarray) -> None:
        """New nodes, in id order after every node so far (roots until a parent is set)."""
        self.runs.add(ids)
        self.parent.extend(len(ids))

    def set_parents(self, children: np.ndarray, parents: np.ndarray) -> None:
        """The nodes at positions ``children`` have the nodes at ``parents``."""
        self.parent.scatter(children, np.asarray(parents, dtype=np.int64) + 1)

    def append_children(self, counts: np.ndarray, children: np.ndarray) -> None:
        self.child_ptr.append(self.children.length + np.cumsum(counts))
        self.children.append(children)

    def files(self) -> tuple[NpyFile, ...]:
        return self.parent, self.child_ptr, self.children

    def close(self) -> None:
        for f in self.files():
            f.close()

    def discard(self) -> None:
        for f in self.files():
            f.discard()


@dataclass
class Units:
    """What one layer groups: units in order of their smallest supervoxel (the key, i.e.
    position, of the node standing for each, and that supervoxel), the slab
    boundaries, and the edges between units bucketed by slab of their smaller end."""

    layer: int
    count: int
    keys: NpyFile | None = None  # None at layer 2: the units are the supervoxels
    svs: NpyFile | None = None
    cuts: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    edges: Buckets | None = None

    def discard(self) -> None:
        for f in (self.keys, self.svs):
            if f is not None:
                f.discard()
        if self.edges is not None:
            self.edges.remove()


class _Pass:
    """The state of one layer's grouping: where each unit goes, the next layer's units,
    and the edges that survive (both ends known, or the far end still to relabel)."""

    def __init__(self, work: Path, layer: int, count: int) -> None:
        self.layer = layer
        pairs = _pairs(count)
        #: where each unit goes (its next-layer unit, -1: nowhere), appended slab by slab
        self.relabel = NpyFile(work / f"relabel{layer}.npy", pairs["a"])
        #: whether an edge from an earlier slab reaches the unit (zero-filled, sparse)
        self.reached = NpyFile(work / f"reached{layer}.npy", np.bool_)
        self.reached.extend(count)
        self.keys = NpyFile(work / f"keys{layer + 1}.npy", np.int64)
        self.svs = NpyFile(work / f"svs{layer + 1}.npy", np.uint64)
        self.done = NpyFile(work / f"done{layer}.npy", pairs)
        self.pending = NpyFile(work / f"pending{layer}.npy", pairs)
        self.columns: list[np.ndarray] = []
        self.last_column = -1

    def add_units(self, layout: IdLayout, keys: np.ndarray, svs: np.ndarray) -> None:
        """Next-layer units, noting where its x-columns of chunks start."""
        if len(svs):
            column = layout.chunk_coordinates(svs)[0] >> (self.layer - 1)
            new = np.ones(len(column), dtype=bool)
            new[0] = column[0] != self.last_column
            new[1:] = column[1:] != column[:-1]
            self.columns.append(np.flatnonzero(new) + self.keys.length)
            self.last_column = int(column[-1])
        self.keys.append(keys)
        self.svs.append(svs)


class Grouping:
    """Groups units into the layers 2 … top of the base graph, writing into ``out``."""

    def __init__(self, layout: IdLayout, out: Outputs, work: Path, batch: int,
                 bar: Steps) -> None:
        self.layout = layout
        self.out = out
        self.work = work
        self.batch = batch
        self.bar = bar
        #: per layer: (smallest supervoxel, key) of the components that left without edges
        self.isolated: list[tuple[NpyFile, NpyFile]] = []

    # -- one layer -----------------------------------------------------------------------
    def start(self, count: int) -> _Pass:
        """The layer-2 pass; the caller feeds it supervoxel slabs with :meth:`slab`."""
        return self._begin(2, count)

    def _begin(self, layer: int, count: int) -> _Pass:
        self.isolated.append((NpyFile(self.work / f"isolated{layer}_sv.npy", np.uint64),
                              NpyFile(self.work / f"isolated{layer}_key.npy", np.int64)))
        return _Pass(self.work, layer, count)

    def layer(self, layer: int, units: Units) -> Units:
        """Group a whole layer above 2; returns what the next layer groups."""
        task = self.bar.task(f"segmentation graph: layer {layer}", units.count)
        p = self._begin(layer, units.count)
        assert units.keys is not None and units.svs is not None and units.edges is not None
        for i, (lo, hi) in enumerate(pairwise(units.cuts.tolist())):
            keys, svs = units.keys.read(lo, hi), units.svs.read(lo, hi)
            edges = units.edges.read(i)
            units.edges.drop(i)
            self.slab(p, lo, hi, keys, svs, edges["a"].astype(np.int64),
                      edges["b"].astype(np.int64))
            self.bar.advance(task, hi - lo)
        units.discard()
        return self.finish(p)

    def slab(self, p: _Pass, lo: int, hi: int, keys: np.ndarray, svs: np.ndarray,
             ea: np.ndarray, eb: np.ndarray) -> None:
        """Group units ``[lo, hi)`` (whole chunks of the layer) given the edges whose
        smaller end lies among them (``ea <= eb``, unit indices)."""
        a = ea - lo
        inside = eb < hi
        a_in, b_in = a[inside], eb[inside] - lo
        chunk = self.layout.chunk_id_at_layer(svs, p.layer)
        same = chunk[a_in] == chunk[b_in]
        labels, k = components(hi - lo, a_in[same], b_in[same])
        la, lb = labels[a_in], labels[b_in]
        cross = la != lb
        la, lb = la[cross], lb[cross]
        out_a, out_b = labels[a[~inside]], eb[~inside]
        has_edge = np.zeros(k, dtype=bool)
        for touched in (la, lb, out_a, labels[p.reached.read(lo, hi)]):
            has_edge[touched] = True
        p.reached.scatter(out_b, np.ones(len(out_b), dtype=bool))
        first = first_occurrences(labels, k)
        counts = np.bincount(labels, minlength=k)
        materialize = counts >= 2 if p.layer > 2 else np.ones(k, dtype=bool)
        comp_keys = keys[first].astype(np.int64)
        comp_keys[materialize] = self._nodes(p.layer, labels, counts, materialize, keys,
                                             chunk[first])
        comp_svs = svs[first]
        goes = np.full(k, -1, dtype=np.int64)
        goes[has_edge] = p.keys.length + np.arange(int(has_edge.sum()))
        p.relabel.append(goes[labels])
        p.add_units(self.layout, comp_keys[has_edge], comp_svs[has_edge])
        iso_sv, iso_key = self.isolated[-1]
        iso_sv.append(comp_svs[~has_edge])
        iso_key.append(comp_keys[~has_edge])
        p.done.append(_records(p.done.dtype, goes[la], goes[lb]))
        p.pending.append(_records(p.pending.dtype, goes[out_a], out_b))

    def _nodes(self, layer: int, labels: np.ndarray, counts: np.ndarray,
               materialize: np.ndarray, keys: np.ndarray,
               comp_chunks: np.ndarray) -> np.ndarray:
        """Write the materialized components as nodes; returns their keys."""
        comps = np.flatnonzero(materialize)
        members = np.flatnonzero(materialize[labels])
        # Stable sort keeps members in unit order within each component.
        members = members[np.argsort(labels[members], kind="stable")]
        ids, order = mint_in_chunks(comp_chunks[comps], 0)
        if len(ids) and int(self.layout.segment(ids).max()) > self.layout.max_segment(layer):
            raise InvalidRequest(f"a layer-{layer} chunk holds more nodes than its ids allow")
        node_keys = np.empty(len(comps), dtype=np.int64)
        node_keys[order] = self.out.length + np.arange(len(comps))
        sizes = counts[comps]
        self.out.set_parents(keys[members], np.repeat(node_keys, sizes))
        ptr = ptr_from_counts(sizes)
        idx, _ = ranges(ptr[:-1][order], ptr[1:][order])
        self.out.append_nodes(ids[order])
        self.out.append_children(sizes[order], keys[members][idx])
        return node_keys

    def finish(self, p: _Pass) -> Units:
        """Relabel the surviving edges into the next layer's units and bucket them by the
        next layer's slabs."""
        count = p.keys.length
        starts = np.concatenate([np.zeros(0, np.int64), *p.columns])
        cuts = batch_cuts(starts, count, self.batch)
        pairs = _pairs(count)
        buckets = Buckets(self.work / f"edges{p.layer + 1}", cuts[:-1], pairs)
        for source, far_end in ((p.done, False), (p.pending, True)):
            for lo in range(0, source.length, _READ):
                rec = source.read(lo, lo + _READ)
                b = p.relabel.take(rec["b"]) if far_end else rec["b"]
                small, large = np.minimum(rec["a"], b), np.maximum(rec["a"], b)
                buckets.add(small, _records(pairs, small, large))
            source.discard()
        p.relabel.discard()
        p.reached.discard()
        return Units(p.layer + 1, count, p.keys, p.svs, cuts, buckets)

    # -- the top -------------------------------------------------------------------------
    def roots(self, units: Units, root_segment_start: int) -> int:
        """Mint the roots: the components of what reached the top layer and every component
        that left earlier, in order of smallest supervoxel. Returns how many."""
        top_sv, top_ptr, top_members = self._top_components(units)
        sources = [(sv, key) for sv, key in self.isolated if sv.length]
        total = len(top_sv) + sum(sv.length for sv, _ in sources)
        if total and root_segment_start + total - 1 > self.layout.max_segment(
                self.layout.n_layers):
            raise InvalidRequest("root_segment_start leaves too few root ids")
        task = self.bar.task("segmentation graph: roots", total)
        bounds = self._root_bounds(sources, top_sv)
        cut_top = np.searchsorted(top_sv, bounds)
        cut_src = [sv.searchsorted(bounds) for sv, _ in sources]
        minted = 0
        for r in range(len(bounds) - 1):
            svs, counts, members = [top_sv[cut_top[r]:cut_top[r + 1]]], [
                np.diff(top_ptr[cut_top[r]:cut_top[r + 1] + 1])], [
                top_members[top_ptr[cut_top[r]]:top_ptr[cut_top[r + 1]]]]
            for (sv, key), cut in zip(sources, cut_src, strict=True):
                svs.append(sv.read(int(cut[r]), int(cut[r + 1])))
                members.append(key.read(int(cut[r]), int(cut[r + 1])))
                counts.append(np.ones(len(svs[-1]), dtype=np.int64))
            minted += self._mint_roots(np.concatenate(svs), np.concatenate(counts),
                                       np.concatenate(members), root_segment_start + minted)
            self.bar.advance(task, len(np.concatenate(svs)))
        for sv, key in self.isolated:
            sv.discard()
            key.discard()
        return minted

    def _top_components(self, units: Units) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(smallest supervoxel, CSR of member keys) of each component at the top."""
        if units.count == 0 or units.keys is None or units.svs is None:
            units.discard()
            return np.zeros(0, np.uint64), np.zeros(1, np.int64), np.zeros(0, np.int64)
        keys, svs = units.keys.read(0, units.count), units.svs.read(0, units.count)
        assert units.edges is not None
        edges = [units.edges.read(i) for i in range(len(units.edges))]
        a = np.concatenate([e["a"] for e in edges]).astype(np.int64)
        b = np.concatenate([e["b"] for e in edges]).astype(np.int64)
        units.discard()
        labels, k = components(units.count, a, b)
        members = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=k)
        return svs[first_occurrences(labels, k)], ptr_from_counts(counts), keys[members]

    def _root_bounds(self, sources: list[tuple[NpyFile, NpyFile]],
                     top_sv: np.ndarray) -> np.ndarray:
        """Supervoxel ranges that split the roots into batches of about ``batch``."""
        sizes = [sv.length for sv, _ in sources]
        inner = np.zeros(0, dtype=np.uint64)
        if sizes and max(sizes) > self.batch:
            biggest = sources[int(np.argmax(sizes))][0]
            inner = biggest.take(np.arange(self.batch, biggest.length, self.batch))
        elif len(top_sv) > self.batch:
            inner = top_sv[self.batch::self.batch]
        return np.concatenate([[np.uint64(0)], inner, [np.uint64(2**64 - 1)]]).astype(np.uint64)

    def _mint_roots(self, svs: np.ndarray, counts: np.ndarray, members: np.ndarray,
                    first_segment: int) -> int:
        """Roots for components given in any order (smallest supervoxel, member keys)."""
        order = np.argsort(svs, kind="stable")
        root_chunk = np.uint64(self.layout.root_chunk())
        ranks = np.empty(len(svs), dtype=np.int64)
        ranks[order] = np.arange(len(svs))
        self.out.set_parents(members, np.repeat(self.out.length + ranks, counts))
        ptr = ptr_from_counts(counts)
        idx, _ = ranges(ptr[:-1][order], ptr[1:][order])
        self.out.append_nodes(root_chunk | (np.uint64(first_segment)
                                            + np.arange(len(svs), dtype=np.uint64)))
        self.out.append_children(counts[order], members[idx])
        return len(svs)


def _records(dtype: np.dtype, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    rec = np.empty(len(a), dtype=dtype)
    rec["a"], rec["b"] = a, b
    return rec
