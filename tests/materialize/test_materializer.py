"""New versions cost what changed, never touch old versions, and appear atomically."""

from __future__ import annotations

import shutil
from datetime import timedelta

import numpy as np
import pytest

from opencave.errors import VersionNotFound
from opencave.instance import OpenCave
from opencave.materialize.materializer import Materializer
from opencave.synth import world

DS = "minnie65_public"


@pytest.fixture
def copy(synth_dir, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(synth_dir, target)
    cave = OpenCave(target)
    yield cave
    cave.close()


def query(cave, version, table="synapses_pni_2"):
    service = cave.materialization()
    return service.query_table(DS, version, table, {}).stream.read_all().to_pandas()


def merge_two_neurons(cave):
    nuclei = query(cave, 1718, "nucleus_detection_v0")
    svs = nuclei[nuclei.pt_root_id != 0].drop_duplicates("pt_root_id")
    a, b = svs.iloc[0], svs.iloc[1]
    graph = cave.segmentation(world.SEGMENTATION_TABLE)
    when = world.VERSIONS[-1][1] + timedelta(days=3)
    op = graph.merge(int(a.pt_supervoxel_id), int(b.pt_supervoxel_id), user_id="t",
                     timestamp=when)
    return {int(a.pt_root_id), int(b.pt_root_id)}, int(op.new_root_ids[0]), when


def test_a_new_version_rewrites_only_rows_whose_roots_changed(copy):
    old_roots, new_root, when = merge_two_neurons(copy)
    before = query(copy, 1718)
    report = copy.materializer().materialize(DS, when + timedelta(hours=1), version=1719)
    touched = before.pre_pt_root_id.isin(old_roots) | before.post_pt_root_id.isin(old_roots)
    assert report.rows_rewritten["synapses_pni_2"] == touched.sum() > 0
    after = query(copy, 1719).set_index("id").loc[before.id]
    assert (after.pre_pt_root_id.to_numpy()[touched.to_numpy() & before.pre_pt_root_id.isin(
        old_roots).to_numpy()] == new_root).all()
    assert not after.pre_pt_root_id.isin(old_roots).any()
    unchanged = before[~touched].set_index("id")
    assert (after.loc[unchanged.index, "pre_pt_root_id"] == unchanged.pre_pt_root_id).all()
    assert query(copy, 1718).equals(before)  # the old version is untouched
    table_bytes = sum((copy.data.absolute(s.path)).stat().st_size for s in copy.tables.segments(
        copy.tables.get(world.ALIGNED_VOLUME, "synapses_pni_2")))
    assert report.bytes_written < 0.2 * table_bytes


def test_an_interrupted_version_stays_invisible_and_can_be_redone(copy, monkeypatch):
    _, _, when = merge_two_neurons(copy)
    original = Materializer._snapshot
    calls = {"n": 0}

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Materializer, "_snapshot", failing)
    with pytest.raises(RuntimeError):
        copy.materializer().materialize(DS, when + timedelta(hours=1), version=1719)
    with pytest.raises(VersionNotFound):
        copy.versions.get(DS, 1719)
    assert 1719 not in [v.version for v in copy.versions.available(DS)]
    monkeypatch.setattr(Materializer, "_snapshot", original)
    copy.materializer().materialize(DS, when + timedelta(hours=1), version=1719)
    assert len(query(copy, 1719)) == len(query(copy, 1718))
    assert np.isin(1719, [v.version for v in copy.versions.available(DS)])
