"""The annotation tables of the synthetic datastack: their metadata and their rows.

Small tables are built in memory from the cells; the two big ones (synapses and the synapse
target predictions) are written by DuckDB straight from the raw parts, sorted by their
cluster key, in bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from ..schemas import get_schema_type
from ..storage.segments import arrow_schema
from . import world
from .cells import KIND_NEURON, KIND_NONE, Cells
from .synapses import FRAGMENT_BASE


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=world.GRAPH_CREATED.tzinfo)


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: str
    description: str
    created: datetime  # when the table was made; its rows are created at or after this
    reference_table: str | None = None
    user_id: str = "121"
    flat_segmentation_source: str | None = None


NUCLEI = TableSpec(
    "nucleus_detection_v0", "nucleus_detection",
    "A table of nuclei detections from a nucleus detection model. Pt is the centroid of the "
    "nucleus detection. id corresponds to the flat_segmentation_source segmentID. Only "
    "included nucleus detections of volume>25 um^3.",
    _ts("2020-09-28T22:40:40.000000"),
    flat_segmentation_source=(
        "precomputed://https://bossdb-open-data.s3.amazonaws.com/iarpa_microns/minnie/"
        "minnie65/nuclei"),
)
SYNAPSES = TableSpec(
    "synapses_pni_2", "synapse",
    "Automated synapse detection. size is the number of voxels of the synaptic cleft; "
    "pre_pt and post_pt are points on either side of the cleft, ctr_pt its center.",
    _ts("2020-11-04T06:00:00.000000"),
)
CELL_TYPES = TableSpec(
    "aibs_metamodel_celltypes_v661", "cell_type_reference",
    "Cell type predictions for every nucleus from a metamodel trained on the manually "
    "typed column cells (v661 features). Reference on nucleus_detection_v0.",
    _ts("2023-12-19T22:37:00.000000"), reference_table="nucleus_detection_v0",
)
MTYPES = TableSpec(
    "aibs_metamodel_mtypes_v661_v2", "cell_type_reference",
    "Morphological types predicted for neurons by the AIBS metamodel. Reference on "
    "nucleus_detection_v0.",
    _ts("2024-02-15T12:00:00.000000"), reference_table="nucleus_detection_v0",
)
COLUMN_TYPES = TableSpec(
    "allen_v1_column_types_slanted_ref", "cell_type_reference",
    "Manual cell types of the cells in a slanted column of V1. Reference on "
    "nucleus_detection_v0.",
    _ts("2023-03-18T14:13:00.000000"), reference_table="nucleus_detection_v0",
)
NEURON_SVM = TableSpec(
    "nucleus_ref_neuron_svm", "cell_type_reference",
    "Neuron / not-neuron classification of each nucleus detection by an SVM on nucleus "
    "features. Reference on nucleus_detection_v0.",
    _ts("2021-03-01T12:00:00.000000"), reference_table="nucleus_detection_v0",
)
SOMA_NUCLEUS_TYPES = TableSpec(
    "aibs_soma_nuc_metamodel_preds_v117", "cell_type_reference",
    "Cell type predictions from soma and nucleus features (v117 metamodel). Reference on "
    "nucleus_detection_v0.",
    _ts("2022-07-26T23:54:00.000000"), reference_table="nucleus_detection_v0",
)
PROOFREADING = TableSpec(
    "proofreading_status_and_strategy", "compartment_proofread_status_strategy",
    "Proofreading status of axons and dendrites of proofread cells, with the strategy used. "
    "valid_id is the root id when the status was assigned.",
    _ts("2023-03-01T12:00:00.000000"),
)
COREGISTRATION = TableSpec(
    "coregistration_manual_v4", "microns_func_unit_coreg",
    "Manual coregistration of functionally imaged units (session, scan_idx, unit_id) to "
    "cell bodies.",
    _ts("2024-08-01T12:00:00.000000"),
)
TARGET_PREDICTIONS = TableSpec(
    "synapse_target_predictions_ssa_v2", "reference_tag_float",
    "Predicted postsynaptic target structure of synapses (spine, shaft, soma) with the "
    "classifier's confidence. Reference on synapses_pni_2.",
    _ts("2025-05-15T12:00:00.000000"), reference_table="synapses_pni_2",
)

ALL_TABLES = (NUCLEI, SYNAPSES, CELL_TYPES, MTYPES, COLUMN_TYPES, NEURON_SVM,
              SOMA_NUCLEUS_TYPES, PROOFREADING, COREGISTRATION, TARGET_PREDICTIONS)


def rows_table(spec: TableSpec, columns: dict[str, Any]) -> pa.Table:
    """An Arrow table with the full column set of the spec's schema; columns not given are
    null, CRUD columns get their defaults."""
    schema = arrow_schema(get_schema_type(spec.schema))
    n = len(next(iter(columns.values())))
    defaults: dict[str, Callable[[], Any]] = {
        "valid": lambda: np.ones(n, dtype=bool),
    }
    arrays = []
    for field in schema:
        if field.name in columns:
            arrays.append(pa.array(columns[field.name], type=field.type))
        elif field.name in defaults:
            arrays.append(pa.array(defaults[field.name](), type=field.type))
        else:
            arrays.append(pa.nulls(n, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _created(start: datetime, n: int, rng: np.random.Generator,
             spread: timedelta = timedelta(minutes=20)) -> np.ndarray:
    offsets = np.sort(rng.integers(0, int(spread.total_seconds() * 1e6), n))
    return np.datetime64(start.replace(tzinfo=None), "us") + offsets.astype("timedelta64[us]")


def nucleus_rows(cells: Cells, soma_sv: np.ndarray, soma_root: np.ndarray,
                 rng: np.random.Generator) -> pa.Table:
    order = np.argsort(rng.random(len(cells)))
    sv = np.where(cells.kind == KIND_NONE, 0, soma_sv).astype(np.int64)
    root = np.where(cells.kind == KIND_NONE, 0, soma_root).astype(np.int64)
    created = np.empty(len(cells), dtype="datetime64[us]")
    created[order] = _created(NUCLEI.created + timedelta(seconds=1), len(cells), rng,
                              timedelta(minutes=5))
    return rows_table(NUCLEI, {
        "id": cells.nucleus_id, "created": created, "volume": cells.volume,
        "pt_position_x": cells.position[:, 0], "pt_position_y": cells.position[:, 1],
        "pt_position_z": cells.position[:, 2], "pt_supervoxel_id": sv, "pt_root_id": root,
    })


def reference_rows(spec: TableSpec, targets: np.ndarray, classification: np.ndarray,
                   cell_type: np.ndarray, rng: np.random.Generator) -> pa.Table:
    n = len(targets)
    order = rng.permutation(n)
    return rows_table(spec, {
        "id": np.arange(1, n + 1, dtype=np.int64),
        "created": _created(spec.created + timedelta(minutes=1), n, rng),
        "target_id": targets[order], "classification_system": classification[order],
        "cell_type": cell_type[order],
    })


def cell_type_rows(cells: Cells, rng: np.random.Generator) -> pa.Table:
    typed = np.flatnonzero(cells.cell_type != None)  # noqa: E711 (object array)
    return reference_rows(CELL_TYPES, cells.nucleus_id[typed], cells.classification[typed],
                          cells.cell_type[typed], rng)


def soma_nucleus_type_rows(cells: Cells, rng: np.random.Generator) -> pa.Table:
    typed = np.flatnonzero(cells.cell_type != None)  # noqa: E711
    systems = np.where(cells.classification[typed] == "nonneuron", "aibs_nonneuronal",
                       "aibs_neuronal").astype(object)
    return reference_rows(SOMA_NUCLEUS_TYPES, cells.nucleus_id[typed], systems,
                          cells.cell_type[typed], rng)


def mtype_rows(cells: Cells, rng: np.random.Generator) -> pa.Table:
    neurons = cells.neurons
    mtypes = np.array([rng.choice(world.MTYPES[t]) for t in cells.cell_type[neurons]],
                      dtype=object)
    return reference_rows(MTYPES, cells.nucleus_id[neurons], cells.classification[neurons],
                          mtypes, rng)


def column_rows(cells: Cells, rng: np.random.Generator) -> pa.Table:
    """Manual types of the cells nearest a column through the middle of the volume."""
    typed = np.flatnonzero(cells.cell_type != None)  # noqa: E711
    n = min(len(typed), max(30, round(1000 * len(cells) / world.REAL_NUCLEI)))
    center = (world.BOUNDS_MIN[0] + world.BOUNDS_MAX[0]) / 2
    chosen = typed[np.argsort(np.abs(cells.position[typed, 0] - center))[:n]]
    coarse = {"excitatory_neuron": "aibs_coarse_excitatory",
              "inhibitory_neuron": "aibs_coarse_inhibitory", "nonneuron": "aibs_coarse_nonneuronal"}
    systems = np.array([coarse[c] for c in cells.classification[chosen]], dtype=object)
    return reference_rows(COLUMN_TYPES, cells.nucleus_id[chosen], systems,
                          cells.cell_type[chosen], rng)


def neuron_svm_rows(cells: Cells, rng: np.random.Generator) -> pa.Table:
    labels = np.where(cells.kind == KIND_NEURON, "neuron", "not-neuron").astype(object)
    systems = np.full(len(cells), "is_neuron", dtype=object)
    return reference_rows(NEURON_SVM, cells.nucleus_id, systems, labels, rng)


def proofreading_rows(cells: Cells, soma_sv: np.ndarray, created: np.ndarray,
                      valid_ids: np.ndarray, roots_at_start: np.ndarray,
                      rng: np.random.Generator) -> pa.Table:
    """One row per proofread cell, created when its proofreading was done; ``valid_ids``
    are the cells' root ids at that time."""
    cells_idx = np.flatnonzero(cells.proofread_order >= 0)
    cells_idx = cells_idx[np.argsort(cells.proofread_order[cells_idx])]
    n = len(cells_idx)
    names, counts = zip(*world.AXON_STRATEGIES.items(), strict=True)
    p = np.array(counts, dtype=float) / sum(counts)
    has_axon = rng.random(n) >= world.AXON_NONE_FRACTION
    axon = np.where(has_axon, rng.choice(names, n, p=p), "none").astype(object)
    dendrite = rng.choice(list(world.DENDRITE_STRATEGIES), n,
                          p=list(world.DENDRITE_STRATEGIES.values())).astype(object)
    pos = cells.position[cells_idx]
    return rows_table(PROOFREADING, {
        "id": np.arange(1, n + 1, dtype=np.int64), "created": created,
        "pt_position_x": pos[:, 0], "pt_position_y": pos[:, 1], "pt_position_z": pos[:, 2],
        "valid_id": valid_ids, "status_dendrite": np.ones(n, dtype=bool),
        "status_axon": has_axon, "strategy_dendrite": dendrite, "strategy_axon": axon,
        "pt_supervoxel_id": soma_sv[cells_idx].astype(np.int64),
        "pt_root_id": roots_at_start.astype(np.int64),
    })


def coregistration_rows(cells: Cells, soma_sv: np.ndarray, soma_root: np.ndarray,
                        rng: np.random.Generator) -> pa.Table:
    neurons = cells.neurons
    n = min(len(neurons), max(20, round(0.015 * len(neurons))))
    chosen = np.sort(rng.choice(neurons, n, replace=False))
    pos = cells.position[chosen]
    return rows_table(COREGISTRATION, {
        "id": np.arange(1, n + 1, dtype=np.int64),
        "created": _created(COREGISTRATION.created + timedelta(minutes=1), n, rng),
        "pt_position_x": pos[:, 0], "pt_position_y": pos[:, 1], "pt_position_z": pos[:, 2],
        "session": rng.integers(4, 10, n), "scan_idx": rng.integers(1, 12, n),
        "unit_id": rng.integers(1, 9000, n),
        "pt_supervoxel_id": soma_sv[chosen].astype(np.int64),
        "pt_root_id": soma_root[chosen].astype(np.int64),
    })


#: Each synapse endpoint's root (side 0 pre, 1 post) for one range of supervoxels: ``{run}``
#: is the range's condition on ``sv``, bound twice (both sides of the join, so that each
#: reads only its part: ``sv_root``'s Parquet parts are in ascending supervoxels).
ENDPOINT_ROOTS = """
    SELECT e.eid, e.side, e.sv, s.root
    FROM (SELECT eid, side, sv FROM endpoint_sv WHERE side < 2 AND {run}) e
    JOIN (SELECT sv, root FROM sv_root WHERE {run}) s ON s.sv = e.sv"""

#: One row per synapse with its supervoxel and root at both ends, for one range of synapse
#: ids (``{run}``: its condition on ``eid``).
SYNAPSE_ENDPOINTS = """
    SELECT eid,
           max(sv) FILTER (WHERE side = 0) AS pre_sv,
           max(root) FILTER (WHERE side = 0) AS pre_root,
           max(sv) FILTER (WHERE side = 1) AS post_sv,
           max(root) FILTER (WHERE side = 1) AS post_root
    FROM endpoint_root WHERE {run} GROUP BY eid"""


def synapse_select() -> str:
    """SELECT of the final synapse rows (root ids when the graph starts), in column order,
    from the raw parts (``$parts``) and the files of :data:`SYNAPSE_ENDPOINTS`
    (``$endpoints``)."""
    names = arrow_schema(get_schema_type(SYNAPSES.schema)).names
    expressions = {
        "id": "r.id", "created": "r.created", "deleted": "NULL::TIMESTAMPTZ",
        "superceded_id": "NULL::BIGINT", "valid": "TRUE", "size": "r.size",
        "pre_pt_supervoxel_id": "x.pre_sv::BIGINT", "pre_pt_root_id": "x.pre_root",
        "post_pt_supervoxel_id": "x.post_sv::BIGINT", "post_pt_root_id": "x.post_root",
    }
    for point in ("pre", "post", "ctr"):
        for axis in "xyz":
            expressions[f"{point}_pt_position_{axis}"] = f"r.{point}_{axis}"
    select = ", ".join(f'{expressions[n]} AS "{n}"' for n in names)
    return f"""
        SELECT {select}
        FROM read_parquet($parts) r JOIN read_parquet($endpoints) x ON x.eid = r.id
    """


def prediction_select() -> str:
    """Target predictions for a third of the synapses onto neurons."""
    names = arrow_schema(get_schema_type(TARGET_PREDICTIONS.schema)).names
    created = TARGET_PREDICTIONS.created + timedelta(minutes=1)
    expressions = {
        "id": "row_number() OVER (ORDER BY r.id)",
        "created": f"TIMESTAMPTZ '{created.isoformat()}' "
                   "+ to_microseconds((hash(r.id) % 3600000000)::BIGINT)",
        "deleted": "NULL::TIMESTAMPTZ", "superceded_id": "NULL::BIGINT", "valid": "TRUE",
        "target_id": "r.id",
        "tag": "CASE WHEN hash(r.id, 1) % 10 < 6 THEN 'spine' "
               "WHEN hash(r.id, 1) % 10 < 9 THEN 'shaft' ELSE 'soma' END",
        "value": "0.5 + (hash(r.id, 2) % 500000) / 1000000.0",
    }
    select = ", ".join(f'{expressions[n]} AS "{n}"' for n in names)
    return (f"SELECT {select} FROM read_parquet($parts) r "
            f"WHERE r.post_cell < {FRAGMENT_BASE} AND hash(r.id, 3) % 3 = 0")
