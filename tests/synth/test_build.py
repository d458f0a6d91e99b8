"""The synthetic datastack: deterministic, calibrated on minnie65, with proofreading that
changes root ids between versions while nucleus ids stay."""

from __future__ import annotations

import importlib
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from opencave.instance import OpenCave
from opencave.materialize.materializer import Materializer
from opencave.segmentation import SegmentationGraph
from opencave.segmentation.locate import SupervoxelLocator
from opencave.storage import segments
from opencave.storage.segments import serving_path
from opencave.synth import build, is_complete, supervoxels, world
from opencave.synth.cells import proofread_counts
from opencave.synth.geometry import GEOMETRY, LAYOUT
from tests.conftest import TEST_SYNAPSES

DS = "minnie65_public"


def service(cave: OpenCave):
    return cave.materialization()


def rows(cave: OpenCave, version: int, table: str, body: dict | None = None):
    return service(cave).query_table(DS, version, table, body or {}).stream.read_all().to_pandas()


def bulk(cave: OpenCave, table: str):
    meta = cave.tables.get(world.ALIGNED_VOLUME, table)
    (segment,) = cave.tables.segments(meta)
    return pq.read_table(cave.data.absolute(segment.path))


def test_same_seed_same_datastack_other_seed_other_one(tmp_path: Path, monkeypatch):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        # b computes its supervoxel anchors in many small batches, and its pieces, synapse
        # endpoints and sorted tables a small range at a time: the same datastack
        monkeypatch.setattr(supervoxels, "ANCHOR_BATCH", 997 if name == "b" else 1 << 24)
        monkeypatch.setattr(segments, "SORT_RUN_ROWS", 3_000 if name == "b" else 10**9)
        build(tmp_path / name, synapses_total=12_000, seed=seed, progress=False)
    a, b, c = (OpenCave(tmp_path / n) for n in "abc")
    try:
        anchors = [cave.data.segmentation / world.SEGMENTATION_TABLE / "anchors" for cave in (a, b)]
        for name in ("run_start.npy", "run_pos.npy", "offsets.npy"):
            assert np.array_equal(np.load(anchors[0] / name), np.load(anchors[1] / name))
        for table in a.tables.names(world.ALIGNED_VOLUME):
            # (a file written a range at a time does not mark its columns NOT NULL)
            assert bulk(a, table).cast(bulk(b, table).schema).equals(bulk(b, table)), table
        assert rows(a, 1718, "synapses_pni_2").equals(rows(b, 1718, "synapses_pni_2"))
        assert not bulk(a, "synapses_pni_2").equals(bulk(c, "synapses_pni_2"))
    finally:
        for cave in (a, b, c):
            cave.close()


def test_each_supervoxel_is_anchored_at_the_mean_of_its_points(cave):
    """Oracle: pandas over the synapse and nucleus tables' points, grouped by supervoxel.
    Supervoxels without a point sit at their piece's center, inside their own chunk."""
    synapses = bulk(cave, "synapses_pni_2").to_pandas()
    nuclei = rows(cave, 1718, "nucleus_detection_v0").query("pt_supervoxel_id != 0")
    points = pd.concat([pd.DataFrame({
        "sv": frame[f"{point}_supervoxel_id"],
        **{axis: frame[f"{point}_position_{axis}"] for axis in "xyz"}})
        for frame, point in ((synapses, "pre_pt"), (synapses, "post_pt"), (nuclei, "pt"))])
    means = points.groupby("sv")[["x", "y", "z"]].mean()
    scale = np.asarray(world.VOXEL_RESOLUTION) / np.asarray(world.GRAPH_RESOLUTION)

    graph = SegmentationGraph.open(cave.live, cave.data.segmentation / world.SEGMENTATION_TABLE,
                                   world.SEGMENTATION_TABLE)
    locator = SupervoxelLocator.open(graph.base.directory, LAYOUT, GEOMETRY)
    assert len(locator.ids) == graph.base.n_sv
    at = locator.ids.searchsorted(means.index.to_numpy(np.uint64))
    assert np.array_equal(locator.positions(at), np.round(means.to_numpy() * scale))

    alone = np.setdiff1d(np.arange(len(locator.ids)), at)
    assert len(alone) > 0
    chunks = np.stack(LAYOUT.chunk_coordinates(locator.ids.at(alone)), axis=1)
    near = locator.positions(alone) - np.asarray(world.GRAPH_OFFSET)
    lo = chunks * np.asarray(world.CHUNK_SIZE)
    assert ((near >= lo - 1) & (near <= lo + np.asarray(world.CHUNK_SIZE))).all()


def test_sizes_follow_the_scale(cave):
    assert len(bulk(cave, "synapses_pni_2")) == TEST_SYNAPSES
    (segment,) = cave.tables.segments(cave.tables.get(world.ALIGNED_VOLUME, "synapses_pni_2"))
    copy_file = serving_path(cave.data.absolute(segment.path))
    with duckdb.connect(str(copy_file), read_only=True) as copy:
        assert set(copy.sql("SHOW TABLES").fetchnumpy()["name"]) == {
            "by_pre_pt_root_id", "by_post_pt_root_id"}
    assert not (cave.data.root / ".synth-work").exists()
    nuclei = rows(cave, 1718, "nucleus_detection_v0")
    assert len(nuclei) == max(400, round(world.REAL_NUCLEI * TEST_SYNAPSES / world.REAL_SYNAPSES))
    assert (nuclei.pt_root_id == 0).mean() == pytest.approx(world.NUCLEUS_KINDS["none"], abs=0.1)
    roots = nuclei.pt_root_id[nuclei.pt_root_id != 0].to_numpy(np.uint64)
    assert (roots >> np.uint64(56) == 12).all()  # layer-12 roots, like minnie65's
    assert roots.min() > 864691135000000000


def test_cell_types_keep_the_tutorial_proportions(cave):
    types = rows(cave, 1718, "aibs_metamodel_celltypes_v661")
    counts = types.cell_type.value_counts(normalize=True)
    everything = {**world.EXCITATORY_TYPES, **world.INHIBITORY_TYPES, **world.GLIA_TYPES}
    total = sum(everything.values())
    for name in ("23P", "4P", "6P-IT", "astrocyte"):
        assert counts[name] == pytest.approx(everything[name] / total, abs=0.08)


def test_proofread_cells_grow_over_versions(cave):
    scale = len(rows(cave, 1718, "nucleus_detection_v0")) / world.REAL_NUCLEI
    at_1181, at_1718 = proofread_counts(scale)
    axons = {v: rows(cave, v, "proofreading_status_and_strategy").status_axon.sum()
             for v in (1181, 1718)}
    assert axons[1181] == pytest.approx(at_1181, rel=0.25)
    assert axons[1718] == pytest.approx(at_1718, rel=0.25)
    assert axons[1181] < axons[1718]


def test_the_synapse_graph_is_heavy_tailed_with_autapses(cave):
    synapses = rows(cave, 1718, "synapses_pni_2")
    in_degree = synapses[synapses.post_pt_root_id != 0].post_pt_root_id.value_counts()
    assert in_degree.max() > 5 * in_degree.median()
    assert (synapses.pre_pt_root_id == synapses.post_pt_root_id).any()


def test_multi_soma_merges_exist_before_their_split(cave):
    first = rows(cave, 117, "nucleus_detection_v0")
    shared = first[first.pt_root_id != 0].pt_root_id.value_counts()
    assert (shared > 1).any()


def test_proofreading_changes_roots_and_synapses_follow(cave):
    early = rows(cave, 117, "synapses_pni_2").set_index("id").sort_index()
    late = rows(cave, 1718, "synapses_pni_2").set_index("id").sort_index()
    assert (early.index == late.index).all()
    moved = early.pre_pt_root_id != late.pre_pt_root_id
    assert moved.any()
    # supervoxels never change; roots change together for all rows of a supervoxel
    assert (early.pre_pt_supervoxel_id == late.pre_pt_supervoxel_id).all()
    per_sv = late[moved].groupby("pre_pt_supervoxel_id").pre_pt_root_id.nunique()
    assert (per_sv == 1).all()


def interrupt_after(patch: pytest.MonkeyPatch, owner, name: str, calls: int) -> None:
    """Make ``owner.name`` run ``calls`` times, then raise KeyboardInterrupt (a Ctrl-C)."""
    original = getattr(owner, name)
    count = 0

    def interrupted(*args, **kwargs):
        nonlocal count
        count += 1
        if count > calls:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    patch.setattr(owner, name, interrupted)


def must_not_run(*args, **kwargs):
    raise AssertionError("a step that an earlier run finished ran again")


def assert_work_database_gone(work: Path) -> None:
    """While the tables are written, the work database of the earlier steps and the
    supervoxels' roots are gone (the build's disk peak): the tables' own database is empty
    but for what they write."""
    assert not (work / "sv_root").exists()
    con = duckdb.connect(str(work / "work.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT table_name FROM duckdb_tables()").fetchall() == []
    finally:
        con.close()


def test_an_interrupted_build_resumes_after_its_last_finished_step(tmp_path: Path):
    """Stopped in the middle of the edits (some applied), of the annotation tables and of
    the versions, each new run resumes after the last finished step — undoing what the
    interrupted one had half done — and ends with the datastack an uninterrupted build
    makes, nothing left behind."""
    steps = importlib.import_module("opencave.synth.build")
    out, fresh = tmp_path / "resumed", tmp_path / "fresh"
    # (where the run stops, what it must not run again: a step an earlier run finished)
    runs = [((SegmentationGraph, "merge", 2), ()),
            ((steps, "copy_sorted_segment", 0), ("_raw_synapses",)),
            ((Materializer, "materialize", 2), ("_apply_edits", "_synapse_endpoints")),
            (None, ("_write_tables",))]
    for stop, finished in runs:
        with pytest.MonkeyPatch.context() as patch:
            for name in finished:
                patch.setattr(steps, name, must_not_run)
            if stop is None:
                report = build(out, synapses_total=12_000, seed=3, progress=False)
            else:
                interrupt_after(patch, *stop)
                with pytest.raises(KeyboardInterrupt):
                    build(out, synapses_total=12_000, seed=3, progress=False)
                assert not is_complete(out)
                if stop[1] == "copy_sorted_segment":
                    assert_work_database_gone(out / ".synth-work")
    assert report == build(fresh, synapses_total=12_000, seed=3, progress=False)
    assert not (out / ".synth-checkpoint").exists()
    a, b = OpenCave(out), OpenCave(fresh)
    try:
        assert a.collect_garbage(dry_run=True).paths == []
        for table in b.tables.names(world.ALIGNED_VOLUME):
            assert bulk(a, table).equals(bulk(b, table)), table
        for version in (343, 1718):
            assert rows(a, version, "synapses_pni_2").equals(rows(b, version, "synapses_pni_2"))
        edits = [cave.segmentation(world.SEGMENTATION_TABLE).operations() for cave in (a, b)]
        assert len(edits[0]) == len(edits[1]) == report.edits  # none applied twice
    finally:
        a.close()
        b.close()
