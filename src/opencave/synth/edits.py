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
import pandas as pd

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
    candidates = _fragments_near(con, np.unique(np.concatenate([extension_targets,
                                                                 false_targets])))
    used: set[int] = set()
    initial: list[tuple[int, int]] = []
    edits: list[Edit] = []
    for neuron in false_targets:
        pair = _pick(candidates, int(neuron), used, rng)
        if pair is not None:
            initial.append(pair)
            edits.append(_edit(spans, rng, "split", pair))
    for a, b in _multi_soma_pairs(neurons, soma_sv, rng):
        initial.append((a, b))
        edits.append(_edit(spans, rng, "split", (a, b)))
    for i, neuron in enumerate(extension_targets):
        pair = _pick(candidates, int(neuron), used, rng)
        if pair is not None:
            start, end = spans[i // per_window]
            edits.append(Edit(_between(start, end, rng), "merge", pair,
                              str(rng.choice(EDITORS))))
    edits.sort(key=lambda e: e.timestamp)
    edges = np.array(initial, dtype=np.uint64).reshape(-1, 2)
    return EditPlan(edges, edits)


def _fragments_near(con: duckdb.DuckDBPyConnection, neurons: np.ndarray) -> pd.DataFrame:
    """(neuron, neuron supervoxel, fragment supervoxel) for fragments sharing a chunk with
    the neuron."""
    con.register("targets", pd.DataFrame({"cell": neurons.astype(np.int64)}))
    try:
        return con.sql(
            f"""
            SELECT n.cell AS neuron, n.first_sv AS neuron_sv, f.first_sv AS fragment_sv
            FROM pieces n JOIN pieces f ON f.chunk = n.chunk
            WHERE n.cell IN (SELECT cell FROM targets) AND f.cell >= {FRAGMENT_BASE}
            ORDER BY neuron, neuron_sv, fragment_sv
            """
        ).df()
    finally:
        con.unregister("targets")


def _pick(candidates: pd.DataFrame, neuron: int, used: set[int],
          rng: np.random.Generator) -> tuple[int, int] | None:
    rows = candidates[candidates["neuron"] == neuron]
    free = rows[~rows["fragment_sv"].isin(used)]
    if free.empty:
        return None
    row = free.iloc[int(rng.integers(len(free)))]
    used.add(int(row["fragment_sv"]))
    return int(row["neuron_sv"]), int(row["fragment_sv"])


def _multi_soma_pairs(neurons: np.ndarray, soma_sv: np.ndarray,
                      rng: np.random.Generator) -> list[tuple[int, int]]:
    n_pairs = max(1, round(world.MULTI_SOMA * len(neurons)))
    chosen = rng.choice(neurons, 2 * n_pairs, replace=False)
    return [(int(soma_sv[a]), int(soma_sv[b])) for a, b in chosen.reshape(-1, 2)]


def _edit(spans: list[tuple[datetime, datetime]], rng: np.random.Generator, kind: str,
          pair: tuple[int, int]) -> Edit:
    start, end = spans[int(rng.integers(len(spans)))]
    return Edit(_between(start, end, rng), kind, pair, str(rng.choice(EDITORS)))


def _between(start: datetime, end: datetime, rng: np.random.Generator) -> datetime:
    span = (end - start).total_seconds()
    return start + timedelta(seconds=float(rng.uniform(0, span)))
