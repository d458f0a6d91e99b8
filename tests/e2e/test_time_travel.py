"""Versions made from a live, edited datastack, and queries as of any timestamp, against the
oracle: edit the segmentation and post annotations through caveclient, materialize, then
check the new version, the old versions (unchanged), ``query_table(timestamp=…)``
(caveclient's client-side live query) and ``live_live_query`` on randomized timestamps and
filters."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencave.api import create_app
from opencave.instance import OpenCave
from opencave.synth import world
from tests.conftest import LiveServer, editor_token
from tests.e2e.test_oracle import _call_kwargs, _client_name, _filters, _same
from tests.oracle import Oracle, apply_filters, schema_of

DS = world.DATASTACK
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def history(tmp_path_factory, synth_dir):
    """A copy of the datastack that lives on: edits and annotations, a version in the
    middle (1719), more edits and annotations after it."""
    from caveclient import CAVEclient

    data = tmp_path_factory.mktemp("time") / "data"
    shutil.copytree(synth_dir, data)
    cave = OpenCave(data)
    token = editor_token(cave)
    with LiveServer(create_app(cave)) as live:
        client = CAVEclient(DS, server_address=live.url, auth_token=token)
        client.annotation.create_table("tags", "bound_tag", "tags", [4, 4, 40],
                                       read_permission="PUBLIC", write_permission="GROUP")
        synapses = client.materialize.query_table("synapses_pni_2", limit=400,
                                                  split_positions=True)
        nuclei = client.materialize.query_table("nucleus_detection_v0")
        cells = nuclei[nuclei.pt_root_id != 0].drop_duplicates("pt_root_id")
        marks = [now()]
        for round_ in range(2):
            _edit(client, cells, round_)
            _post(client, synapses, round_)
            marks.append(now())
            if round_ == 0:
                time.sleep(0.01)
                cave.new_version(DS, now(), 1719)
                marks.append(now())
        oracle = Oracle(cave)
        oracle.add_logged_edits()
        yield client, oracle, marks
    cave.close()


def _edit(client, cells: pd.DataFrame, round_: int) -> None:
    svs = [int(s) for s in cells.pt_supervoxel_id.iloc[4 * round_:4 * round_ + 4]]
    cg = client.chunkedgraph
    cg.do_merge([svs[0], svs[1]], [[0, 0, 0], [0, 0, 0]])
    cg.do_merge([svs[2], svs[3]], [[0, 0, 0], [0, 0, 0]])
    merged = cg.do_merge([svs[1], svs[2]], [[0, 0, 0], [0, 0, 0]])
    cg.undo_operation(merged["operation_id"])


def _post(client, synapses: pd.DataFrame, round_: int) -> None:
    part = synapses.iloc[200 * round_:200 * round_ + 200]
    ids = client.annotation.post_annotation("tags", [
        {"pt": {"position": [int(x), int(y), int(z)]}, "tag": f"r{round_}-{i % 3}"}
        for i, (x, y, z) in enumerate(zip(part.post_pt_position_x, part.post_pt_position_y,
                                          part.post_pt_position_z, strict=True))])
    client.annotation.delete_annotation("tags", ids[:10])
    client.annotation.update_annotation("tags", [
        {"id": ids[10], "pt": {"position": [int(part.post_pt_position_x.iloc[10]),
                                            int(part.post_pt_position_y.iloc[10]),
                                            int(part.post_pt_position_z.iloc[10])]},
         "tag": "fixed"}])


def test_old_versions_are_unchanged_and_the_new_one_matches(history):
    client, oracle, _ = history
    mat = client.materialize
    for version in (1300, 1718):
        for table in ("nucleus_detection_v0", "synapses_pni_2"):
            got = mat.query_table(table, materialization_version=version, split_positions=True)
            _same(got, oracle.rows(table, dict(world.VERSIONS)[version]), ["pre_pt_root_id",
                  "post_pt_root_id"] if "syn" in table else ["pt_root_id"])
    at = mat.get_timestamp(1719)
    for table in ("nucleus_detection_v0", "synapses_pni_2", "tags"):
        got = mat.query_table(table, materialization_version=1719, split_positions=True)
        roots = [c for c in got.columns if c.endswith("_root_id")]
        _same(got, oracle.rows(table, at), roots + (["tag"] if table == "tags" else []))


def test_every_version_counts_the_rows_it_shows(history):
    """Counts come from the parts' counts, less rows not alive at the version's time
    (proofreading rows are created between versions)."""
    client, oracle, _ = history
    mat = client.materialize
    for version in (1181, 1300, 1718, 1719):
        at = mat.get_timestamp(version)
        for table in mat.get_tables(version=version):
            expected = len(oracle.rows(table, at))
            assert mat.get_annotation_count(table, version=version) == expected, (version,
                                                                                   table)


@SETTINGS
@given(data=st.data())
def test_live_live_queries_match_the_oracle_at_any_time(history, data):
    client, oracle, marks = history
    table = data.draw(st.sampled_from(["nucleus_detection_v0", "synapses_pni_2", "tags"]))
    lo, hi = (marks[0], marks[-1]) if table == "tags" else (
        world.VERSIONS[0][1], marks[-1])
    at = lo + (hi - lo) * data.draw(st.floats(0.0, 1.0))
    truth = oracle.rows(table, at)
    body = _filters(truth, table, schema_of(oracle.cave, table), data)
    got = client.materialize.live_live_query(
        table, at, split_positions=True, allow_invalid_root_ids=True,
        **{_client_name(k): v for k, v in body.items()})
    expected = apply_filters(truth, table, body)
    roots = [c for c in got.columns if c.endswith("_root_id")]
    _same(got, expected, roots + (["tag"] if table == "tags" else []))


@SETTINGS
@given(data=st.data())
def test_live_pages_match_the_oracle_at_any_time(history, data, table_sizes):
    # Live changes (rows posted or re-rooted since the last version, masks held in memory)
    # on the pages' both paths.
    client, oracle, marks = history
    table = data.draw(st.sampled_from(["synapses_pni_2", "tags"]))
    lo = marks[0] if table == "tags" else world.VERSIONS[-1][1]
    at = lo + (marks[-1] - lo) * data.draw(st.floats(0.0, 1.0))
    truth = oracle.rows(table, at).sort_values("id")
    limit = data.draw(st.integers(1, 300))
    offset = data.draw(st.integers(0, max(0, len(truth) - 1)))
    got = client.materialize.live_live_query(table, at, limit=limit, offset=offset,
                                             allow_invalid_root_ids=True)
    assert list(got.id) == list(truth.id.iloc[offset:offset + limit])


@SETTINGS
@given(data=st.data())
def test_client_side_timestamp_queries_match_the_oracle(history, data):
    """caveclient's ``query_table(timestamp=T)`` reads the nearest version and maps roots
    to T; it never sees annotations written after that version (by design, as with the
    original), so it is checked on tables whose rows only change by edits."""
    client, oracle, marks = history
    table = data.draw(st.sampled_from(["nucleus_detection_v0", "synapses_pni_2"]))
    at = world.VERSIONS[0][1] + (marks[-1] - world.VERSIONS[0][1]) * data.draw(
        st.floats(0.01, 1.0))
    truth = oracle.rows(table, at)
    body = _filters(truth, table, schema_of(oracle.cave, table), data)
    body.pop("filter_regex_dict", None)  # the client's live query has no regex
    roots = [c for c in truth.columns if c.endswith("_root_id")]
    for key in list(body):  # root filters must name roots valid at T: keep them so
        for column in list(body[key].get(table, {})):
            if column in roots:
                body[key][table].pop(column)
    got = client.materialize.query_table(table, timestamp=at, split_positions=True,
                                         **_call_kwargs(body, table))
    _same(got, apply_filters(truth, table, body), roots)


def test_both_live_paths_agree_and_root_filters_follow_time(history):
    client, oracle, marks = history
    at = marks[-1] - timedelta(microseconds=1)
    truth = oracle.rows("synapses_pni_2", at)
    root = int(truth.pre_pt_root_id.value_counts().index[0])
    server = client.materialize.live_live_query(
        "synapses_pni_2", at, filter_equal_dict={"synapses_pni_2": {"pre_pt_root_id": root}})
    local = client.materialize.query_table("synapses_pni_2", timestamp=at,
                                           filter_equal_dict={"pre_pt_root_id": root})
    assert sorted(server.id) == sorted(local.id) == sorted(
        truth[truth.pre_pt_root_id == root].id)
    assert np.isin(server.pre_pt_root_id, [root]).all()
