"""A datastack whose large segments keep their Parquet record sorted by post root in place of
that serving copy (``serving_layout``) answers every query, at every version, as the same
datastack with all its copies: lookups by post root read the record's row groups, larger
filters scan it, and the versions made on top of it found the same changed rows."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from opencave.api import create_app
from opencave.instance import OpenCave
from opencave.settings import Settings
from opencave.storage import segments
from opencave.storage.segments import serving_path, sorted_copy
from opencave.synth import build, world
from tests.conftest import TEST_SEED, TEST_SYNAPSES, LiveServer

DS = "minnie65_public"
SYNAPSES = "synapses_pni_2"
VERSIONS = [number for number, _ in world.VERSIONS]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segments, "RECORD_SERVES_ROWS", 10_000)  # the test's bulk load is large
        patch.setattr(segments, "RECORD_ROW_GROUP_SIZE", 2_048)  # and spans row groups
        out = tmp_path_factory.mktemp("recorded") / "minnie"
        build(out, synapses_total=TEST_SYNAPSES, seed=TEST_SEED, progress=False)
    with OpenCave(Settings(data_dir=out)) as instance:
        yield instance


def rows(cave: OpenCave, version: int, body: dict) -> pd.DataFrame:
    result = cave.materialization().query_table(DS, version, SYNAPSES, body)
    frame = result.stream.read_all().to_pandas()
    return frame.sort_values("id", ignore_index=True)


def test_the_bulk_load_keeps_its_record_in_place_of_the_post_root_copy(recorded):
    [bulk] = [s for s in recorded.tables.segments(recorded.tables.get(
        "minnie65_phase3", SYNAPSES)) if "bulk" in s.path]
    assert bulk.sort_key == "post_pt_root_id"
    with duckdb.connect(str(serving_path(recorded.data.absolute(bulk.path))),
                        read_only=True) as con:
        tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert tables == {sorted_copy("pre_pt_root_id")}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_version_answers_as_with_all_copies(cave, recorded, version):
    everything = rows(cave, version, {})
    pd.testing.assert_frame_equal(rows(recorded, version, {}), everything)
    roots = np.random.default_rng(version).choice(
        everything.post_pt_root_id.unique(), 120, replace=False).tolist()
    pre_roots = everything.pre_pt_root_id.unique()[:40].tolist()
    bodies = [
        {"filter_in_dict": {SYNAPSES: {"post_pt_root_id": roots[:1]}}},  # a neuron's inputs
        {"filter_equal_dict": {SYNAPSES: {"post_pt_root_id": roots[1]}}},
        {"filter_in_dict": {SYNAPSES: {"post_pt_root_id": roots[:8]}},
         "filter_greater_dict": {SYNAPSES: {"size": 0.5}}},
        {"filter_in_dict": {SYNAPSES: {"post_pt_root_id": roots}}},  # beyond a lookup: a scan
        {"filter_in_dict": {SYNAPSES: {"pre_pt_root_id": pre_roots[:1]}}},  # its outputs
        {"filter_in_dict": {SYNAPSES: {"pre_pt_root_id": pre_roots,
                                       "post_pt_root_id": roots}}},
        {"filter_in_dict": {SYNAPSES: {"post_pt_root_id": roots[:3]}}, "limit": 5,
         "offset": 2},
    ]
    for body in bodies:
        pd.testing.assert_frame_equal(rows(recorded, version, body), rows(cave, version, body))


def test_caveclient_gets_a_neurons_inputs_from_the_record(client, recorded):
    """Through the real caveclient over HTTP: ``synapse_query(post_ids=…)`` at the latest
    version, from a server on each datastack."""
    from caveclient import CAVEclient

    client.materialize.version = VERSIONS[-1]
    inputs = client.materialize.query_table(SYNAPSES, limit=1)
    root = int(inputs.post_pt_root_id.iloc[0])
    expected = client.materialize.synapse_query(post_ids=root)
    with LiveServer(create_app(recorded)) as live:
        other = CAVEclient(DS, server_address=live.url)
        other.materialize.version = VERSIONS[-1]
        got = other.materialize.synapse_query(post_ids=root)
    assert len(got) == len(expected) > 0
    pd.testing.assert_frame_equal(got.sort_values("id", ignore_index=True),
                                  expected.sort_values("id", ignore_index=True))
