"""A lab's day with the real caveclient: an admin hands out tokens, a member creates a
private cell-type table and a group-writable tag table, posts 10^5 annotations, corrects and
deletes some; a colleague, an outsider and an anonymous client each see exactly what they
may; every change shows in live queries at once and in the next version."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from requests import HTTPError

from opencave.api import create_app
from opencave.instance import OpenCave
from tests.conftest import LiveServer

DS = "minnie65_public"
N_TAGS = 100_000


def cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "opencave.cli", *args], check=True,
                            capture_output=True, text=True)
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, synth_dir):
    data = tmp_path_factory.mktemp("lab") / "data"
    shutil.copytree(synth_dir, data)
    cave = OpenCave(data)
    with LiveServer(create_app(cave)) as live:
        tokens = {name: cli("token", "create", "--data", str(data), "--user", name)
                  for name in ("alice", "bob", "carol")}
        tokens["admin"] = cli("token", "create", "--data", str(data), "--user", "pi",
                              "--admin")
        for name in ("alice", "bob"):
            cli("group", "add-user", "--data", str(data), "lab", "--user", name)
        cli("group", "grant", "--data", str(data), "lab", DS, "--level", "edit")
        yield live.url, tokens, cave
    cave.close()


def client_for(lab, who: str | None):
    from caveclient import CAVEclient

    url, tokens, _ = lab
    return CAVEclient(DS, server_address=url, auth_token=tokens[who] if who else None)


def forbidden(call, status: int) -> None:
    with pytest.raises(HTTPError) as error:
        call()
    assert error.value.response.status_code == status


def now() -> datetime:
    return datetime.now(UTC)


def test_a_lab_day(lab):
    alice, bob, carol, anonymous = (client_for(lab, w) for w in ("alice", "bob", "carol",
                                                                  None))
    nuclei = alice.materialize.query_table("nucleus_detection_v0")
    segmented = nuclei[nuclei.pt_root_id != 0]

    # alice creates a private cell-type table on nuclei and a group-writable tag table
    alice.annotation.create_table("alice_cell_types", "cell_type_reference",
                                  "my calls", [4, 4, 40], reference_table="nucleus_detection_v0",
                                  read_permission="PRIVATE", write_permission="PRIVATE")
    alice.annotation.create_table("lab_tags", "bound_tag", "tags of the lab", [4, 4, 40],
                                  read_permission="PUBLIC", write_permission="GROUP",
                                  notice_text="work in progress")
    assert {"alice_cell_types", "lab_tags"} <= set(alice.annotation.get_tables())
    forbidden(lambda: alice.annotation.create_table("lab_tags", "bound_tag", "again",
                                                    [4, 4, 40]), 409)

    # 10^5 tags at synapse positions (one batch), a DataFrame with split positions
    synapses = alice.materialize.query_table("synapses_pni_2", split_positions=True)
    at = np.arange(N_TAGS) % len(synapses)
    tags = pd.DataFrame({
        "pt_position_x": synapses.post_pt_position_x.to_numpy()[at],
        "pt_position_y": synapses.post_pt_position_y.to_numpy()[at],
        "pt_position_z": synapses.post_pt_position_z.to_numpy()[at],
        "tag": np.where(np.arange(N_TAGS) % 2, "spine", "shaft"),
    })
    ids = alice.annotation.post_annotation_df("lab_tags", tags, position_columns=None)
    assert len(ids) == N_TAGS
    calls = [{"target_id": int(n), "classification_system": "mine", "cell_type": "23P"}
             for n in segmented.id.iloc[:20]]
    cell_ids = alice.annotation.post_annotation("alice_cell_types", calls)

    # corrections: an update supersedes, a delete hides
    changed = alice.annotation.update_annotation(
        "lab_tags", [{"id": ids[0], "pt": {"position": [int(tags.pt_position_x[0]),
                                                        int(tags.pt_position_y[0]),
                                                        int(tags.pt_position_z[0])]},
                      "tag": "soma"}])
    new_id = int(next(iter(changed.values())))
    alice.annotation.delete_annotation("lab_tags", ids[1:11])
    old = alice.annotation.get_annotation("lab_tags", [ids[0], new_id])
    assert old[0]["valid"] is False and old[0]["superceded_id"] == new_id
    assert old[1]["tag"] == "soma" and old[1]["valid"] is True
    assert alice.annotation.get_annotation_count("lab_tags") == len(ids) - 10

    # live queries see every change at once, with root ids
    live = alice.materialize.live_live_query("lab_tags", now())
    assert len(live) == len(ids) - 10
    assert set(live.id) == (set(ids) - set(ids[:11])) | {new_id}
    assert live.set_index("id").loc[new_id, "tag"] == "soma"
    roots = synapses.set_index("id").post_pt_root_id
    assert (live.pt_root_id != 0).mean() > 0.99
    expected = pd.Series(roots.to_numpy()[11:59], index=ids[11:59])
    assert (live.set_index("id").loc[expected.index, "pt_root_id"] == expected).mean() > 0.95

    # bob (same group) reads the public table and may write to it, not alice's private one
    assert len(bob.materialize.live_live_query("lab_tags", now())) == len(live)
    bob.annotation.post_annotation("lab_tags", [{"pt": {"position": [200000, 150000, 20000]},
                                                 "tag": "bob"}])
    forbidden(lambda: bob.materialize.live_live_query("alice_cell_types", now()), 403)
    forbidden(lambda: bob.annotation.post_annotation("alice_cell_types", calls[:1]), 403)
    # carol (no group) reads public tables but writes nowhere; anonymous reads only public
    assert len(carol.materialize.live_live_query("lab_tags", now())) == len(live) + 1
    forbidden(lambda: carol.annotation.post_annotation(
        "lab_tags", [{"pt": {"position": [1, 2, 3]}, "tag": "x"}]), 403)
    forbidden(lambda: anonymous.materialize.live_live_query("alice_cell_types", now()), 401)
    forbidden(lambda: anonymous.annotation.post_annotation(
        "lab_tags", [{"pt": {"position": [1, 2, 3]}, "tag": "x"}]), 401)
    assert "alice_cell_types" not in anonymous.annotation.get_tables()

    # the next version holds everything, and alice's cell types join their nuclei
    url, _, _ = lab
    forbidden(lambda: carol.materialize.session.post(
        f"{url}/materialize/api/v3/datastack/{DS}/versions", json={}).raise_for_status(), 403)
    admin = client_for(lab, "admin")
    response = admin.materialize.session.post(
        f"{url}/materialize/api/v3/datastack/{DS}/versions", json={})
    version = response.json()["version"]
    assert version == max(v for v in admin.materialize.get_versions())
    tagged = alice.materialize.query_table("lab_tags", materialization_version=version)
    assert len(tagged) == len(live) + 1
    mine = alice.materialize.query_table("alice_cell_types", materialization_version=version)
    assert sorted(mine.id) == sorted(cell_ids)
    assert set(mine.pt_root_id) <= set(segmented.pt_root_id)
    forbidden(lambda: bob.materialize.query_table("alice_cell_types",
                                                  materialization_version=version), 403)


def test_tables_can_be_described_renamed_and_retired_by_their_owner(lab):
    alice, bob = client_for(lab, "alice"), client_for(lab, "bob")
    alice.annotation.create_table("scratch", "bound_tag", "first words", [4, 4, 40],
                                  read_permission="PUBLIC", write_permission="PRIVATE")
    alice.annotation.update_metadata("scratch", description="better words",
                                     notice_text="draft")
    meta = alice.annotation.get_table_metadata("scratch")
    assert meta["description"] == "better words" and meta["notice_text"] == "draft"
    forbidden(lambda: bob.annotation.update_metadata("scratch", description="mine"), 403)
    positions = pd.DataFrame({"pt_position": [[200_000, 150_000, 20_000]] * 3,
                              "tag": ["a", "b", "c"]})
    assert len(alice.annotation.post_annotation_df("scratch", positions,
                                                   position_columns=["pt_position"])) == 3
    forbidden(lambda: bob.annotation.delete_table("scratch"), 403)
    alice.annotation.delete_table("scratch")
    assert "scratch" not in alice.annotation.get_tables()


def test_a_saved_token_file_is_used(lab, monkeypatch, tmp_path):
    from caveclient import CAVEclient

    url, tokens, _ = lab
    monkeypatch.setenv("HOME", str(tmp_path))
    CAVEclient(DS, server_address=url).auth.save_token(tokens["bob"],
                                                       write_to_server_file=True)
    bob = CAVEclient(DS, server_address=url)  # no auth_token: read from the file
    bob.annotation.create_table("bob_tags", "bound_tag", "from a token file", [4, 4, 40])
    meta = bob.annotation.get_table_metadata("bob_tags")
    assert meta["user_id"] == str(lab[2].auth.user("bob").id)


def test_bad_batches_are_rejected_whole(lab):
    alice = client_for(lab, "alice")
    before = alice.annotation.get_annotation_count("lab_tags")
    good = {"pt": {"position": [200000, 150000, 20000]}, "tag": "ok"}
    for bad, needle in (
        ({"pt": {"position": [1, 2]}, "tag": "x"}, "three numbers"),
        ({"pt": {"position": [1, 2, 3]}}, "'tag' is required"),
        ({"pt": {"position": [1, 2, 3]}, "tag": "x", "colour": "red"}, "colour"),
        ({"tag": "x"}, "'pt' is required"),
        ({"pt": {"position": [1.5, 2, 3]}, "tag": "x"}, "integer voxel"),
    ):
        with pytest.raises(HTTPError) as error:
            alice.annotation.post_annotation("lab_tags", [good] * 3 + [bad])
        assert error.value.response.status_code == 400
        assert "annotation 3" in error.value.response.text and needle in error.value.response.text
    with pytest.raises(HTTPError) as error:
        alice.annotation.post_annotation("alice_cell_types", [
            {"target_id": 1, "classification_system": "x", "cell_type": "y"}])
    assert "target_id" in error.value.response.text
    with pytest.raises(HTTPError) as error:
        alice.annotation.delete_annotation("lab_tags", [10**12])
    assert error.value.response.status_code == 400 and str(10**12) in error.value.response.text
    assert alice.annotation.get_annotation_count("lab_tags") == before
