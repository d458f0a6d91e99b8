"""The base graph: the bulk-imported hierarchy and atomic edges as memory-mapped ``.npy``
arrays (immutable; edits live in the overlay).

Files in the graph directory::

    meta.json           layout, geometry, table id, base timestamp, counts, root counter
    run_start.npy       every base node id, sorted (supervoxels first: layer is the top
    run_pos.npy         byte), as runs of consecutive ids (:class:`SortedIds`); a node's
                        *position* is its index in that sorted order
    parent.npy          1 + the parent's position, for the node at each position (0: root)
    child_ptr.npy       CSR over the non-supervoxel nodes (positions n_sv...) ...
    children.npy        ... into their children's positions
    edge_a/b.npy        atomic edges (a < b) as supervoxel positions, sorted by (a, b)
    edge_aff.npy        their affinities (float32)
    edge_order_b.npy    permutation of the edges sorted by b ...
    edge_ptr_b.npy      ... and its CSR by supervoxel position

Ids are minted densely per chunk, so a run is usually a whole chunk and ``position = run_pos
+ (id - run_start)`` after one binary search in a small, cache-resident table; sparse ids
degrade gracefully to a plain binary search. Nodes refer to each other by position, not by
id, and every index array is ``uint32`` while its values fit (4·10^9 nodes), ``int64``
beyond: half the bytes of 64-bit ids, and a walk up or down the base hierarchy follows
positions without searching for them.

The edges of a supervoxel by its smaller end are found by a binary search in ``edge_a``
(sorted); formats 1-3 also stored that search's answer for every supervoxel
(``edge_ptr_a.npy``, 4 bytes per supervoxel: 0.7 GB at 10^8 synapses). Earlier formats read
the same: 2 stored parents, children and edge ends as ids; 1 also stored ``ids.npy`` (the
sorted ids themselves) and ``int64`` index arrays.
"""

from __future__ import annotations

import json
import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arrays import ranges, unique
from .ids import LAYER_SHIFT, ChunkGeometry, IdLayout

FORMAT_VERSION = 4
FORMAT = f"opencave-segmentation-base/{FORMAT_VERSION}"
#: The arrays memory-mapped on open (the runs are read into memory instead).
MAPPED = (
    "parent",
    "child_ptr",
    "children",
    "edge_a",
    "edge_b",
    "edge_aff",
    "edge_order_b",
    "edge_ptr_b",
)
#: Every array file of the format.
ARRAYS = ("run_start", "run_pos", *MAPPED)
#: Stored by formats 1-3 only (see the module's docstring).
EDGE_PTR_A = "edge_ptr_a"


@dataclass(frozen=True)
class BaseMeta:
    table_id: str
    layout: IdLayout
    geometry: ChunkGeometry
    base_timestamp: int  # microseconds
    root_segment_start: int
    n_supervoxels: int
    n_nodes: int
    n_edges: int
    n_roots: int
    #: the format the directory was written in (older ones store node ids, not positions)
    version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "table_id": self.table_id,
            "layout": self.layout.to_json(),
            "geometry": self.geometry.to_json(),
            "base_timestamp_us": self.base_timestamp,
            "root_segment_start": self.root_segment_start,
            "n_supervoxels": self.n_supervoxels,
            "n_nodes": self.n_nodes,
            "n_edges": self.n_edges,
            "n_roots": self.n_roots,
        }

    @classmethod
    def from_json(cls, data: dict) -> BaseMeta:
        return cls(
            table_id=data["table_id"],
            layout=IdLayout(**data["layout"]),
            geometry=ChunkGeometry.from_json(data["geometry"]),
            base_timestamp=int(data["base_timestamp_us"]),
            root_segment_start=int(data["root_segment_start"]),
            n_supervoxels=int(data["n_supervoxels"]),
            n_nodes=int(data["n_nodes"]),
            n_edges=int(data["n_edges"]),
            n_roots=int(data["n_roots"]),
            version=int(data["format"].rsplit("/", 1)[1]),
        )


#: Keys from which :func:`search` sorts them first.
_SORT_KEYS_FROM = 4096


def search(table: np.ndarray, keys: np.ndarray, side: str = "left") -> np.ndarray:
    """``np.searchsorted``, sorting many keys first: NumPy starts each key's search from the
    previous key's bounds, so sorted keys walk a large table in cache order (10^6 random
    positions over the 1.3·10^7 runs of a 10^8-synapse graph: 1.0 s unsorted, 0.12 s
    sorted)."""
    if len(keys) < _SORT_KEYS_FROM or not np.any(keys[1:] < keys[:-1]):
        return np.searchsorted(table, keys, side=side)
    order = np.argsort(keys)
    out = np.empty(len(keys), dtype=np.int64)
    out[order] = np.searchsorted(table, keys[order], side=side)
    return out


@dataclass(frozen=True)
class SortedIds:
    """A sorted array of unique ids kept as its runs of consecutive ids: ``run_start`` (first
    id of each run) and ``run_pos`` (its position, plus a final entry = the length). Ids are
    minted densely per chunk, so a few million runs stand for billions of ids: lookups are
    one binary search in a small, cache-resident table and nothing else is stored.

    >>> ids = SortedIds.of(np.array([5, 6, 7, 20, 21], np.uint64))
    >>> len(ids), ids.run_start.tolist(), ids.at([0, 3]).tolist()
    (5, [5, 20], [5, 20])
    >>> ids.positions(np.array([7, 8, 21], np.uint64)).tolist()
    [2, -1, 4]
    >>> ids.searchsorted(np.array([4, 7, 8, 30], np.uint64), side="right").tolist()
    [0, 3, 3, 5]
    """

    run_start: np.ndarray
    run_pos: np.ndarray

    @classmethod
    def of(cls, sorted_ids: np.ndarray) -> SortedIds:
        sorted_ids = np.asarray(sorted_ids, dtype=np.uint64)
        n = len(sorted_ids)
        if n == 0:
            return cls(np.zeros(0, np.uint64), np.zeros(1, np.int64))
        breaks = np.flatnonzero(np.diff(sorted_ids) != 1) + 1
        starts = np.concatenate([[0], breaks]).astype(np.int64)
        return cls(sorted_ids[starts], np.concatenate([starts, [n]]).astype(np.int64))

    @classmethod
    def load(cls, directory: Path) -> SortedIds:
        """The runs saved in ``directory`` (read into memory: they are small)."""
        return cls(np.load(Path(directory) / "run_start.npy"),
                   np.load(Path(directory) / "run_pos.npy"))

    def save(self, directory: Path) -> None:
        np.save(Path(directory) / "run_start.npy", self.run_start)
        np.save(Path(directory) / "run_pos.npy", self.run_pos)

    def __len__(self) -> int:
        return int(self.run_pos[-1])

    def at(self, positions: object) -> np.ndarray:
        """The ids at ``positions`` (all valid)."""
        positions = np.asarray(positions, dtype=np.int64)
        run = search(self.run_pos, positions, side="right") - 1
        return self.run_start[run] + (positions - self.run_pos[run]).astype(np.uint64)

    def positions(self, ids: object) -> np.ndarray:
        """Positions of ``ids``; -1 where absent."""
        ids = np.asarray(ids, dtype=np.uint64)
        if len(self.run_start) == 0 or len(ids) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        run, offset, inside = self._runs_of(ids)
        return np.where(inside, self.run_pos[run] + offset, -1)

    def searchsorted(self, values: object, side: str = "left") -> np.ndarray:
        """``np.searchsorted`` over the ids."""
        values = np.asarray(values, dtype=np.uint64)
        if len(self.run_start) == 0:
            return np.zeros(len(values), dtype=np.int64)
        run, offset, inside = self._runs_of(values)
        before_all = values < self.run_start[0]
        after_run = np.where(before_all, 0, self.run_pos[run + 1])
        return np.where(inside, self.run_pos[run] + offset + (side == "right"), after_run)

    def _runs_of(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each value: the last run starting at or before it (0 if none), the offset into
        that run, and whether the value is in it."""
        run = np.maximum(search(self.run_start, values, side="right") - 1, 0)
        offset = (values - self.run_start[run]).astype(np.int64)
        length = self.run_pos[run + 1] - self.run_pos[run]
        inside = (values >= self.run_start[run]) & (offset >= 0) & (offset < length)
        return run, offset, inside


class RunBuilder:
    """:class:`SortedIds` of ids appended in batches (ascending across batches)."""

    def __init__(self) -> None:
        self._starts: list[np.ndarray] = []
        self._pos: list[np.ndarray] = []
        self._n = 0
        self._last: int | None = None

    def add(self, sorted_ids: np.ndarray) -> None:
        if len(sorted_ids) == 0:
            return
        runs = SortedIds.of(sorted_ids)
        starts, pos = runs.run_start, runs.run_pos[:-1]
        if self._last is not None and int(sorted_ids[0]) == self._last + 1:
            starts, pos = starts[1:], pos[1:]  # the previous batch's last run goes on
        self._starts.append(starts)
        self._pos.append(pos + self._n)
        self._n += len(sorted_ids)
        self._last = int(sorted_ids[-1])

    def __len__(self) -> int:
        return self._n

    def ids(self) -> SortedIds:
        starts = np.concatenate([np.zeros(0, np.uint64), *self._starts])
        return SortedIds(starts, np.concatenate([*self._pos, [self._n]]).astype(np.int64))


class BaseGraph:
    """Read-only access to the base arrays (memory-mapped)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.meta = BaseMeta.from_json(json.loads((self.directory / "meta.json").read_text()))
        names = (*MAPPED, EDGE_PTR_A) if self.meta.version < 4 else MAPPED
        arrays = {name: np.load(self.directory / f"{name}.npy", mmap_mode="r") for name in names}
        self._mapped = tuple(arrays.values())
        # The runs are small and on every lookup's path: kept in RAM.
        self.node_ids = SortedIds.load(self.directory)
        self.parent: np.ndarray = arrays["parent"]
        self.child_ptr: np.ndarray = arrays["child_ptr"]
        self.child_pos: np.ndarray = arrays["children"]
        self.edge_a: np.ndarray = arrays["edge_a"]
        self.edge_b: np.ndarray = arrays["edge_b"]
        self.edge_aff: np.ndarray = arrays["edge_aff"]
        self.edge_ptr_a: np.ndarray | None = arrays.get(EDGE_PTR_A)
        self.edge_order_b: np.ndarray = arrays["edge_order_b"]
        self.edge_ptr_b: np.ndarray = arrays["edge_ptr_b"]
        self.n_sv = self.meta.n_supervoxels
        self.layout = self.meta.layout
        # Ids sort by layer first: each layer's nodes are one range of positions.
        layers = np.arange(2, self.layout.n_layers + 2, dtype=np.uint64)
        self._layer_ends = self.node_ids.searchsorted(layers << np.uint64(LAYER_SHIFT))

    def drop_pages(self) -> None:
        """Let the kernel take back the pages read so far (they stay in the page cache):
        a scan over the whole graph would otherwise keep every page it touched counted in
        this process's resident memory."""
        for array in self._mapped:
            region = getattr(array, "_mmap", None)
            if region is not None:
                region.madvise(mmap.MADV_DONTNEED)

    # -- positions ---------------------------------------------------------------------------
    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Position of each id, -1 where the id is not a base node."""
        return self.node_ids.positions(ids)

    def _ids_of(self, stored: np.ndarray) -> np.ndarray:
        """Node ids for node references as stored (positions; ids before format 3)."""
        if self.meta.version < 3:
            return np.asarray(stored, dtype=np.uint64)
        return self.node_ids.at(stored)

    def _positions_of(self, stored: np.ndarray) -> np.ndarray:
        """Positions for node references as stored (see :meth:`_ids_of`)."""
        if self.meta.version < 3:
            return self.node_ids.positions(np.asarray(stored, dtype=np.uint64))
        return np.asarray(stored, dtype=np.int64)

    def layers_at(self, pos: np.ndarray) -> np.ndarray:
        """Layer of the nodes at ``pos`` (all valid), without looking up their ids."""
        return np.searchsorted(self._layer_ends, pos, side="right") + 1

    def parent_positions(self, pos: np.ndarray) -> np.ndarray:
        """Position of the base parent of the nodes at ``pos`` (all valid), -1 for roots."""
        stored = np.asarray(self.parent[np.asarray(pos, dtype=np.int64)], dtype=np.int64)
        if self.meta.version >= 3:
            return stored - 1  # stored as 1 + position, 0 for roots
        out = np.full(len(stored), -1, dtype=np.int64)
        has = stored != 0
        out[has] = self._positions_of(stored[has])
        return out

    # -- children ----------------------------------------------------------------------------
    def child_positions(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the children of the nodes at ``pos`` (concatenated) and the index of
        their parent."""
        sel = np.flatnonzero(np.asarray(pos) >= self.n_sv)
        inner = np.asarray(pos, dtype=np.int64)[sel] - self.n_sv
        idx, owner = ranges(self.child_ptr[inner], self.child_ptr[inner + 1])
        return self._positions_of(self.child_pos[idx]), sel[owner]

    def child_counts(self, pos: np.ndarray) -> np.ndarray:
        pos = np.asarray(pos, dtype=np.int64)
        out = np.zeros(len(pos), dtype=np.int64)
        sel = pos >= self.n_sv
        inner = pos[sel] - self.n_sv
        out[sel] = self.child_ptr[inner + 1] - self.child_ptr[inner]
        return out

    # -- edges -------------------------------------------------------------------------------
    def incident_edges(
        self, sv_pos: np.ndarray, closed: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every base edge touching the supervoxels at ``sv_pos`` (sorted): (a, b, affinity).

        ``closed``: the set holds both ends of each of its edges (whole segments), so the
        edges found by their smaller end are all of them."""
        sv_pos = np.asarray(sv_pos, dtype=np.int64)
        edges, _ = ranges(*self._edges_by_a(sv_pos))
        if not closed:
            by_b, _ = ranges(self.edge_ptr_b[sv_pos], self.edge_ptr_b[sv_pos + 1])
            edges = unique(np.concatenate([edges, np.asarray(self.edge_order_b[by_b])]))
        return (
            self._ids_of(self.edge_a[edges]),
            self._ids_of(self.edge_b[edges]),
            np.asarray(self.edge_aff[edges], dtype=np.float32),
        )

    def _edges_by_a(self, sv_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First and end index of the edges whose smaller end is each supervoxel."""
        if self.edge_ptr_a is not None:
            return self.edge_ptr_a[sv_pos], self.edge_ptr_a[sv_pos + 1]
        # Keys of the array's own dtype: NumPy would otherwise convert the whole map.
        keys = np.concatenate([sv_pos, sv_pos + 1]).astype(self.edge_a.dtype)
        bounds = search(self.edge_a, keys)
        return bounds[:len(sv_pos)], bounds[len(sv_pos):]

    # -- counters ----------------------------------------------------------------------------
    def max_segments(self, chunk_ids: np.ndarray, layer: int) -> np.ndarray:
        """Largest base segment id in each chunk of ``layer`` (0 when the chunk is empty)."""
        chunk_ids = np.asarray(chunk_ids, dtype=np.uint64)
        if len(self.node_ids) == 0:
            return np.zeros(len(chunk_ids), dtype=np.int64)
        upper = chunk_ids | np.uint64(self.layout.max_segment(layer))
        pos = self.node_ids.searchsorted(upper, side="right") - 1
        last = self.node_ids.at(np.maximum(pos, 0))
        inside = (pos >= 0) & (self.layout.chunk_id(last) == chunk_ids)
        return np.where(inside, self.layout.segment(last).astype(np.int64), 0)
