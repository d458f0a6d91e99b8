"""Version diffs: rows added, removed and whose roots changed, checked against the oracle."""

from __future__ import annotations

import httpx
import pyarrow as pa

from opencave.auth import SYSTEM
from opencave.synth import world
from tests.oracle import Oracle

DS = world.DATASTACK
TIMES = dict(world.VERSIONS)


def expected_changes(oracle: Oracle, table: str, before, after) -> dict[int, str]:
    a = oracle.rows(table, before).set_index("id")
    b = oracle.rows(table, after).set_index("id")
    roots = [c for c in a.columns if c.endswith("_root_id")]
    out = {int(i): "added" for i in b.index.difference(a.index)}
    out |= {int(i): "removed" for i in a.index.difference(b.index)}
    both = a.index.intersection(b.index)
    moved = (a.loc[both, roots] != b.loc[both, roots]).any(axis=1)
    out |= {int(i): "roots_changed" for i in both[moved.to_numpy()]}
    return out


def test_diffs_between_versions_and_timestamps_match_the_oracle(cave):
    oracle = Oracle(cave)
    service = cave.materialization()
    for table, (a, b) in (("synapses_pni_2", (1181, 1718)),
                          ("nucleus_detection_v0", (117, 1718)),
                          ("proofreading_status_and_strategy", (661, 1300))):
        got = service.diff(DS, table, a, b, user=SYSTEM)
        assert dict(zip(got.column("id").to_pylist(), got.column("change").to_pylist(),
                        strict=True)) == expected_changes(oracle, table, TIMES[a], TIMES[b])
    between = TIMES[1300] + (TIMES[1412] - TIMES[1300]) / 2
    got = service.diff(DS, "nucleus_detection_v0", 1300, between, user=SYSTEM)
    assert set(got.column("id").to_pylist()) == set(expected_changes(
        oracle, "nucleus_detection_v0", TIMES[1300], between))


def test_the_diff_route_answers_arrow(server):
    response = httpx.get(f"{server}/materialize/api/v3/datastack/{DS}/table/synapses_pni_2/"
                         "diff", params={"from_version": 1300, "to_version": 1412})
    assert response.headers["content-type"] == "data.arrow"
    with pa.ipc.open_stream(response.content) as reader:
        table = reader.read_all()
    assert {"id", "change", "pre_pt_root_id_before", "pre_pt_root_id_after"} <= set(
        table.schema.names)
    bad = httpx.get(f"{server}/materialize/api/v3/datastack/{DS}/table/synapses_pni_2/diff",
                    params={"from_version": 1300})
    assert bad.status_code == 400 and "to_version" in bad.json()["message"]
