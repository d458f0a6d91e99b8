"""Segmentation graph: ``get_roots`` throughput at a past timestamp, merge latency and split
latency of a neuron-sized segment, each measured side by side with a baseline in one run.

    .venv/bin/python -m bench.segmentation --supervoxels 100000000

The synthetic graph (built once, cached under ``bench/.cache/``) is a cube of layer-1 chunks
with 150 supervoxels each: five chains of 30. Chain 0 links into tubes along x (32 chunks),
chain 1 into blocks of 8x8x4 chunks (7,680 supervoxels), chain 2 into "neurons" of 16x16x8
chunks (61,440 supervoxels); chains 3 and 4 stay fragments. Edits go to a fresh live store
each run, so runs are comparable and the cache stays read-only.

Baselines (same run, interleaved with the measured calls):

- ``get_roots``: a plain NumPy gather of the same 10^6 random positions from the memory-mapped
  parent array, the floor of any lookup (one random read per supervoxel);
- merge: one SQLite commit of one row to the same live store, the floor of a durable edit;
- split: scipy's maximum flow on the segment's edges alone, the cut without the rest.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from scipy import sparse
from scipy.sparse.csgraph import maximum_flow

from opencave.segmentation import ChunkGeometry, IdLayout, SegmentationGraph
from opencave.storage import LiveStore

from .datastack import CACHE

TABLE = "bench"
LAYOUT = IdLayout(n_layers=12, spatial_bits=10)
GEOMETRY = ChunkGeometry(voxel_offset=(0, 0, 0))
BUILT = datetime(2024, 1, 1, tzinfo=UTC)
CHAINS, CHAIN = 5, 30
PER_CHUNK = CHAINS * CHAIN
#: chain -> chunk block its pieces join (None: a fragment inside one chunk)
BLOCKS: dict[int, tuple[int, int, int] | None] = {
    0: (32, 1, 1), 1: (8, 8, 4), 2: (16, 16, 8), 3: None, 4: None,
}
NEURON_CHAIN, BLOCK_CHAIN, FRAGMENT_CHAIN = 2, 1, 3
TARGETS = {"get_roots": 1e6, "merge": 0.050, "split": 0.500}
QUERY_SIZE = 1_000_000


# -- the synthetic graph --------------------------------------------------------------------------
def grid_for(n_supervoxels: int) -> tuple[int, int, int]:
    side = int(np.ceil((n_supervoxels / PER_CHUNK) ** (1 / 3)))
    return side, side, side


def chunk_index(grid: tuple[int, int, int], x: object, y: object, z: object) -> np.ndarray:
    """Chunks numbered x-major, as their ids sort (x has the highest bits)."""
    _, gy, gz = grid
    return np.asarray(z) + gz * (np.asarray(y) + gy * np.asarray(x))


def sv_position(chunk: object, chain: int, i: object) -> np.ndarray:
    """Position of supervoxel ``i`` of ``chain`` in chunk number ``chunk`` (ids are sorted)."""
    return np.asarray(chunk, dtype=np.int64) * PER_CHUNK + chain * CHAIN + np.asarray(i)


def generate(grid: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
    """Supervoxel ids (sorted), edges (n, 2) and affinities of the synthetic graph."""
    gx, gy, gz = grid
    x, y, z = np.meshgrid(np.arange(gx), np.arange(gy), np.arange(gz), indexing="ij")
    x, y, z = x.ravel(), y.ravel(), z.ravel()
    chunk_ids = LAYOUT.encode(1, x, y, z, 0)
    svs = (chunk_ids[:, None] | np.arange(1, PER_CHUNK + 1, dtype=np.uint64)).ravel()
    inner = (np.arange(CHAINS)[:, None] * CHAIN + np.arange(CHAIN - 1)).ravel()
    a = [(np.arange(len(chunk_ids))[:, None] * PER_CHUNK + inner).ravel()]
    b = [a[0] + 1]
    for chain, block in BLOCKS.items():
        if block is None:
            continue
        for axis, step in enumerate([(1, 0, 0), (0, 1, 0), (0, 0, 1)]):
            coord = (x, y, z)[axis]
            ok = ((coord + 1) % block[axis] != 0) & (coord + 1 < grid[axis])
            src = np.flatnonzero(ok)
            dst = chunk_index(grid, x[ok] + step[0], y[ok] + step[1], z[ok] + step[2])
            a.append(sv_position(src, chain, CHAIN - 1))
            b.append(sv_position(dst, chain, 0))
    pa, pb = np.concatenate(a), np.concatenate(b)
    del a, b
    edges = np.stack([svs[pa], svs[pb]], axis=1)
    affinities = np.random.default_rng(seed).uniform(0.5, 1.0, len(edges)).astype(np.float32)
    return svs, edges, affinities


def cached_graph(n_supervoxels: int) -> tuple[Path, tuple[int, int, int], float | None]:
    """The graph directory for this size (built if missing), its grid, the build time."""
    grid = grid_for(n_supervoxels)
    directory = CACHE / f"segmentation-{'x'.join(map(str, grid))}" / "graph"
    if (directory / "meta.json").exists():
        return directory, grid, None
    print(f"building a {grid} chunk graph ({np.prod(grid) * PER_CHUNK:.3g} supervoxels) ...",
          flush=True)
    start = time.perf_counter()
    svs, edges, affinities = generate(grid)
    with tempfile.TemporaryDirectory() as scratch:
        partial = directory.with_name("graph.partial")
        if partial.exists():
            shutil.rmtree(partial)
        SegmentationGraph.create(
            LiveStore.in_directory(Path(scratch)), partial, table_id=TABLE, layout=LAYOUT,
            geometry=GEOMETRY, supervoxel_ids=svs, edges=edges, affinities=affinities,
            timestamp=BUILT,
        )
        partial.rename(directory)
    return directory, grid, time.perf_counter() - start


# -- measurements ------------------------------------------------------------------------------
@dataclass
class Figure:
    name: str
    measured: str
    baseline: str
    ratio: float
    target: str
    passed: bool


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def bench_merges(graph: SegmentationGraph, grid: tuple[int, int, int], count: int,
                 rng: np.random.Generator) -> tuple[Figure, datetime]:
    """A neuron-ish block (chain 1) merged with a fragment (chain 3) of the next chunk in z,
    as in an axon extension; each merge uses its own chunk. Returns the time of the middle
    merge (a past timestamp between edits)."""
    candidates = np.flatnonzero(np.arange(int(np.prod(grid))) % grid[2] < grid[2] - 1)
    chunks = rng.choice(candidates, min(count, len(candidates)), replace=False)
    with graph.live.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS bench_commit (i INTEGER, t TEXT)"))
    merge_t, commit_t, middle = [], [], BUILT
    for k, chunk in enumerate(chunks.tolist()):
        a = sv_id(graph, sv_position(chunk, BLOCK_CHAIN, CHAIN // 2))
        b = sv_id(graph, sv_position(chunk + 1, FRAGMENT_CHAIN, 0))
        merge_t.append(timed(lambda a=a, b=b: graph.merge(a, b, user_id="bench")))
        commit_t.append(timed(lambda k=k: _commit(graph.live, k)))
        if k == len(chunks) // 2:
            middle = graph.operations()[-1].timestamp
    measured, baseline = statistics.median(merge_t), statistics.median(commit_t)
    return Figure(
        f"merge, block + fragment (median of {len(merge_t)}; max {max(merge_t) * 1e3:.0f} ms)",
        f"{measured * 1e3:.1f} ms", f"SQLite commit of one row: {baseline * 1e3:.2f} ms",
        measured / baseline, f"< {TARGETS['merge'] * 1e3:.0f} ms",
        measured < TARGETS["merge"],
    ), middle


def sv_id(graph: SegmentationGraph, position: int) -> int:
    """The base supervoxel at ``position``."""
    return int(graph.base.node_ids.at([position])[0])


def _commit(live: LiveStore, k: int) -> None:
    with live.begin() as conn:
        conn.execute(sa.text("INSERT INTO bench_commit VALUES (:i, :t)"), {"i": k, "t": "x"})


def bench_get_roots(graph: SegmentationGraph, when: datetime, rounds: int,
                    rng: np.random.Generator) -> Figure:
    pos = rng.integers(0, graph.base.n_sv, min(QUERY_SIZE, graph.base.n_sv))
    svs = graph.base.node_ids.at(pos)
    ours, floor = [], []
    for _ in range(rounds):
        ours.append(timed(lambda: graph.get_roots(svs, timestamp=when)))
        floor.append(timed(lambda: np.asarray(graph.base.parent[pos])))
    measured, baseline = len(svs) / statistics.median(ours), len(svs) / statistics.median(floor)
    return Figure(
        f"get_roots, {len(svs):.0e} random sv at a past time (median of {rounds})",
        f"{measured / 1e6:.2f} M sv/s", f"NumPy gather of the same: {baseline / 1e6:.1f} M/s",
        baseline / measured, f">= {TARGETS['get_roots'] / 1e6:.0f} M sv/s",
        measured >= TARGETS["get_roots"],
    )


def bench_splits(graph: SegmentationGraph, grid: tuple[int, int, int], count: int) -> Figure:
    """Split "neurons" (chain-2 blocks) between the chain's first supervoxel in the block's
    first chunk and its last in the block's last chunk."""
    block = BLOCKS[NEURON_CHAIN]
    assert block is not None
    corners = [(x, y, z) for z in range(0, grid[2], block[2]) for y in range(0, grid[1], block[1])
               for x in range(0, grid[0], block[0])][:count]
    split_t, flow_t, sizes = [], [], []
    for x, y, z in corners:
        far = [min(c + b, g) - 1 for c, b, g in zip((x, y, z), block, grid, strict=True)]
        src = sv_id(graph, sv_position(chunk_index(grid, x, y, z), NEURON_CHAIN, 0))
        snk = sv_id(graph, sv_position(chunk_index(grid, *far), NEURON_CHAIN, CHAIN - 1))
        root = graph.get_root(src)
        edges, affinities = graph.subgraph(root)
        sizes.append(len(graph.get_leaves(root)))
        flow_t.append(timed(lambda e=edges, a=affinities, s=src, t=snk: _flow(e, a, s, t)))
        split_t.append(timed(lambda s=src, t=snk: graph.split([s], [t], user_id="bench")))
    measured, baseline = statistics.median(split_t), statistics.median(flow_t)
    return Figure(
        f"split, {int(statistics.mean(sizes)):,}-sv segment (median of {len(split_t)})",
        f"{measured * 1e3:.0f} ms", f"scipy max-flow on its edges: {baseline * 1e3:.0f} ms",
        measured / baseline, f"< {TARGETS['split'] * 1e3:.0f} ms", measured < TARGETS["split"],
    )


def _flow(edges: np.ndarray, affinities: np.ndarray, source: int, sink: int) -> None:
    nodes, idx = np.unique(edges, return_inverse=True)
    idx = idx.reshape(-1, 2)
    n = len(nodes)
    cap = np.maximum(1, (affinities * 1000).astype(np.int32))
    big = np.int32(cap.sum() + 1)
    s, t = np.searchsorted(nodes, [source, sink])
    rows = np.concatenate([idx[:, 0], idx[:, 1], [n], [t]])
    cols = np.concatenate([idx[:, 1], idx[:, 0], [s], [n + 1]])
    data = np.concatenate([cap, cap, [big], [big]]).astype(np.int32)
    graph = sparse.csr_matrix((data, (rows, cols)), shape=(n + 2, n + 2))
    maximum_flow(graph, n, n + 1, method="dinic")


def print_table(title: str, figures: list[Figure]) -> None:
    head = ("figure", "measured", "baseline (same run)", "ratio", "target", "result")
    rows = [head] + [(f.name, f.measured, f.baseline, f"{f.ratio:.1f}x", f.target,
                      "pass" if f.passed else "MISS") for f in figures]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    print(title)
    for k, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print("ratio: measured time / baseline time (how far above the floor). For scale, the "
          "original PyChunkedGraph takes seconds per edit (issue 3).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supervoxels", type=float, default=1e6,
                        help="graph size (rounded up to a cube of 150-supervoxel chunks)")
    parser.add_argument("--merges", type=int, default=30)
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5, help="get_roots repetitions")
    args = parser.parse_args()
    directory, grid, build_s = cached_graph(int(args.supervoxels))
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as scratch:
        live = LiveStore.in_directory(Path(scratch))
        try:
            graph = SegmentationGraph.open(live, directory, TABLE)
            merges, middle = bench_merges(graph, grid, args.merges, rng)
            roots = bench_get_roots(graph, middle, args.rounds, rng)
            splits = bench_splits(graph, grid, args.splits)
        finally:
            live.dispose()
    meta = graph.base.meta
    built = "cached" if build_s is None else f"built in {build_s:.0f} s"
    print_table(f"segmentation: {meta.n_supervoxels:,} supervoxels, {meta.n_edges:,} edges, "
                f"{LAYOUT.n_layers} layers ({built})", [roots, merges, splits])


if __name__ == "__main__":
    main()
