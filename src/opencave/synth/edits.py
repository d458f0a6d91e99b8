"""Proofreading history: what the synthetic volume looks like when the graph starts (some
false merges) and the edits between versions that change root ids while nucleus ids stay.

- Axon extension: a neuron (most often a proofread one) is merged with an orphan fragment
  lying in a chunk it passes through; the fragment's synapses now belong to the neuron.
- False-merge cleanup: a fragment, or a whole second neuron (a multi-soma merge), attached
  by one wrong edge when the graph starts is split off by removing that edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa

from ..segmentation.arrays import unique
from . import world
from .cells import Cells
from .synapses import FRAGMENT_BASE

EDITORS = tuple(str(u) for u in range(101, 113))


@dataclass(frozen=True)
class Edit:
    timestamp: datetime
    kind: str  # "merge" or "split"
    supervoxels: tuple[int, int]
    user_id: str


@dataclass
class EditPlan:
    initial_edges: np.ndarray  # (n, 2) uint64: false merges present when the graph starts
    edits: list[Edit]


def windows() -> list[tuple[datetime, datetime]]:
    """The time windows before each version in which edits happen."""
    starts = [world.GRAPH_CREATED + timedelta(days=1)] + [t for _, t in world.VERSIONS[:-1]]
    return [(s + timedelta(hours=1), t - timedelta(hours=1))
            for s, (_, t) in zip(starts, world.VERSIONS, strict=True)]


Pair = tuple[int, int]


def plan(con: duckdb.DuckDBPyConnection, cells: Cells, soma_sv: np.ndarray,
         rng: np.random.Generator) -> EditPlan:
    neurons = cells.neurons
    spans = windows()
    per_window = max(world.MIN_EDITS_PER_WINDOW, round(world.EDITS_PER_WINDOW * len(neurons)))
    proofread = np.flatnonzero(cells.proofread_order >= 0)
    extension_targets = np.where(
        rng.random(per_window * len(spans)) < 0.7,
        rng.choice(proofread, per_window * len(spans)),
        rng.choice(neurons, per_window * len(spans)),
    )
    n_false = max(2, round(world.FALSE_MERGES * len(neurons)))
    false_targets = rng.choice(neurons, n_false, replace=False)
    picker = _Picker(con, np.unique(np.concatenate([extension_targets, false_targets])))
    initial: list[_Pick | Pair] = []
    planned: list[tuple[datetime, str, _Pick | Pair, str]] = []
    for neuron in false_targets:
        pick = picker.pick(int(neuron), rng)
        if pick is not None:
            initial.append(pick)
            planned.append(_edit(spans, rng, "split", pick))
    for a, b in _multi_soma_pairs(neurons, soma_sv, rng):
        initial.append((a, b))
        planned.append(_edit(spans, rng, "split", (a, b)))
    for i, neuron in enumerate(extension_targets):
        pick = picker.pick(int(neuron), rng)
        if pick is not None:
            start, end = spans[i // per_window]
            planned.append((_between(start, end, rng), "merge", pick, str(rng.choice(EDITORS))))
    picker.resolve(con)
    edits = [Edit(when, kind, _pair(pair), user) for when, kind, pair, user in planned]
    edits.sort(key=lambda e: e.timestamp)
    edges = np.array([_pair(p) for p in initial], dtype=np.uint64).reshape(-1, 2)
    return EditPlan(edges, edits)


@dataclass
class _Pick:
    """A neuron piece and the ``rank``-th orphan fragment (by supervoxel) of its chunk."""

    neuron_sv: int
    chunk: int
    rank: int
    fragment_sv: int = 0


def _pair(pair: _Pick | Pair) -> Pair:
    return (pair.neuron_sv, pair.fragment_sv) if isinstance(pair, _Pick) else pair


class _Picker:
    """Draws, for a neuron, one of the orphan fragments sharing a chunk with one of its
    pieces, uniformly among those not drawn yet, listed by (piece, fragment) in supervoxel
    order. Holds only the number of fragments per chunk of each target's pieces (the full
    list would be targets × pieces × fragments per chunk, 10⁸–10⁹ rows at full scale); a
    drawn fragment is known by its chunk and rank until :meth:`resolve` looks it up."""

    def __init__(self, con: duckdb.DuckDBPyConnection, neurons: np.ndarray) -> None:
        con.register("targets", pa.table({"cell": neurons.astype(np.int64)}))
        try:
            rows = con.sql(
                f"""
                WITH fragments AS (
                    SELECT chunk, count(*) AS n FROM pieces WHERE cell >= {FRAGMENT_BASE}
                    GROUP BY chunk
                )
                SELECT p.cell, p.first_sv, p.chunk, f.n
                FROM pieces p JOIN fragments f USING (chunk)
                WHERE p.cell IN (SELECT cell FROM targets)
                ORDER BY p.cell, p.first_sv
                """
            ).fetchnumpy()
        finally:
            con.unregister("targets")
        self.cell = np.asarray(rows["cell"], dtype=np.int64)
        self.piece_sv = np.asarray(rows["first_sv"], dtype=np.int64)
        chunk = np.asarray(rows["chunk"], dtype=np.int64)
        self.chunks = unique(chunk)
        self.chunk_of = np.searchsorted(self.chunks, chunk)
        self.count = np.asarray(rows["n"], dtype=np.int64)
        self.used_count = np.zeros(len(self.chunks), dtype=np.int64)
        self.used: dict[int, list[int]] = {}
        self.picks: list[_Pick] = []

    def pick(self, neuron: int, rng: np.random.Generator) -> _Pick | None:
        lo, hi = np.searchsorted(self.cell, [neuron, neuron + 1])
        free = self.count[lo:hi] - self.used_count[self.chunk_of[lo:hi]]
        total = int(free.sum())
        if total == 0:
            return None
        k = int(rng.integers(total))
        ends = np.cumsum(free)
        row = int(np.searchsorted(ends, k, side="right"))
        chunk = int(self.chunk_of[lo + row])
        rank = k - int(ends[row] - free[row])
        for taken in sorted(self.used.get(chunk, [])):  # skip fragments drawn before
            if taken <= rank:
                rank += 1
        self.used.setdefault(chunk, []).append(rank)
        self.used_count[chunk] += 1
        pick = _Pick(int(self.piece_sv[lo + row]), int(self.chunks[chunk]), rank)
        self.picks.append(pick)
        return pick

    def resolve(self, con: duckdb.DuckDBPyConnection) -> None:
        """Look the drawn fragments up (one query over the chunks drawn from)."""
        chunks = np.unique(np.array([p.chunk for p in self.picks], dtype=np.int64))
        con.register("drawn", pa.table({"chunk": chunks}))
        try:
            rows = con.sql(
                f"""
                SELECT chunk, first_sv FROM pieces
                WHERE cell >= {FRAGMENT_BASE} AND chunk IN (SELECT chunk FROM drawn)
                ORDER BY chunk, first_sv
                """
            ).fetchnumpy()
        finally:
            con.unregister("drawn")
        chunk = np.asarray(rows["chunk"], dtype=np.int64)
        first = np.searchsorted(chunk, [p.chunk for p in self.picks])
        fragment = np.asarray(rows["first_sv"], dtype=np.int64)
        for pick, start in zip(self.picks, first.tolist(), strict=True):
            pick.fragment_sv = int(fragment[start + pick.rank])


def _multi_soma_pairs(neurons: np.ndarray, soma_sv: np.ndarray,
                      rng: np.random.Generator) -> list[tuple[int, int]]:
    n_pairs = max(1, round(world.MULTI_SOMA * len(neurons)))
    chosen = rng.choice(neurons, 2 * n_pairs, replace=False)
    return [(int(soma_sv[a]), int(soma_sv[b])) for a, b in chosen.reshape(-1, 2)]


def _edit(spans: list[tuple[datetime, datetime]], rng: np.random.Generator, kind: str,
          pair: _Pick | Pair) -> tuple[datetime, str, _Pick | Pair, str]:
    start, end = spans[int(rng.integers(len(spans)))]
    return _between(start, end, rng), kind, pair, str(rng.choice(EDITORS))


def _between(start: datetime, end: datetime, rng: np.random.Generator) -> datetime:
    span = (end - start).total_seconds()
    return start + timedelta(seconds=float(rng.uniform(0, span)))
