"""Who may do what, route by route: (anonymous, reader, owner, group member, admin) ×
(PUBLIC, GROUP, PRIVATE) tables × (read, write), and public vs private datastacks.

Expected outcomes follow docs/auth.md: reading a table needs the datastack readable and the
table's read permission; writing needs the right to edit the datastack and the table's
write permission; changing or deleting a table is for its owner or an admin. 401 without a
token, 403 with one that lacks the right."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import httpx
import pytest

from opencave.api import create_app
from opencave.auth import Level
from opencave.info import Datastack
from opencave.instance import OpenCave
from tests.conftest import LiveServer

DS, PRIVATE_DS, VOLUME = "minnie65_public", "minnie65_lab", "minnie65_phase3"
WHO = ("anonymous", "reader", "owner", "member", "admin")
PERMISSIONS = ("PUBLIC", "GROUP", "PRIVATE")
A = f"/annotation/api/v2/aligned_volume/{VOLUME}"
M = "/materialize/api/v3/datastack"


@pytest.fixture(scope="module")
def world(tmp_path_factory, synth_dir):
    data = tmp_path_factory.mktemp("perm") / "data"
    shutil.copytree(synth_dir, data)
    cave = OpenCave(data)
    auth = cave.auth
    users = {"owner": auth.ensure_user("olga"), "member": auth.ensure_user("max"),
             "reader": auth.ensure_user("rita"), "admin": auth.ensure_user("ada", admin=True)}
    for name in ("owner", "member"):
        auth.add_to_group(users[name], "lab")
    auth.grant(DS, "lab", Level.EDIT)
    public = cave.info.datastack(DS)
    cave.info.add_datastack(Datastack(**{**public.__dict__, "name": PRIVATE_DS,
                                         "public": False}))
    auth.grant(PRIVATE_DS, "lab", Level.VIEW)
    tokens = {name: auth.create_token(user) for name, user in users.items()}
    owner = auth.user("olga")  # with its groups
    annotations = cave.annotations()
    for permission in PERMISSIONS:
        annotations.create_table(owner, VOLUME, {
            "schema_type": "bound_tag", "table_name": f"t_{permission.lower()}",
            "metadata": {"voxel_resolution_x": 4, "voxel_resolution_y": 4,
                         "voxel_resolution_z": 40, "description": permission,
                         "read_permission": permission, "write_permission": permission}})
        annotations.post(owner, VOLUME, f"t_{permission.lower()}",
                         [{"pt": {"position": [200_000, 150_000, 20_000]}, "tag": "x"}])
    version = cave.materializer().materialize(DS, datetime.now(UTC)).version.version
    with LiveServer(create_app(cave)) as live:
        yield live.url, tokens, version
    cave.close()


def call(world, who: str, method: str, path: str, **kwargs) -> int:
    url, tokens, _ = world
    headers = {"Authorization": f"Bearer {tokens[who]}"} if who != "anonymous" else {}
    return httpx.request(method, url + path, headers=headers, timeout=60, **kwargs).status_code


def may_read(who: str, permission: str) -> bool:
    return (permission == "PUBLIC" or who in ("owner", "admin")
            or (permission == "GROUP" and who == "member"))


def may_write(who: str, permission: str) -> bool:
    if who in ("owner", "admin"):
        return True
    return who == "member" and permission in ("PUBLIC", "GROUP")


def expected(allowed: bool, who: str) -> int:
    return 200 if allowed else (401 if who == "anonymous" else 403)


@pytest.mark.parametrize("permission", PERMISSIONS)
@pytest.mark.parametrize("who", WHO)
def test_reading_a_table(world, who, permission):
    table = f"t_{permission.lower()}"
    _, _, version = world
    want = expected(may_read(who, permission), who)
    now = datetime.now(UTC).isoformat()
    routes = [
        ("GET", f"{A}/table/{table}", {}),
        ("GET", f"{A}/table/{table}/count", {}),
        ("GET", f"{A}/table/{table}/annotations", {"params": {"annotation_ids": "1"}}),
        ("GET", f"{M}/{DS}/version/{version}/table/{table}/metadata", {}),
        ("GET", f"/materialize/api/v2/datastack/{DS}/version/{version}/table/{table}/count", {}),
        ("POST", f"{M}/{DS}/version/{version}/table/{table}/query", {"json": {}}),
        ("POST", f"{M}/{DS}/query", {"json": {"table": table, "timestamp": now}}),
    ]
    for method, path, kwargs in routes:
        assert call(world, who, method, path, **kwargs) == want, (method, path)
    listed = httpx.get(world[0] + f"{A}/table", headers=(
        {"Authorization": f"Bearer {world[1][who]}"} if who != "anonymous" else {})).json()
    assert (table in listed) == may_read(who, permission)


@pytest.mark.parametrize("permission", PERMISSIONS)
@pytest.mark.parametrize("who", WHO)
def test_writing_a_table(world, who, permission):
    table = f"t_{permission.lower()}"
    want = expected(may_write(who, permission), who)
    row = {"pt": {"position": [200_000, 150_000, 20_000]}, "tag": who}
    status = call(world, who, "POST", f"{A}/table/{table}/annotations",
                  json={"annotations": [row]})
    assert status == want
    if status == 200:
        url, tokens, _ = world
        headers = {"Authorization": f"Bearer {tokens[who]}"}
        [new_id] = httpx.post(url + f"{A}/table/{table}/annotations", headers=headers,
                              json={"annotations": [row]}).json()
        assert call(world, who, "PUT", f"{A}/table/{table}/annotations",
                    json={"annotations": [{**row, "id": new_id}]}) == 200
        assert call(world, who, "DELETE", f"{A}/table/{table}/annotations",
                    json={"annotation_ids": [new_id + 1]}) == 200
    else:
        for method, body in (("PUT", {"annotations": [{**row, "id": 1}]}),
                             ("DELETE", {"annotation_ids": [1]})):
            assert call(world, who, method, f"{A}/table/{table}/annotations", json=body) == want


@pytest.mark.parametrize("who", WHO)
def test_changing_or_deleting_a_table_is_for_its_owner_or_an_admin(world, who):
    allowed = who in ("owner", "admin")
    want = expected(allowed, who)
    body = {"table_name": "t_public", "metadata": {"description": f"by {who}"}}
    assert call(world, who, "PUT", f"{A}/table", json=body) == want
    creating = {"schema_type": "bound_tag", "table_name": f"new_{who}", "metadata": {
        "voxel_resolution_x": 4, "voxel_resolution_y": 4, "voxel_resolution_z": 40,
        "description": "d"}}
    can_create = who in ("owner", "member", "admin")
    assert call(world, who, "POST", f"{A}/table", json=creating) == expected(can_create, who)
    if can_create:
        status = call(world, who, "DELETE", f"{A}/table/new_{who}")
        assert status == 200


@pytest.mark.parametrize("who", WHO)
def test_private_datastacks(world, who):
    readable = who in ("owner", "member", "admin")
    want = expected(readable, who)
    for path in (f"{M}/{PRIVATE_DS}/versions", f"/info/api/v2/datastack/full/{PRIVATE_DS}"):
        assert call(world, who, "GET", path) == want, path
    live = {"table": "nucleus_detection_v0", "timestamp": datetime.now(UTC).isoformat()}
    assert call(world, who, "POST", f"{M}/{PRIVATE_DS}/query", json=live) == want
    assert call(world, who, "GET", f"{M}/{DS}/versions") == 200


def test_materialization_needs_the_right_to_edit(world):
    for who in ("anonymous", "reader"):
        assert call(world, who, "POST", f"{M}/{DS}/versions", json={}) == expected(False, who)


def test_bad_and_revoked_tokens_are_401(world):
    url, tokens, _ = world
    bad = httpx.get(url + f"{M}/{DS}/versions", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.json()["error"] == "unauthorized"
    cookie = httpx.get(url + f"{M}/{DS}/versions",
                       cookies={"middle_auth_token": tokens["reader"]})
    assert cookie.status_code == 200
