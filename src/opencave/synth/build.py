"""Build the synthetic ``minnie65_public`` datastack into a data directory.

Steps (each with a progress bar): cells → raw synapses (streamed in parts) → supervoxels and
edges (DuckDB) → segmentation graph with its false merges → the proofreading edits between
versions → each synapse's supervoxels and roots (after which the DuckDB work database goes)
→ annotation tables as sorted segments → the twelve public versions, materialized
incrementally. Deterministic for a given seed. Interrupting leaves the half-built directory
marked incomplete; building it again with the same size and seed resumes after the last
step that finished.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..annotation import AnnotationTable
from ..errors import Conflict
from ..info import AlignedVolume, Datastack
from ..instance import OpenCave
from ..progress import Steps, steps
from ..segmentation import SegmentationGraph
from ..segmentation.locate import SupervoxelLocator
from ..settings import Settings
from ..storage.files import DataDir, sql_string, unique_name
from ..storage.segments import (
    Segment,
    copy_sorted_segment,
    create_table_by_runs,
    max_id,
    run_condition,
    serving_layout,
    sort_runs,
    write_table_segment,
)
from ..timestamps import to_micros
from . import edits as edit_plan
from . import supervoxels, synapses, tables, world
from .cells import Cells, make_cells, proofread_counts
from .checkpoint import Checkpoint
from .geometry import GEOMETRY, LAYOUT

_INCOMPLETE = ".synth-incomplete"
#: Up to this size the generator also writes its segmentation ground truth (every edge and
#: every edit) under ``truth/``, for independent oracles.
TRUTH_MAX_SYNAPSES = 10_000_000
#: In the work directory: the DuckDB database of the steps before the tables, and each
#: synapse's supervoxels and roots (what the tables keep of it).
_WORK_DATABASE = "work.duckdb"
_ENDPOINTS = "synapse_endpoints"


@dataclass
class BuildReport:
    synapses: int
    cells: int
    supervoxels: int
    edits: int
    versions: list[int] = field(default_factory=list)


def build(out: Path, *, synapses_total: int = 1_000_000, seed: int = 0,
          progress: bool = True, memory_limit: str = "4GB") -> BuildReport:
    """Build into ``out``; an interrupted build of the same size and seed there resumes
    after the last step it finished (:mod:`.checkpoint`), anything else there is replaced."""
    out = Path(out)
    if is_complete(out):
        raise Conflict(f"{out} already holds a datastack; choose an empty directory")
    checkpoint = Checkpoint.resume(out, synapses_total, seed)
    if checkpoint is None:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        (out / _INCOMPLETE).touch()
        checkpoint = Checkpoint.start(out, synapses_total, seed)
    elif progress:
        print(f"resuming the build in {out} after its step {checkpoint.last or '(none)'!r}")
    cave = OpenCave(Settings(out, query_memory_limit=memory_limit))
    try:
        with steps(progress) as bar:
            report = _build(cave, checkpoint, memory_limit, bar)
            report.versions = _materialize(cave, checkpoint, bar)
        if checkpoint.resumed:  # what an interrupted step wrote that no version uses;
            with contextlib.suppress(Conflict):  # left to `opencave gc` if the dir is in use
                cave.collect_garbage()
    finally:
        cave.close()
    checkpoint.remove()
    (out / _INCOMPLETE).unlink()
    return report


def is_complete(out: Path) -> bool:
    return DataDir(out).exists() and not (Path(out) / _INCOMPLETE).exists()


def _work_database(work: Path, memory_limit: str) -> duckdb.DuckDBPyConnection:
    work.mkdir(exist_ok=True)
    con = duckdb.connect(str(work / _WORK_DATABASE))
    con.execute("SET memory_limit = ?", [memory_limit])
    con.execute("SET temp_directory = ?", [str(work / "spill")])
    con.execute("SET TimeZone = 'UTC'")
    # Every order that matters is asked for (ORDER BY); not keeping the others lets DuckDB
    # stream and spill more freely.
    con.execute("SET preserve_insertion_order = false")
    return con


def _build(cave: OpenCave, checkpoint: Checkpoint, memory_limit: str,
           bar: Steps) -> BuildReport:
    """Every step up to the annotation tables, each skipped if an earlier run finished it
    (what it made is then read back: its values from the checkpoint, its files in place)."""
    total, seed = checkpoint.synapses, checkpoint.seed
    work = cave.data.root / ".synth-work"
    if checkpoint.finished("tables"):
        DataDir.remove([work])  # if it was stopped before removing it
        return BuildReport(total, **checkpoint.values["report"])
    cells = make_cells(total / world.REAL_SYNAPSES, np.random.default_rng([seed, 1]))
    if not checkpoint.finished("synapse endpoints"):
        con = _work_database(work, memory_limit)
        try:
            _segmentation_steps(cave, con, work, checkpoint, cells, bar)
        finally:
            con.close()
    # The tables need the raw parts and each synapse's endpoints, nothing else of the work
    # database: it goes (with the supervoxels' roots) before the largest sort begins.
    DataDir.remove([work / _WORK_DATABASE, work / f"{_WORK_DATABASE}.wal", work / "sv_root"])
    graph = _graph(cave)
    con = _work_database(work, memory_limit)
    try:
        DataDir.remove([cave.data.tables])
        _write_tables(cave, con, graph, cells, checkpoint.kept("soma_sv"),
                      _raw_parts(work, checkpoint), work / _ENDPOINTS, total, seed, bar)
        report = {"cells": len(cells), "supervoxels": graph.base.n_sv,
                  "edits": len(checkpoint.kept("plan").edits)}
    finally:
        con.close()  # frees the work database's buffers before the versions
    checkpoint.finish("tables", report=report)
    shutil.rmtree(work)
    return BuildReport(total, **report)


def _segmentation_steps(cave: OpenCave, con: duckdb.DuckDBPyConnection, work: Path,
                        checkpoint: Checkpoint, cells: Cells, bar: Steps) -> None:
    """From the raw synapses to each synapse's supervoxels and roots (``synapse
    endpoints``): every step that needs the work database."""
    # A step that an earlier run began but did not finish starts again from nothing.
    if not checkpoint.finished("synapses"):
        DataDir.remove([work / "raw"])
        _register_datastack(cave)
        parts = _raw_synapses(cells, checkpoint.synapses, checkpoint.seed, work / "raw", bar)
        checkpoint.finish("synapses", parts=[Path(p).name for p in parts])
    parts = _raw_parts(work, checkpoint)
    if not checkpoint.finished("supervoxels"):
        _supervoxels(con, checkpoint, cells, parts, work, bar)
    plan = checkpoint.kept("plan")
    if not checkpoint.finished("segmentation"):
        DataDir.remove([cave.data.segmentation])
        _segmentation(cave, con, plan, bar)
        checkpoint.finish("segmentation")
    graph = _graph(cave)
    if not checkpoint.finished("anchors"):
        DataDir.remove([cave.data.root / "truth"])
        _write_anchors(con, graph, bar)
        if checkpoint.synapses <= TRUTH_MAX_SYNAPSES:
            _write_truth(cave.data.root / "truth", con, plan)
        checkpoint.finish("anchors")
    if not checkpoint.finished("edits"):
        _apply_edits(graph, plan, bar)
        checkpoint.finish("edits")
    if not checkpoint.finished("supervoxel roots"):
        DataDir.remove([work / "sv_root"])
        _sv_roots(con, graph, work / "sv_root", bar)
        checkpoint.finish("supervoxel roots")
    _synapse_endpoints(con, work / "sv_root", work / _ENDPOINTS, bar)
    checkpoint.finish("synapse endpoints")


def _raw_parts(work: Path, checkpoint: Checkpoint) -> list[str]:
    return [str(work / "raw" / name) for name in checkpoint.values["parts"]]


def _graph(cave: OpenCave) -> SegmentationGraph:
    return SegmentationGraph.open(cave.live, _graph_directory(cave), world.SEGMENTATION_TABLE)


def _supervoxels(con: duckdb.DuckDBPyConnection, checkpoint: Checkpoint, cells: Cells,
                 parts: list[str], work: Path, bar: Steps) -> None:
    """Supervoxels and edges in the work database; the soma supervoxels and the edit plan
    kept in the checkpoint (a later step drops the table they are computed from)."""
    task = bar.task("supervoxels and edges", 1)
    supervoxels.assign(con, parts, cells, work / "endpoints.duckdb")
    soma_sv = supervoxels.soma_supervoxels(con, len(cells))
    checkpoint.keep("soma_sv", soma_sv)
    checkpoint.keep("plan", edit_plan.plan(con, cells, soma_sv,
                                           np.random.default_rng([checkpoint.seed, 2])))
    bar.done(task)
    checkpoint.finish("supervoxels")


def _graph_directory(cave: OpenCave) -> Path:
    return cave.data.segmentation / world.SEGMENTATION_TABLE


def _register_datastack(cave: OpenCave) -> None:
    volume = cave.info.add_aligned_volume(AlignedVolume(
        name=world.ALIGNED_VOLUME, description="MICrONS minnie65 (synthetic)",
        display_name="minnie65", image_source="precomputed://synthetic/minnie65/em",
    ))
    cave.info.add_datastack(Datastack(
        name=world.DATASTACK, aligned_volume=volume,
        segmentation_table=world.SEGMENTATION_TABLE, description=world.DESCRIPTION,
        synapse_table=tables.SYNAPSES.name, soma_table=tables.NUCLEI.name,
        viewer_site="https://neuroglancer.neuvue.io", viewer_resolution=world.VOXEL_RESOLUTION,
        skeleton_source="precomputed://synthetic/minnie65/skeletons",
    ))


def _raw_synapses(cells: Cells, total: int, seed: int, out: Path, bar: Steps) -> list[str]:
    task = bar.task("synapses", total)
    parts = []
    for path, rows in synapses.generate(cells, total, seed, out):
        parts.append(str(path))
        bar.advance(task, rows)
    return parts


def _segmentation(cave: OpenCave, con: duckdb.DuckDBPyConnection, plan: edit_plan.EditPlan,
                  bar: Steps) -> None:
    """The graph, streamed from the work database into the builder (its own progress bars)."""
    SegmentationGraph.create_streamed(
        cave.live, _graph_directory(cave),
        table_id=world.SEGMENTATION_TABLE, layout=LAYOUT, geometry=GEOMETRY,
        supervoxels=supervoxels.supervoxel_batches(con),
        edges=supervoxels.edge_batches(con, plan.initial_edges),
        timestamp=world.GRAPH_CREATED, progress=bar,
    )


def _write_anchors(con: duckdb.DuckDBPyConnection, graph: SegmentationGraph,
                   bar: Steps) -> None:
    task = bar.task("anchors", graph.base.n_sv)
    scale = np.asarray(world.VOXEL_RESOLUTION) / np.asarray(world.GRAPH_RESOLUTION)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for ids, positions in supervoxels.anchor_batches(con):
            yield ids, np.round(positions * scale)
            bar.advance(task, len(ids))

    SupervoxelLocator.write_batches(graph.base.directory, batches(), graph.layout,
                                    graph.geometry)


def _apply_edits(graph: SegmentationGraph, plan: edit_plan.EditPlan, bar: Steps) -> None:
    task = bar.task("proofreading edits", len(plan.edits))
    for edit in plan.edits:
        a, b = edit.supervoxels
        if edit.kind == "merge":
            graph.merge(a, b, user_id=edit.user_id, timestamp=edit.timestamp)
        else:
            graph.remove_edges([(a, b)], user_id=edit.user_id, timestamp=edit.timestamp)
        bar.advance(task)


def _write_truth(directory: Path, con: duckdb.DuckDBPyConnection,
                 plan: edit_plan.EditPlan) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    extra = plan.initial_edges
    con.register("initial_edges", pa.table({"a": extra[:, 0], "b": extra[:, 1]}))
    target = sql_string(directory / "edges.parquet")
    try:
        con.execute(
            f"COPY (SELECT a::UBIGINT AS a, b::UBIGINT AS b FROM ({supervoxels.EDGES}) "
            f"UNION ALL SELECT a, b FROM initial_edges) TO '{target}' (FORMAT parquet)")
    finally:
        con.unregister("initial_edges")
    pq.write_table(pa.table({
        "timestamp": pa.array([e.timestamp for e in plan.edits], pa.timestamp("us", "UTC")),
        "kind": [e.kind for e in plan.edits],
        "a": pa.array([e.supervoxels[0] for e in plan.edits], pa.uint64()),
        "b": pa.array([e.supervoxels[1] for e in plan.edits], pa.uint64()),
    }), directory / "edits.parquet")


def _sv_roots(con: duckdb.DuckDBPyConnection, graph: SegmentationGraph, out: Path,
              bar: Steps, batch: int = 1 << 22) -> None:
    """``sv_root``: every supervoxel's root when the graph starts, computed in batches of
    supervoxels (ascending, so the graph's pages are read in order) into Parquet parts."""
    out.mkdir(parents=True)
    n = graph.base.n_sv
    task = bar.task("supervoxel roots", n)
    for part, lo in enumerate(range(0, n, batch)):
        svs = graph.base.node_ids.at(np.arange(lo, min(n, lo + batch)))
        roots = _roots(graph, svs, world.GRAPH_CREATED)
        pq.write_table(pa.table({"sv": svs.astype(np.int64), "root": roots.astype(np.int64)}),
                       out / f"part-{part:06d}.parquet")
        graph.base.drop_pages()
        bar.advance(task, len(svs))


def _synapse_endpoints(con: duckdb.DuckDBPyConnection, sv_roots: Path, out: Path,
                       bar: Steps) -> None:
    """Each synapse's supervoxel and root at both ends into Parquet parts under ``out``.

    A range at a time, so that nothing spills (at 3.4×10^8 synapses the one join and
    pivot spilled more than the disk had): the endpoints' roots by ranges of supervoxels
    into ``endpoint_root``, then the pivot to one row per synapse by ranges of ids."""
    # What only the earlier steps read goes first, so that the endpoints' roots reuse its
    # blocks instead of growing the work database (this step is its disk peak).
    con.execute("DROP TABLE IF EXISTS pieces")
    for axis in "xyz":
        con.execute(f"ALTER TABLE endpoint_sv DROP COLUMN IF EXISTS {axis}")
    con.execute("CHECKPOINT")
    con.execute("CREATE OR REPLACE VIEW sv_root AS SELECT * FROM "
                f"read_parquet('{sql_string(sv_roots / '*.parquet')}')")
    DataDir.remove([out])  # left by a run stopped in this step
    out.mkdir()
    rows = con.execute("SELECT count(*) FROM endpoint_sv").fetchall()[0][0]
    by_supervoxel = sort_runs(con, "endpoint_sv", "sv", rows)
    by_synapse = sort_runs(con, "endpoint_sv", "eid", rows)
    task = bar.task("synapse endpoints", len(by_supervoxel) + len(by_synapse))
    create_table_by_runs(con, "endpoint_root", tables.ENDPOINT_ROOTS, "sv", by_supervoxel,
                         conditions=2, after_each=lambda: bar.advance(task))
    for index, run in enumerate(by_synapse):
        where, bounds = run_condition(run, "eid")
        target = sql_string(out / f"part-{index:06d}.parquet")
        con.execute(f"COPY ({tables.SYNAPSE_ENDPOINTS.format(run=where)}) TO '{target}' "
                    "(FORMAT parquet, COMPRESSION zstd)", bounds)
        bar.advance(task)
    con.execute("DROP TABLE endpoint_root")


def _write_tables(cave: OpenCave, con: duckdb.DuckDBPyConnection, graph: SegmentationGraph,
                  cells: Cells, soma_sv: np.ndarray, parts: list[str], endpoints: Path,
                  synapses_total: int, seed: int, bar: Steps) -> None:
    task = bar.task("annotation tables", len(tables.ALL_TABLES))
    start = world.GRAPH_CREATED
    soma_root = _roots(graph, soma_sv, start)
    rng = np.random.default_rng([seed, 3])
    in_memory = {
        tables.NUCLEI: tables.nucleus_rows(cells, soma_sv, soma_root, rng),
        tables.CELL_TYPES: tables.cell_type_rows(cells, rng),
        tables.MTYPES: tables.mtype_rows(cells, rng),
        tables.COLUMN_TYPES: tables.column_rows(cells, rng),
        tables.NEURON_SVM: tables.neuron_svm_rows(cells, rng),
        tables.SOMA_NUCLEUS_TYPES: tables.soma_nucleus_type_rows(cells, rng),
        tables.PROOFREADING: _proofreading(graph, cells, soma_sv, soma_root, rng),
        tables.COREGISTRATION: tables.coregistration_rows(cells, soma_sv, soma_root, rng),
    }
    for spec in tables.ALL_TABLES:
        table = _create_table(cave, spec)
        path = cave.data.table_dir(table.aligned_volume, table.table_name) / unique_name(
            "bulk", ".parquet")
        if spec in in_memory:
            order, keys = serving_layout(table.serving_keys, in_memory[spec].num_rows)
            rows = write_table_segment(path, in_memory[spec], order, keys,
                                       memory_limit=cave.settings.query_memory_limit)
        else:
            if spec is tables.SYNAPSES:
                select = tables.synapse_select()
                params = {"parts": parts, "endpoints": str(endpoints / "*.parquet")}
            else:
                select, params = tables.prediction_select(), {"parts": parts}
            # At most one row a synapse.
            order, keys = serving_layout(table.serving_keys, synapses_total)
            rows = copy_sorted_segment(con, path, select, params, order, keys,
                                       rows=synapses_total)
        cave.tables.add_segment(table, Segment(cave.data.relative(path), rows, order,
                                               to_micros(start)),
                                max_id(path), when=spec.created)
        bar.advance(task)


def _create_table(cave: OpenCave, spec: tables.TableSpec) -> AnnotationTable:
    return cave.tables.create(
        world.ALIGNED_VOLUME, spec.name, spec.schema, user_id=spec.user_id,
        voxel_resolution=world.VOXEL_RESOLUTION, description=spec.description,
        reference_table=spec.reference_table, read_permission="PUBLIC",
        write_permission="PRIVATE", flat_segmentation_source=spec.flat_segmentation_source,
        pcg_table_name=world.SEGMENTATION_TABLE, created=spec.created,
    )


def _proofreading(graph: SegmentationGraph, cells: Cells, soma_sv: np.ndarray,
                  soma_root: np.ndarray, rng: np.random.Generator) -> pa.Table:
    """Rows appear over time (1,436 proofread axons by v1181, 2,275 by v1718, scaled);
    each records the cell's root id when its status was assigned."""
    idx = np.flatnonzero(cells.proofread_order >= 0)
    idx = idx[np.argsort(cells.proofread_order[idx])]
    n_1181, _ = proofread_counts(len(cells) / world.REAL_NUCLEI)
    first_share = min(1.0, n_1181 / max(1, len(idx) * (1 - world.AXON_NONE_FRACTION)))
    t_start, t_1181, t_1718 = (tables.PROOFREADING.created, dict(world.VERSIONS)[1181],
                               dict(world.VERSIONS)[1718])
    created = []
    for rank in range(len(idx)):
        frac = rank / max(1, len(idx))
        if frac < first_share:
            t = t_start + (t_1181 - t_start) * (0.02 + 0.96 * frac / first_share)
        else:
            t = t_1181 + (t_1718 - t_1181) * (0.02 + 0.96 * (frac - first_share)
                                               / max(1e-9, 1 - first_share))
        created.append(t)
    valid_ids = np.array([_roots(graph, soma_sv[[c]], t)[0] for c, t in zip(idx, created,
                                                                             strict=True)])
    created_us = np.array([np.datetime64(t.replace(tzinfo=None), "us") for t in created])
    return tables.proofreading_rows(cells, soma_sv, created_us, valid_ids.astype(np.int64),
                                    soma_root[idx], rng)


def _roots(graph: SegmentationGraph, svs: np.ndarray, when: datetime) -> np.ndarray:
    return graph.get_roots(np.asarray(svs, dtype=np.uint64), timestamp=when)


def _materialize(cave: OpenCave, checkpoint: Checkpoint, bar: Steps) -> list[int]:
    task = bar.task("versions", len(world.VERSIONS))
    materializer = cave.materializer()
    for number, timestamp in world.VERSIONS:
        step = f"version {number}"
        if not checkpoint.finished(step):
            materializer.materialize(world.DATASTACK, timestamp, version=number)
            checkpoint.finish(step)
        bar.advance(task)
    return [number for number, _ in world.VERSIONS]
