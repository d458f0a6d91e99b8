"""Compaction keeps every version's rows while reading them from few parts."""

from __future__ import annotations

import math
import shutil
from collections import Counter
from datetime import timedelta
from itertools import pairwise

import pandas as pd
import pytest

from opencave.instance import OpenCave
from opencave.materialize import compaction
from opencave.materialize.compaction import (
    FANOUT,
    SMALL_TABLE_ROWS,
    chain_merges,
    plan_merges,
)
from opencave.materialize.snapshots import Mask, SnapshotPart
from opencave.settings import Settings
from opencave.storage.segments import Segment
from opencave.synth import build, world
from tests.conftest import TEST_SEED, TEST_SYNAPSES

DS = world.DATASTACK


def part(rows: int, masked: int = 0) -> SnapshotPart:
    return SnapshotPart(Segment(f"s{rows}-{masked}", rows, "id"),
                        (Mask("m", masked),) if masked else ())


def test_a_small_table_is_merged_whole():
    assert plan_merges([part(4000, 100), part(20), part(30)]) == [[0, 1, 2]]
    assert plan_merges([part(4000)]) == []
    nuclei = [part(42_726, 300), part(864, 600), part(265), part(815, 500)]
    assert plan_merges(nuclei) == [[0, 1, 2, 3]]
    assert plan_merges(nuclei, whole_below=20_000) == []  # the threshold is a setting


def test_parts_of_one_tier_merge_once_there_are_fanout_of_them():
    bulk, deltas = part(10_000_000), [part(170_000 + i) for i in range(FANOUT)]
    assert plan_merges([bulk, *deltas[:-1]]) == []
    assert plan_merges([bulk, *deltas]) == [list(range(1, FANOUT + 1))]


def test_the_largest_part_is_never_merged_and_masked_rows_do_not_count():
    mostly_masked = part(10_000_000, 9_990_000)  # 10k visible rows: one of the small ones
    parts = [part(1_000_000), mostly_masked, *(part(10_000) for _ in range(FANOUT - 1))]
    assert plan_merges(parts) == [list(range(1, FANOUT + 1))]
    assert plan_merges([part(SMALL_TABLE_ROWS), part(10), part(10)]) == []


def contents(cave: OpenCave, version: int) -> dict[str, pd.DataFrame]:
    service = cave.materialization()
    return {table: service.query_table(DS, version, table, {}).stream.read_all().to_pandas()
            .sort_values("id", ignore_index=True)
            for table in service.table_names(DS, version)}


def part_counts(cave: OpenCave, table: str) -> dict[int, int]:
    return {v.version: len(cave.versions.snapshots(v)[table].parts)
            for v in cave.versions.available(DS)}


def merged_segments(cave: OpenCave, table: str) -> Counter[str]:
    """How many versions read each merged segment."""
    return Counter(p.segment.path for v in cave.versions.available(DS)
                   for p in cave.versions.snapshots(v)[table].parts
                   if "merged" in p.segment.path)


def test_versions_are_compacted_as_they_are_made(cave):
    counts = part_counts(cave, "synapses_pni_2")
    assert max(counts.values()) < len(world.VERSIONS)  # uncompacted, v1718 would read 13
    assert set(part_counts(cave, "nucleus_detection_v0").values()) == {1}
    shared = merged_segments(cave, "synapses_pni_2")
    assert shared and max(shared.values()) > 1  # the next version reuses a merged segment


def test_a_mask_chain_merges_its_newer_end_when_it_outgrows_an_older_mask():
    assert chain_merges([]) == [] and chain_merges([500]) == []
    assert chain_merges([2000, 400, 100]) == []  # each at least twice all newer ones
    assert chain_merges([2000, 400, 100, 60]) == [[2, 3]]  # 100 < 2 * 60
    assert chain_merges([2000, 400, 100, 120]) == [[1, 2, 3]]  # and then 400 < 2 * 220
    assert chain_merges([2000, 400, 100, 900]) == [[0, 1, 2, 3]]
    assert chain_merges([2000, 400, 100, 60], ratio=1) == []


def test_each_version_appends_a_mask_and_the_chain_stays_short(cave):
    """The bulk segment's masks: a version shares its predecessor's mask files and adds at
    most one (unless the chain's newer end merged), and the chain stays short."""
    chains = [next(p.masks for p in cave.versions.snapshots(v)["synapses_pni_2"].parts
                   if p.segment.num_rows == TEST_SYNAPSES)
              for v in cave.versions.available(DS)]
    for before, after in pairwise(chains):
        fresh = {m.path for m in after} - {m.path for m in before}
        assert len(fresh) == 1
        kept = [m for m in after if m.path not in fresh]
        assert kept == list(before) or len(kept) < len(before)  # shared, or merged
    assert any(len(after) < len(before) for before, after in pairwise(chains)), "no merge"
    for chain in chains:  # each mask at least twice the newer ones: sizes shrink 3x a step
        counts = [m.count for m in chain]
        assert chain_merges(counts) == []
        assert len(counts) <= 1 + math.log(sum(counts) / counts[-1], 3)


@pytest.fixture(scope="module", params=["one mask per part", "mask chains"])
def uncompacted(request, tmp_path_factory):
    """The test datastack made as before compaction existed: each version rewriting one
    whole mask per part (as before mask chains), or appending to chains never merged."""
    out = tmp_path_factory.mktemp("uncompacted") / "minnie"
    whole = request.param == "one mask per part"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compaction, "plan_merges", lambda parts, whole_below: [])
        patch.setattr(compaction, "chain_merges",
                      lambda sizes: [list(range(len(sizes)))] if whole and len(sizes) > 1
                      else [])
        build(out, synapses_total=TEST_SYNAPSES, seed=TEST_SEED, progress=False)
    return out


def test_compacting_history_keeps_every_version_and_shares_merged_segments(uncompacted,
                                                                           tmp_path):
    directory = tmp_path / "ds"
    shutil.copytree(uncompacted, directory)
    with OpenCave(Settings(data_dir=directory)) as cave:
        before = {v: contents(cave, v) for v, _ in world.VERSIONS}
        parts_before = part_counts(cave, "synapses_pni_2")
        assert parts_before[1718] == len(world.VERSIONS) + 1
        reported = []
        written = cave.compact(DS, on_version=lambda v, b, a: reported.append((v.version, b, a)))
        assert written > 0 and [r[0] for r in reported] == [v for v, _ in world.VERSIONS]
        parts_after = part_counts(cave, "synapses_pni_2")
        assert max(parts_after.values()) < len(world.VERSIONS)
        assert all(parts_after[v] <= parts_before[v] for v in parts_after)
        assert max(merged_segments(cave, "synapses_pni_2").values()) > 1
        for version, tables in before.items():
            after = contents(cave, version)
            for table, rows in tables.items():
                pd.testing.assert_frame_equal(after[table], rows, obj=f"{table}@{version}")
        assert cave.compact(DS) == 0  # compacted already: nothing to do


def test_a_version_made_on_compacted_history_equals_one_made_without(uncompacted, tmp_path):
    made = {}
    for name, compact_first in (("plain", False), ("compacted", True)):
        directory = tmp_path / name
        shutil.copytree(uncompacted, directory)
        with OpenCave(Settings(data_dir=directory)) as cave:
            if compact_first:
                cave.compact(DS)
            nuclei = contents(cave, 1718)["nucleus_detection_v0"]
            cells = nuclei[nuclei.pt_root_id != 0].drop_duplicates("pt_root_id")
            a, b = cells.iloc[:2].itertuples()
            when = world.VERSIONS[-1][1] + timedelta(days=2)
            cave.segmentation(world.SEGMENTATION_TABLE).merge(
                a.pt_supervoxel_id, b.pt_supervoxel_id, user_id="t", timestamp=when)
            cave.materializer().materialize(DS, when + timedelta(hours=1), version=1800)
            made[name] = contents(cave, 1800)
    for table, rows in made["plain"].items():
        pd.testing.assert_frame_equal(made["compacted"][table], rows, obj=table)


def test_garbage_collection_removes_what_compaction_replaced_and_keeps_every_version(
        uncompacted, tmp_path):
    directory = tmp_path / "ds"
    shutil.copytree(uncompacted, directory)
    with OpenCave(Settings(data_dir=directory)) as cave:
        before = {v: contents(cave, v) for v, _ in world.VERSIONS}
        used = cave.versions.files()
        cave.compact(DS)
        replaced = used - cave.versions.files() - cave.tables.segment_files()
        assert replaced, "compaction replaced nothing"
        listed = cave.collect_garbage(dry_run=True)
        assert not listed.removed and all(path.exists() for path in listed.paths)
        garbage = cave.collect_garbage()
        # the replaced segments and masks with their serving copies, and the files compaction
        # wrote and replaced in the same run; nothing a version or a table uses
        owners = {cave.data.relative(path).removesuffix(".duckdb") for path in garbage.paths}
        assert replaced <= owners and garbage.bytes > 0
        assert owners.isdisjoint(cave.versions.files() | cave.tables.segment_files())
        assert garbage.paths == listed.paths and not any(p.exists() for p in garbage.paths)
        assert cave.collect_garbage().paths == []
    with OpenCave(Settings(data_dir=directory)) as cave:  # as a server started afterwards
        for version, tables in before.items():
            after = contents(cave, version)
            for table, rows in tables.items():
                pd.testing.assert_frame_equal(after[table], rows, obj=f"{table}@{version}")
