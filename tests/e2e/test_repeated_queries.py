"""A query asked again at a version is read from the result cache: caveclient gets the same
frame, and ``X-Result-Cache`` says where it came from. Queries whose answer may change (live,
random samples) always run."""

from __future__ import annotations

import httpx
import pandas as pd
import pytest

from opencave.materialize import query

VERSION = 1181
QUERY = (f"/materialize/api/v3/datastack/minnie65_public/version/{VERSION}/table/"
         "synapses_pni_2/query")


@pytest.fixture(autouse=True)
def no_table_is_small(monkeypatch):
    """The test tables are small enough that every query is a lookup, which is never kept;
    here they are not."""
    monkeypatch.setattr(query, "LOOKUP_TABLE_ROWS", 0)


def test_a_repeated_query_is_answered_from_the_cache_with_the_same_rows(client, server):
    client.materialize.version = VERSION
    roots = client.materialize.query_table("synapses_pni_2", limit=5000)["pre_pt_root_id"]
    wanted = sorted({int(r) for r in roots})[:200]  # beyond a lookup's 64, which is not kept
    body = {"filter_in_dict": {"synapses_pni_2": {"pre_pt_root_id": wanted}},
            "desired_resolution": [1, 1, 1]}

    first = httpx.post(server + QUERY, json=body, timeout=60)
    again = httpx.post(server + QUERY, json=body, timeout=60)
    assert (first.headers["X-Result-Cache"], again.headers["X-Result-Cache"]) == ("miss", "hit")
    assert again.content == first.content
    assert again.headers["content-length"] == str(len(again.content))  # sent as stored
    as_json = [httpx.post(server + QUERY, params={"return_pyarrow": False}, json=body,
                          timeout=60) for _ in range(2)]
    assert as_json[1].headers["X-Result-Cache"] == "hit"
    assert as_json[1].json() == as_json[0].json() and len(as_json[0].json()) > 100

    frames = [client.materialize.query_table(
        "synapses_pni_2", filter_in_dict={"pre_pt_root_id": wanted},
        desired_resolution=[1, 1, 1], split_positions=True) for _ in range(2)]
    pd.testing.assert_frame_equal(frames[0], frames[1])
    assert len(frames[0]) > 100 and set(frames[0]["pre_pt_root_id"]) <= set(wanted)


def test_other_values_are_another_entry(server):
    bodies = [{"filter_greater_dict": {"synapses_pni_2": {"size": size}}}
              for size in (400, 500, 400)]
    answers = [httpx.post(server + QUERY, json=body, timeout=60) for body in bodies]
    assert [a.headers["X-Result-Cache"] for a in answers] == ["miss", "miss", "hit"]
    assert answers[0].content == answers[2].content
    assert len(answers[0].content) > len(answers[1].content)


def test_random_samples_and_live_queries_always_run(server):
    sampled = [httpx.post(server + QUERY, params={"random_sample": 50}, json={}, timeout=60)
               for _ in range(2)]
    assert [s.headers["X-Result-Cache"] for s in sampled] == ["off", "off"]
    live = httpx.post(server + "/materialize/api/v3/datastack/minnie65_public/query",
                      json={"table": "synapses_pni_2"}, timeout=60)
    assert live.status_code == 200 and live.headers["X-Result-Cache"] == "off"
