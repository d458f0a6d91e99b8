"""The synthetic datastack: deterministic, calibrated on minnie65, with proofreading that
changes root ids between versions while nucleus ids stay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from opencave.instance import OpenCave
from opencave.synth import build, supervoxels, world
from opencave.synth.cells import proofread_counts
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
        # b computes its supervoxel anchors in many small ranges: the same anchors
        monkeypatch.setattr(supervoxels, "ANCHOR_RANGE", 997 if name == "b" else 1 << 24)
        build(tmp_path / name, synapses_total=12_000, seed=seed, progress=False)
    a, b, c = (OpenCave(tmp_path / n) for n in "abc")
    try:
        anchors = [cave.data.segmentation / world.SEGMENTATION_TABLE / "anchors" for cave in (a, b)]
        for name in ("run_start.npy", "run_pos.npy", "positions.npy"):
            assert np.array_equal(np.load(anchors[0] / name), np.load(anchors[1] / name))
        for table in a.tables.names(world.ALIGNED_VOLUME):
            assert bulk(a, table).equals(bulk(b, table)), table
        assert rows(a, 1718, "synapses_pni_2").equals(rows(b, 1718, "synapses_pni_2"))
        assert not bulk(a, "synapses_pni_2").equals(bulk(c, "synapses_pni_2"))
    finally:
        for cave in (a, b, c):
            cave.close()


def test_sizes_follow_the_scale(cave):
    assert len(bulk(cave, "synapses_pni_2")) == TEST_SYNAPSES
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
