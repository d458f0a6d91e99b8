"""Bad input on every route: a 4xx with one JSON shape, ``{"error", "message"}``, naming the
bad thing and what is accepted — never a 500, never a redirect."""

from __future__ import annotations

import httpx
import pyarrow as pa
import pytest

from opencave.api import create_app
from opencave.instance import OpenCave
from opencave.materialize import query
from opencave.materialize.engine import QueryEngine
from tests.conftest import LiveServer, assert_error
from tests.materialize.test_engine import numbers

DS = "minnie65_public"
V = "/materialize/api/v3/datastack"
V2 = "/materialize/api/v2/datastack"

GET_ROUTES_WITH_DATASTACK = [
    "/info/api/v2/datastack/full/{ds}",
    f"{V}/{{ds}}/versions",
    f"{V}/{{ds}}/metadata",
    f"{V}/{{ds}}/version/1718",
    f"{V2}/{{ds}}/version/1718/tables",
    f"{V}/{{ds}}/version/1718/tables/metadata",
    f"{V}/{{ds}}/version/1718/table/nucleus_detection_v0/metadata",
    f"{V2}/{{ds}}/version/1718/table/nucleus_detection_v0/count",
    f"{V}/{{ds}}/table/nucleus_detection_v0/unique_string_values",
    f"{V}/{{ds}}/version/1718/views",
]


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server, follow_redirects=False, timeout=60) as client:
        yield client


@pytest.mark.parametrize("route", GET_ROUTES_WITH_DATASTACK)
def test_unknown_datastack_is_a_404_naming_the_known_ones(http, route):
    body = assert_error(http.get(route.format(ds="nope")), 404, "'nope'", DS)
    assert body["error"] == "datastack_not_found"


@pytest.mark.parametrize("route", [
    f"{V}/{DS}/version/9999", f"{V2}/{DS}/version/9999/tables",
    f"{V}/{DS}/version/9999/table/synapses_pni_2/metadata",
    f"{V2}/{DS}/version/9999/table/synapses_pni_2/count",
])
def test_unknown_version_names_the_available_ones(http, route):
    assert_error(http.get(route), 404, "9999", "1718")


def test_unknown_table(http):
    assert_error(http.get(f"{V}/{DS}/version/1718/table/nope/metadata"), 404, "'nope'",
                 "synapses_pni_2")
    assert_error(http.post(f"{V}/{DS}/version/1718/table/nope/query", json={}), 404, "'nope'")


def test_a_table_that_did_not_exist_yet(http):
    url = f"{V}/{DS}/version/117/table/synapse_target_predictions_ssa_v2"
    assert http.get(f"{url}/metadata").status_code == 200  # metadata is the table's
    assert_error(http.post(f"{url}/query", json={}), 404, "version 117")


def test_version_must_be_an_integer(http):
    assert_error(http.get(f"{V}/{DS}/version/latest"), 400, "version")


QUERY = f"{V}/{DS}/version/1718/table/synapses_pni_2/query"


@pytest.mark.parametrize(("body", "needles"), [
    ({"filter_in_dict": {"synapses_pni_2": {"nope": [1]}}}, ["'nope'", "pre_pt_root_id"]),
    ({"filter_equal_dict": {"synapses_pni_2": {"pre_pt_root_id": "x"}}}, ["integers"]),
    ({"filter_in_dict": {"other_table": {"id": [1]}}}, ["'other_table'"]),
    ({"desired_resolution": [1, 1]}, ["desired_resolution"]),
    ({"desired_resolution": "fast"}, ["desired_resolution"]),
    ({"select_columns": ["pre_pt_position", "nope"]}, ["'nope'"]),
    ({"limit": -5}, ["limit"]),
    ({"filter_spatial_dict": {"synapses_pni_2": {"ctr_pt_position": [1, 2, 3]}}}, ["spatial"]),
    ({"filter_regex_dict": {"synapses_pni_2": {"size": "1"}}}, ["text columns"]),
])
def test_bad_query_bodies(http, body, needles):
    assert_error(http.post(QUERY, json=body), 400, *needles)


def test_malformed_json(http):
    response = http.post(QUERY, content=b'{"limit": 5', headers={"content-type":
                                                                "application/json"})
    assert_error(response, 400, "not valid JSON")
    assert_error(http.post(QUERY, json=[1, 2]), 400, "JSON object")


def test_bad_join_specification(http):
    url = f"{V}/{DS}/version/1718/query"
    assert_error(http.post(url, json={"tables": [["synapses_pni_2", "id"]]}), 400, "tables")
    body = {"tables": [["aibs_metamodel_celltypes_v661", "target_id"],
                       ["nucleus_detection_v0", "nope"]]}
    assert_error(http.post(url, json=body), 400, "'nope'")


def test_unknown_routes_answer_json_404_and_no_route_redirects(http):
    assert_error(http.get("/materialize/api/v9/nothing"), 404, "no route")
    response = http.get(f"{V}/{DS}/versions/")
    assert response.status_code == 404 and not response.is_redirect


def test_unknown_schema_type(http):
    assert_error(http.get("/schema/api/v2/type/not_a_schema"), 404, "synapse")


def test_arrow_responses_have_the_exact_content_type_and_resolution_header(http):
    response = http.post(QUERY, json={"limit": 3, "desired_resolution": [1, 1, 1]},
                         params={"return_pyarrow": "True", "split_positions": "True"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "data.arrow"
    assert response.headers["dataframe_resolution"] == "1.0, 1.0, 1.0"
    assert 'Limited query to 3 rows' in response.headers["warning"]
    with pa.ipc.open_stream(response.content) as reader:
        assert reader.read_all().num_rows == 3


def test_an_empty_result_still_carries_its_schema(http):
    body = {"filter_in_dict": {"synapses_pni_2": {"pre_pt_root_id": [1]}}}
    response = http.post(QUERY, json=body)
    with pa.ipc.open_stream(response.content) as reader:
        table = reader.read_all()
    assert table.num_rows == 0 and "pre_pt_root_id" in table.schema.names


def test_json_results_when_arrow_is_not_wanted(http):
    response = http.post(QUERY, json={"limit": 2}, params={"return_pyarrow": "False"})
    rows = response.json()
    assert len(rows) == 2 and "pre_pt_root_id" in rows[0]


def test_count(http):
    response = http.post(QUERY, json={"filter_equal_dict": {"synapses_pni_2": {"valid": "t"}}},
                         params={"count": "True"})
    with pa.ipc.open_stream(response.content) as reader:
        count = reader.read_all().column("count")[0].as_py()
    total = http.get(f"{V2}/{DS}/version/1718/table/synapses_pni_2/count").json()
    assert count == total > 0


def test_a_server_at_capacity_answers_503_with_retry_after(synth_dir):
    """Queries beyond the server's slots wait; when none frees in time the answer is a 503
    with ``Retry-After`` (caveclient retries those by itself), not a 500."""
    with OpenCave(synth_dir) as cave:
        cave.engine = QueryEngine(max_queries=1, lookup_queries=1, queue_seconds=0.2)
        holding = [cave.engine.stream(numbers(10, lookup=lookup)) for lookup in (True, False)]
        with LiveServer(create_app(cave)) as live, httpx.Client(base_url=live.url) as client:
            busy = client.post(f"{V}/{DS}/version/1718/table/nucleus_detection_v0/query",
                               json={}, params={"arrow_format": True})
            for stream in holding:
                stream.close()
            served = client.post(f"{V}/{DS}/version/1718/table/nucleus_detection_v0/query",
                                 json={}, params={"arrow_format": True})
    assert assert_error(busy, 503, "try again")["error"] == "busy"
    assert busy.headers["retry-after"] == "2"
    assert served.status_code == 200


def test_a_neuron_lookup_is_answered_while_a_download_holds_every_other_slot(synth_dir,
                                                                             monkeypatch):
    """A stream holds its slot while its client reads it; lookups have slots of their own,
    so one neuron's synapses need not wait for someone's whole-table download."""
    monkeypatch.setattr(query, "LOOKUP_TABLE_ROWS", 0)  # the test's small tables count as big
    table = f"{V}/{DS}/version/1718/table/synapses_pni_2/query"
    with OpenCave(synth_dir) as cave:
        root = cave.materialization().query_table(DS, 1718, "synapses_pni_2", {
            "limit": 1}).stream.read_all()["pre_pt_root_id"][0].as_py()
        cave.engine = QueryEngine(max_queries=1, lookup_queries=1, queue_seconds=0.2)
        download = cave.engine.stream(numbers(10))  # a whole-table download, read slowly
        with LiveServer(create_app(cave)) as live, httpx.Client(base_url=live.url) as client:
            lookup = client.post(table, json={
                "filter_in_dict": {"synapses_pni_2": {"pre_pt_root_id": [root]}}})
            scan = client.post(table, json={
                "filter_greater_dict": {"synapses_pni_2": {"size": 10}}})
        download.close()
    assert lookup.status_code == 200
    rows = pa.ipc.open_stream(lookup.content).read_all()
    assert rows.num_rows > 0 and set(rows["pre_pt_root_id"].to_pylist()) == {root}
    assert assert_error(scan, 503, "try again")["error"] == "busy"
