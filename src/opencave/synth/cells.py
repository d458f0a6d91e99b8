"""Cells of the synthetic volume: one per nucleus detection, with a position, a kind
(neuron, glia, or a detection outside the segmentation), a cell type that matches its
cortical depth, and heavy-tailed synaptic in/out weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import world

KIND_NONE, KIND_NEURON, KIND_GLIA = 0, 1, 2


@dataclass
class Cells:
    nucleus_id: np.ndarray  # int64, unique, stable across versions
    position: np.ndarray  # (n, 3) int64 voxels at 4×4×40 nm
    kind: np.ndarray  # int8: KIND_*
    volume: np.ndarray  # float64, µm³
    classification: np.ndarray  # object: excitatory_neuron / inhibitory_neuron / nonneuron
    cell_type: np.ndarray  # object: 23P, BC, astrocyte, … (None when unclassified)
    in_weight: np.ndarray  # float64: relative number of input synapses (neurons)
    out_weight: np.ndarray  # float64: relative number of output synapses (neurons)
    proofread_order: np.ndarray  # int64: rank in which axons get proofread, -1 = never

    def __len__(self) -> int:
        return len(self.nucleus_id)

    @property
    def neurons(self) -> np.ndarray:
        return np.flatnonzero(self.kind == KIND_NEURON)

    @property
    def segmented(self) -> np.ndarray:
        """Cells that have a segment (a root id); the others sit outside the segmentation."""
        return np.flatnonzero(self.kind != KIND_NONE)


def n_nuclei(scale: float) -> int:
    return max(400, round(world.REAL_NUCLEI * scale))


def proofread_counts(scale: float) -> tuple[int, int]:
    """Proofread axons at v1181 and at v1718."""
    final = max(48, round(world.PROOFREAD_V1718 * scale))
    return round(final * world.PROOFREAD_V1181 / world.PROOFREAD_V1718), final


def make_cells(scale: float, rng: np.random.Generator) -> Cells:
    n = n_nuclei(scale)
    kinds = rng.choice(
        [KIND_NEURON, KIND_GLIA, KIND_NONE], size=n,
        p=[world.NUCLEUS_KINDS["neuron"], world.NUCLEUS_KINDS["glia"],
           world.NUCLEUS_KINDS["none"]],
    ).astype(np.int8)
    classification, cell_type = _cell_types(kinds, rng)
    position = _positions(cell_type, rng)
    volume = np.where(
        kinds == KIND_NEURON, rng.lognormal(np.log(280.0), 0.25, n),
        np.where(kinds == KIND_GLIA, rng.lognormal(np.log(120.0), 0.3, n),
                 rng.uniform(25.0, 90.0, n)),
    )
    is_neuron = kinds == KIND_NEURON
    in_weight = np.where(is_neuron, rng.lognormal(0.0, world.DEGREE_SIGMA, n), 0.0)
    out_weight = np.where(is_neuron, rng.lognormal(0.0, world.DEGREE_SIGMA, n), 0.0)
    order = np.full(n, -1, dtype=np.int64)
    _, final = proofread_counts(scale)
    neurons = np.flatnonzero(is_neuron)
    with_none = min(len(neurons), round(final / (1 - world.AXON_NONE_FRACTION)))
    chosen = rng.choice(neurons, size=with_none, replace=False)
    order[chosen] = np.arange(with_none)
    out_weight[chosen] *= world.PROOFREAD_OUTPUT_BOOST
    ids = rng.choice(np.arange(1_000, 1_000 + max(900_000, 7 * n)), size=n, replace=False)
    return Cells(
        nucleus_id=np.sort(ids).astype(np.int64)[rng.permutation(n)],
        position=position, kind=kinds, volume=volume, classification=classification,
        cell_type=cell_type, in_weight=in_weight, out_weight=out_weight, proofread_order=order,
    )


def _weighted(table: dict[str, int]) -> tuple[list[str], np.ndarray]:
    names = list(table)
    counts = np.array([table[k] for k in names], dtype=float)
    return names, counts / counts.sum()


def _cell_types(kinds: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = len(kinds)
    classification = np.full(n, None, dtype=object)
    cell_type = np.full(n, None, dtype=object)
    exc, exc_p = _weighted(world.EXCITATORY_TYPES)
    inh, inh_p = _weighted(world.INHIBITORY_TYPES)
    glia, glia_p = _weighted(world.GLIA_TYPES)
    n_exc = sum(world.EXCITATORY_TYPES.values())
    n_inh = sum(world.INHIBITORY_TYPES.values())
    neurons = np.flatnonzero(kinds == KIND_NEURON)
    excitatory = rng.random(len(neurons)) < n_exc / (n_exc + n_inh)
    exc_cells, inh_cells = neurons[excitatory], neurons[~excitatory]
    classification[exc_cells] = "excitatory_neuron"
    cell_type[exc_cells] = rng.choice(exc, size=len(exc_cells), p=exc_p)
    classification[inh_cells] = "inhibitory_neuron"
    cell_type[inh_cells] = rng.choice(inh, size=len(inh_cells), p=inh_p)
    glia_cells = np.flatnonzero(kinds == KIND_GLIA)
    classification[glia_cells] = "nonneuron"
    cell_type[glia_cells] = rng.choice(glia, size=len(glia_cells), p=glia_p)
    return classification, cell_type


def _positions(cell_type: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform in x and z; depth (y) within the layer band of excitatory types."""
    n = len(cell_type)
    lo = np.array(world.BOUNDS_MIN, dtype=float)
    hi = np.array(world.BOUNDS_MAX, dtype=float)
    margin = (hi - lo) * 0.02
    depth = rng.uniform(0.02, 0.98, n)
    for name, (top, bottom) in world.LAYER_BANDS.items():
        members = cell_type == name
        depth[members] = rng.uniform(top, bottom, members.sum())
    xz = rng.uniform(0, 1, (n, 2))
    position = np.empty((n, 3))
    position[:, 0] = lo[0] + margin[0] + xz[:, 0] * (hi[0] - lo[0] - 2 * margin[0])
    position[:, 1] = lo[1] + depth * (hi[1] - lo[1])
    position[:, 2] = lo[2] + margin[2] + xz[:, 1] * (hi[2] - lo[2] - 2 * margin[2])
    return np.round(position).astype(np.int64)
