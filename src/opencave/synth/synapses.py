"""Synapses, generated in batches of bounded size and written as raw Parquet parts.

Each synapse has a postsynaptic partner (a neuron, drawn by heavy-tailed in-weight, or an
orphan dendrite fragment) and a presynaptic one (a neuron by out-weight — proofread axons
weigh more — an orphan axon fragment, or rarely the post cell itself: an autapse).
Positions cluster around the postsynaptic soma; the presynaptic point sits a cleft away.
Orphan fragments are identified by the chunk they lie in, so no global registry is needed.

Partners are "cell keys": a cell index for cells with a nucleus, or ``FRAGMENT_BASE`` plus a
chunk-local fragment number for orphans.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import world
from .cells import Cells
from .geometry import LAYOUT, chunk_coordinates

FRAGMENT_BASE = 1 << 40
_SYNAPSES_CREATED = world.GRAPH_CREATED.replace(month=11, day=4, hour=6, minute=0)


def fragment_key(chunks: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cell key of orphan fragment ``j`` of the layer-1 chunk with coordinates ``chunks``."""
    packed = (chunks[:, 0] << 20) | (chunks[:, 1] << 10) | chunks[:, 2]
    return FRAGMENT_BASE + packed * world.FRAGMENTS_PER_CHUNK + j


def chunk_ids(chunks: np.ndarray) -> np.ndarray:
    """PyChunkedGraph layer-1 chunk ids (segment 0) as int64."""
    return LAYOUT.encode(1, chunks[:, 0], chunks[:, 1], chunks[:, 2], 0).astype(np.int64)


def synapse_ids(start: int, count: int, total: int) -> np.ndarray:
    """Unique ids 1…M spread over a range a bit larger than ``total``, uncorrelated with
    position (a bijective affine map modulo a power of two)."""
    modulus = 1 << max(4, int(np.ceil(np.log2(total * 1.3 + 2))))
    index = np.arange(start, start + count, dtype=np.uint64)
    mixed = (index * np.uint64(0x9E3779B1) + np.uint64(12345)) % np.uint64(modulus)
    return (mixed + np.uint64(1)).astype(np.int64)


def generate(cells: Cells, total: int, seed: int, out_dir: Path, *,
             batch_size: int = 1_000_000) -> Iterator[tuple[Path, int]]:
    """Write raw synapse parts to ``out_dir``; yields (path, rows) per part."""
    out_dir.mkdir(parents=True, exist_ok=True)
    neurons = cells.neurons
    in_p = cells.in_weight[neurons] / cells.in_weight[neurons].sum()
    out_p = cells.out_weight[neurons] / cells.out_weight[neurons].sum()
    for part, start in enumerate(range(0, total, batch_size)):
        count = min(batch_size, total - start)
        rng = np.random.default_rng([seed, 7, part])
        table = _batch(cells, neurons, in_p, out_p, start, count, total, rng)
        path = out_dir / f"part-{part:05d}.parquet"
        pq.write_table(table, path, compression="zstd")
        yield path, count


def _batch(cells: Cells, neurons: np.ndarray, in_p: np.ndarray, out_p: np.ndarray,
           start: int, n: int, total: int, rng: np.random.Generator) -> pa.Table:
    lo = np.array(world.BOUNDS_MIN)
    hi = np.array(world.BOUNDS_MAX) - 1
    post_on_neuron = rng.random(n) < world.POST_ON_NEURON
    post_cell = np.full(n, -1, dtype=np.int64)
    post_cell[post_on_neuron] = rng.choice(neurons, size=post_on_neuron.sum(), p=in_p)
    post = rng.uniform(lo, hi, (n, 3))
    somas = cells.position[post_cell[post_on_neuron]]
    post[post_on_neuron] = somas + rng.normal(0, world.DENDRITE_SPREAD,
                                              (post_on_neuron.sum(), 3))
    post = np.clip(np.round(post), lo, hi).astype(np.int64)
    pre = np.clip(np.round(post + rng.normal(0, world.CLEFT_OFFSET, (n, 3))), lo,
                  hi).astype(np.int64)
    ctr = np.clip(np.round((pre + post) / 2 + rng.normal(0, (20, 20, 1), (n, 3))), lo,
                  hi).astype(np.int64)
    post_chunks = chunk_coordinates(post)
    pre_chunks = chunk_coordinates(pre)
    post_cell[~post_on_neuron] = fragment_key(
        post_chunks[~post_on_neuron],
        rng.integers(0, world.FRAGMENTS_PER_CHUNK, (~post_on_neuron).sum()),
    )
    draw = rng.random(n)
    autapse = post_on_neuron & (draw < world.AUTAPSE)
    pre_on_neuron = ~autapse & (draw < world.AUTAPSE + world.PRE_ON_NEURON)
    pre_cell = fragment_key(pre_chunks, rng.integers(0, world.FRAGMENTS_PER_CHUNK, n))
    pre_cell[pre_on_neuron] = rng.choice(neurons, size=pre_on_neuron.sum(), p=out_p)
    pre_cell[autapse] = post_cell[autapse]
    created = np.datetime64(_SYNAPSES_CREATED.replace(tzinfo=None), "us") + rng.integers(
        0, int(timedelta(hours=8).total_seconds() * 1e6), n).astype("timedelta64[us]")
    size = np.round(rng.lognormal(np.log(1500.0), 0.9, n)).astype(np.float64)
    columns = {
        "id": synapse_ids(start, n, total),
        "created": pa.array(created, pa.timestamp("us", tz="UTC")),
        "pre_cell": pre_cell,
        "post_cell": post_cell,
        "pre_chunk": chunk_ids(pre_chunks),
        "post_chunk": chunk_ids(post_chunks),
        "size": size,
    }
    for name, points in (("pre", pre), ("post", post), ("ctr", ctr)):
        for axis, values in zip("xyz", points.T, strict=True):
            columns[f"{name}_{axis}"] = values
    return pa.table(columns)
