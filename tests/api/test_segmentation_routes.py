"""The chunkedgraph routes: response shapes caveclient reads, the timestamp and body formats
it sends, and bad input (a 4xx with the JSON error shape, the graph unchanged).

Runs on a private copy of the synthetic datastack (its graph has the generator's proofreading
history), served by a real server and reached through the real caveclient and plain HTTP."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
from caveclient import CAVEclient

from opencave.api import create_app
from opencave.instance import OpenCave
from opencave.synth import world
from opencave.synth.geometry import GEOMETRY, LAYOUT
from tests.conftest import LiveServer, assert_error, editor_token

DS = "minnie65_public"
TABLE = world.SEGMENTATION_TABLE
B = f"/segmentation/api/v1/table/{TABLE}"
UNKNOWN_ROOT = (12 << 56) | 5
UNKNOWN_SV = (1 << 56) | 999_999


@pytest.fixture(scope="module")
def env(synth_dir, tmp_path_factory):
    copy = tmp_path_factory.mktemp("seg_routes") / "minnie"
    shutil.copytree(synth_dir, copy)
    cave = OpenCave(copy)
    token = editor_token(cave)
    with LiveServer(create_app(cave)) as live:
        client = CAVEclient(DS, server_address=live.url, auth_token=token)
        with httpx.Client(base_url=live.url, follow_redirects=False, timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            yield cave, client, http
    cave.close()


@pytest.fixture(scope="module")
def cave(env):
    return env[0]


@pytest.fixture(scope="module")
def cg(env):
    return env[1].chunkedgraph


@pytest.fixture(scope="module")
def http(env):
    return env[2]


@pytest.fixture(scope="module")
def cells(env):
    """Nuclei with a segment: id, supervoxel, root, position (4, 4, 40 nm voxels)."""
    nuclei = env[1].materialize.query_table("nucleus_detection_v0")
    return nuclei[nuclei.pt_root_id != 0].drop_duplicates("pt_root_id").reset_index(drop=True)


def graph(cave):
    return cave.segmentation(TABLE)


def snapshot(cave, cells) -> tuple:
    """What bad input must not change: the operation log and the roots of every nucleus."""
    g = graph(cave)
    return len(g.operations()), g.get_roots(cells.pt_supervoxel_id.to_numpy()).tolist()


def nm(position) -> list[float]:
    return (np.asarray(position, dtype=float) * world.VOXEL_RESOLUTION).tolist()


# -- shapes -------------------------------------------------------------------------------------
def test_info_gives_layers_chunks_and_base_resolution(cg):
    info = cg.segmentation_info
    assert info["graph"]["n_layers"] == world.N_LAYERS
    assert info["graph"]["chunk_size"] == list(world.CHUNK_SIZE)
    assert cg.base_resolution == [8, 8, 40]
    assert set(info) >= {"data_dir", "scales", "verify_mesh", "app"}
    assert cg.get_oldest_timestamp() == world.GRAPH_CREATED


def test_roots_binary_matches_single_lookups_and_stop_layer(cg, cells):
    svs = cells.pt_supervoxel_id.to_numpy()[:20]
    roots = cg.get_roots(svs)
    assert roots.dtype == np.uint64 and len(roots) == 20
    assert [int(cg.get_root_id(s)) for s in svs[:3]] == roots[:3].tolist()
    assert roots.tolist() == cells.pt_root_id.to_numpy()[:20].tolist()
    l2 = cg.get_roots(svs, stop_layer=2)
    assert (l2 >> np.uint64(56) == 2).all()
    assert int(cg.get_root_id(svs[0], level2=True)) == int(l2[0])
    assert len(cg.get_roots([])) == 0  # an empty body answers an empty body


def test_roots_binary_accepts_iso_timestamps_and_zero(http, cells):
    body = np.array([0, cells.pt_supervoxel_id[0]], dtype="<u8").tobytes()
    response = http.post(f"{B}/roots_binary", content=body,
                         params={"timestamp": "2026-01-01T00:00:00Z"})
    assert response.status_code == 200
    assert np.frombuffer(response.content, "<u8").tolist()[0] == 0


def test_leaves_children_and_bounds(cg, cells):
    root = int(cells.pt_root_id[0])
    leaves = cg.get_leaves(root)
    assert (cg.get_roots(leaves) == root).all()
    children = cg.get_children(root)
    below = np.concatenate([cg.get_leaves(c) for c in children])
    assert sorted(below.tolist()) == sorted(leaves.tolist())
    assert len(cg.get_children(int(leaves[0]))) == 0  # a supervoxel has no children
    l2 = cg.get_leaves(root, stop_layer=2)
    assert set(cg.get_roots(leaves, stop_layer=2).tolist()) == set(l2.tolist())
    # Bounds are base voxels: the chunk of the first leaf only.
    chunk = np.array(world_chunk(int(leaves[0])))
    lo = np.asarray(GEOMETRY.voxel_offset) + chunk * np.asarray(GEOMETRY.chunk_size)
    bounds = np.stack([lo + 1, lo + np.asarray(GEOMETRY.chunk_size) - 1], axis=1)
    boxed = cg.get_leaves(root, bounds=bounds)
    assert 0 < len(boxed) <= len(leaves) and set(boxed.tolist()) <= set(leaves.tolist())
    assert all(world_chunk(int(s)) == tuple(chunk) for s in boxed)
    many = cg.get_leaves_many([root], stop_layer=2)
    assert sorted(np.asarray(many[root]).tolist()) == sorted(l2.tolist())


def world_chunk(sv: int) -> tuple[int, int, int]:
    return LAYOUT.chunk_coordinates(np.uint64(sv))


def test_history_reads_over_the_generators_edits(cg, cave):
    """The synthetic graph carries proofreading edits between versions: each one's roots are
    visible through delta_roots, lineage, past ids, timestamps and change logs."""
    op = graph(cave).operations()[-1]
    when = op.timestamp
    old, new = cg.get_delta_roots(when - timedelta(seconds=1), when)
    assert set(old.tolist()) == set(op.old_root_ids.tolist())
    assert set(new.tolist()) == set(op.new_root_ids.tolist())
    root = int(op.new_root_ids[0])
    lineage = cg.get_lineage_graph(root, timestamp_past=when - timedelta(seconds=1))
    links = {(link["source"], link["target"]) for link in lineage["links"]}
    assert {(int(o), root) for o in op.old_root_ids} <= links
    node = next(n for n in lineage["nodes"] if n["id"] == root)
    assert node["timestamp"] == pytest.approx(when.timestamp())
    past = cg.get_past_ids([root], timestamp_past=when - timedelta(seconds=1))
    assert set(past["past_id_map"][root]) == set(op.old_root_ids.tolist())
    assert cg.get_root_timestamps([root])[0] == when
    latest = cg.get_root_timestamps(op.old_root_ids, latest=True)
    assert all(t == when - timedelta(milliseconds=1) for t in latest)
    assert cg.is_latest_roots(op.old_root_ids).tolist() == [False] * len(op.old_root_ids)
    assert not cg.is_latest_roots([root], timestamp=when - timedelta(seconds=1))[0]
    log = cg.get_tabular_change_log([root], filtered=False)[root]
    assert op.id in log.operation_id.tolist()
    assert log.timestamp.max() == int(when.timestamp() * 1000)
    assert op.id in cg.get_change_log(root, filtered=False)["operations_ids"]
    details = cg.get_operation_details([op.id])[str(op.id)]
    assert details["roots"] == op.new_root_ids.tolist() and details["user"] == op.user_id


def test_delta_roots_with_nothing_changed_is_empty(cg):
    past = datetime.now(UTC) - timedelta(microseconds=10)
    old, new = cg.get_delta_roots(past)
    assert len(old) == 0 and len(new) == 0


def test_latest_and_suggested_roots(cg, cave):
    op = next(o for o in graph(cave).operations() if o.kind == "merge")
    old = int(op.old_root_ids[0])
    latest = cg.get_latest_roots(old)
    assert len(latest) >= 1 and cg.is_latest_roots(latest).all()
    assert cg.suggest_latest_roots(old) in set(latest.tolist())


def test_valid_nodes(cg, cells):
    root = int(cells.pt_root_id[0])
    assert cg.is_valid_nodes([root, 12345, 0]).tolist() == [True, False, False]


def test_lineage_graph_for_one_root_and_the_timestamp_quirk(http, cells):
    root = int(cells.pt_root_id[0])
    one = http.get(f"{B}/root/{root}/lineage_graph").json()
    many = http.post(f"{B}/lineage_graph_multiple", json={"root_ids": [root]},
                     params={"timestamp": "1780000000.0", "name": "timestamp_future"}).json()
    assert one["nodes"][0]["id"] == many["nodes"][0]["id"] == root


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("route", [
    ("get", "/segmentation/table/nope/info"),
    ("get", "/segmentation/api/v1/table/nope/node/1/root"),
    ("post", "/segmentation/api/v1/table/nope/roots_binary"),
    ("post", "/segmentation/api/v1/table/nope/merge"),
])
def test_unknown_table_is_a_404_naming_the_known_ones(http, route):
    method, path = route
    assert_error(getattr(http, method)(path), 404, "'nope'", TABLE)


@pytest.mark.parametrize("request_args, status, needle", [
    (("get", f"{B}/node/12345/root"), 404, "12345"),
    (("get", f"{B}/node/abc/root"), 400, "node_id"),
    (("get", f"{B}/node/-5/root"), 400, "negative"),
    (("get", f"{B}/node/12345/leaves"), 404, "12345"),
    (("post", f"{B}/roots_binary", {"content": b"abc"}), 400, "uint64"),
    (("post", f"{B}/roots_binary", {"content": np.array([7], "<u8").tobytes()}), 404, "7"),
    (("post", f"{B}/roots_binary", {"params": {"timestamp": "1000.0"}}), 400, "before"),
    (("post", f"{B}/roots_binary", {"params": {"timestamp": "yesterday"}}), 400, "timestamp"),
    (("post", f"{B}/roots_binary", {"params": {"stop_layer": "99"}}), 400, "stop_layer"),
    (("post", f"{B}/is_latest_roots", {"content": b"{not json"}), 400, "JSON"),
    (("post", f"{B}/is_latest_roots", {"json": {"node_ids": "1,2"}}), 400, "node_ids"),
    (("post", f"{B}/is_latest_roots", {"json": {"node_ids": [1.5]}}), 400, "node_ids"),
    (("post", f"{B}/root_timestamps", {"json": {"node_ids": [12345]}}), 400, "not root"),
    (("post", f"{B}/root_timestamps", {"json": {"node_ids": [UNKNOWN_ROOT]}}), 404,
     str(UNKNOWN_ROOT)),
    (("get", f"{B}/delta_roots", {"params": {"timestamp_future": "1000"}}), 400, "before"),
    (("get", f"{B}/node/1/leaves", {"params": {"bounds": "1-2_3"}}), 400, "bounds"),
    (("get", f"{B}/operation_details", {"params": {"operation_ids": "[999999]"}}), 404,
     "999999"),
    (("get", f"{B}/operation_details", {"params": {"operation_ids": "[x]"}}), 400,
     "operation_ids"),
])
def test_bad_reads_are_4xx_json(http, request_args, status, needle):
    method, path, *kwargs = request_args
    assert_error(getattr(http, method)(path, **(kwargs[0] if kwargs else {})), status, needle)


def bad_edits(cells, cave) -> list[tuple[str, object, int, str]]:
    """(route, body, status, message fragment) of edits that must be refused."""
    a, b = cells.iloc[0], cells.iloc[1]
    sv_a, sv_b, root_a = int(a.pt_supervoxel_id), int(b.pt_supervoxel_id), int(a.pt_root_id)
    leaves = graph(cave).get_leaves(root_a)
    other = int(next(s for s in leaves if s != sv_a))
    stale = int(graph(cave).operations()[0].old_root_ids[0])
    pa, pb = nm(a.pt_position), nm(b.pt_position)
    return [
        ("merge", {"a": 1}, 400, "[id, x, y, z]"),
        ("merge", [[sv_a, *pa]], 400, "exactly two"),
        ("merge", [[sv_a, *pa], [sv_b, *pb], [sv_b, *pb]], 400, "exactly two"),
        ("merge", [[float(sv_a), *pa], [sv_b, *pb]], 400, "uint64"),
        ("merge", [[str(sv_a), *pa], [sv_b, *pb]], 400, "[id, x, y, z]"),
        ("merge", [[sv_a, *pa], [UNKNOWN_SV, *pb]], 404, str(UNKNOWN_SV)),
        ("merge", [[sv_a, *pa], [12345, *pb]], 400, "layer 1"),
        ("merge", [[sv_a, *pa], [sv_a, *pa]], 400, "itself"),
        ("merge", [[sv_a, *pa], [other, *pa]], 400, "same segment"),
        ("merge", [[root_a, *pa], [root_a, *pb]], 400, "same segment"),
        ("merge", [[stale, *pa], [sv_b, *pb]], 400, "not current"),
        ("split", [[sv_a, *pa]], 400, "sources"),
        ("split", {"sources": [], "sinks": [[sv_b, *pb]]}, 400, "non-empty"),
        ("split", {"sources": [[sv_a, *pa]], "sinks": [[sv_b, *pb]]}, 400, "one segment"),
        ("split", {"sources": [[sv_a, *pa]], "sinks": [[sv_a, *pa]]}, 400, "both source"),
        ("split", {"sources": [[root_a, *pa]], "sinks": [[root_a, *pa]]}, 400,
         "same supervoxel"),
        ("split", {"sources": [[stale, *pa]], "sinks": [[sv_b, *pb]]}, 400, "not current"),
        ("split", {"sources": [[sv_a, *pa]], "sinks": [[UNKNOWN_ROOT, *pb]]}, 404,
         str(UNKNOWN_ROOT)),
        ("undo", {"operation_id": 999999}, 404, "999999"),
        ("undo", {"operation": 1}, 400, "operation_id"),
        ("redo", {"operation_id": 1}, 400, "nothing to redo"),
    ]


def test_bad_edits_are_refused_and_change_nothing(http, cave, cells):
    before = snapshot(cave, cells)
    for route, body, status, needle in bad_edits(cells, cave):
        response = http.post(f"{B}/{route}", json=body)
        assert_error(response, status, needle)
    response = http.post(f"{B}/merge", content=b"[[1, 2")
    assert_error(response, 400, "JSON")
    a, b = cells.iloc[0], cells.iloc[1]
    valid = [[int(a.pt_supervoxel_id), *nm(a.pt_position)],
             [int(b.pt_supervoxel_id), *nm(b.pt_position)]]
    response = http.post(f"{B}/merge", json=valid, headers={"Authorization": "Bearer nope"})
    assert_error(response, 401, "token")
    assert snapshot(cave, cells) == before


def test_edits_need_a_token_that_may_edit(env, cave, cells):
    url = str(env[2].base_url).rstrip("/")
    a, b = (int(s) for s in cells.pt_supervoxel_id.iloc[:2])
    body = [[a, 0, 0, 0], [b, 0, 0, 0]]
    before = snapshot(cave, cells)
    assert_error(httpx.post(f"{url}{B}/merge", json=body), 401, "token")
    reader = cave.auth.create_token(cave.auth.ensure_user("just_reading"))
    assert_error(httpx.post(f"{url}{B}/merge", json=body,
                            headers={"Authorization": f"Bearer {reader}"}), 403, "edit")
    assert snapshot(cave, cells) == before
    assert httpx.post(f"{url}{B}/roots_binary", content=b"").status_code == 200
