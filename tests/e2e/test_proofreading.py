"""A proofreading session through the unmodified caveclient: merge, split (by supervoxels and
by root id + coordinates), undo, redo — checking after every step the roots, leaves, root
status, lineage, past ids, delta roots, root timestamps and change logs, and that the
annotations follow (live queries "as of now", a new materialized version). Then several
clients editing at once.

Each test edits a private copy of the synthetic datastack."""

from __future__ import annotations

import shutil
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from caveclient import CAVEclient

from opencave.api import create_app
from opencave.instance import OpenCave
from opencave.synth import world
from opencave.synth.geometry import GEOMETRY, LAYOUT
from tests.conftest import LiveServer, editor_token

DS = world.DATASTACK
TABLE = world.SEGMENTATION_TABLE
NM = np.asarray(world.VOXEL_RESOLUTION)  # annotation voxels -> nm


@dataclass
class Env:
    cave: OpenCave
    url: str

    def client(self) -> CAVEclient:
        return CAVEclient(DS, server_address=self.url, auth_token=editor_token(self.cave))

    @property
    def graph(self):  # type: ignore[no-untyped-def]
        return self.cave.segmentation(TABLE)


@pytest.fixture
def env(synth_dir, tmp_path) -> Iterator[Env]:
    copy = tmp_path / "minnie"
    shutil.copytree(synth_dir, copy)
    cave = OpenCave(copy)
    with LiveServer(create_app(cave)) as live:
        yield Env(cave, live.url)
    cave.close()


def now() -> datetime:
    return datetime.now(UTC)


def neurons(client: CAVEclient) -> pd.DataFrame:
    nuclei = client.materialize.query_table("nucleus_detection_v0")
    return nuclei[nuclei.pt_root_id != 0].drop_duplicates("pt_root_id").reset_index(drop=True)


def chunk_of(sv: int) -> np.ndarray:
    return np.array(LAYOUT.chunk_coordinates(np.uint64(sv)))


def chunk_center_nm(sv: int) -> list[float]:
    """The centre of a supervoxel's layer-1 chunk, in nm."""
    size = np.asarray(GEOMETRY.chunk_size)
    voxel = np.asarray(GEOMETRY.voxel_offset) + (chunk_of(sv) + 0.5) * size
    return (voxel * np.asarray(GEOMETRY.resolution)).tolist()


def farthest_leaf(cg, root: int, sv: int) -> int:  # type: ignore[no-untyped-def]
    leaves = cg.get_leaves(root)
    dist = [np.abs(chunk_of(int(s)) - chunk_of(sv)).sum() for s in leaves]
    return int(leaves[int(np.argmax(dist))])


def grouping(cg, svs, timestamp=None) -> dict[int, frozenset[int]]:  # type: ignore[no-untyped-def]
    groups: dict[int, set[int]] = defaultdict(set)
    for sv, root in zip(svs, cg.get_roots(svs, timestamp=timestamp).tolist(), strict=True):
        groups[root].add(int(sv))
    return {r: frozenset(g) for r, g in groups.items()}


def check_step(cg, op_id: int, before: datetime, old: set[int], new: set[int],  # type: ignore[no-untyped-def]
               members: set[int]) -> dict[int, frozenset[int]]:
    """Everything caveclient can ask about one edit that turned the roots ``old`` (whose
    supervoxels are ``members``) into ``new``. Returns the new grouping."""
    svs = np.array(sorted(members), dtype=np.uint64)
    after = grouping(cg, svs)
    assert set(after) == new
    for root, group in after.items():
        assert set(cg.get_leaves(root).tolist()) == group  # leaves partition the members
    assert set(grouping(cg, svs, timestamp=before)) == old
    ids = [*sorted(old), *sorted(new)]
    latest = [r in new for r in ids]
    assert cg.is_latest_roots(ids).tolist() == latest
    assert cg.is_latest_roots(ids, timestamp=before).tolist() == [not x for x in latest]
    for root in new:
        lineage = cg.get_lineage_graph(root)
        links = {(link["source"], link["target"]) for link in lineage["links"]}
        assert {(o, root) for o in old} <= links
        assert set(cg.get_past_ids([root], timestamp_past=before)["past_id_map"][root]) == old
        log = cg.get_tabular_change_log([root], filtered=False)[root]
        assert op_id in log.operation_id.tolist()
        assert op_id in cg.get_change_log(root, filtered=False)["operations_ids"]
    gone, born = cg.get_delta_roots(before)
    assert (set(gone.tolist()), set(born.tolist())) == (old, new)
    created = cg.get_root_timestamps(sorted(new))
    assert all(before < t <= now() for t in created) and len(set(created)) == 1
    ended = cg.get_root_timestamps(sorted(old), latest=True)
    assert all(t == created[0] - timedelta(milliseconds=1) for t in ended)
    return after


def live_roots_follow(client: CAVEclient, when: datetime) -> pd.DataFrame:
    """Every nucleus root of a live query "as of ``when``" is its supervoxel's root then."""
    live = client.materialize.query_table("nucleus_detection_v0", timestamp=when)
    live = live[live.pt_supervoxel_id != 0]
    expected = client.chunkedgraph.get_roots(live.pt_supervoxel_id.to_numpy(), timestamp=when)
    assert (live.pt_root_id.to_numpy() == expected.astype(np.int64)).all()
    return live.set_index("id")


def redo(client: CAVEclient, operation_id: int) -> dict:
    """caveclient 8.2.1 has no redo call; the route is PyChunkedGraph's."""
    cg = client.chunkedgraph
    url = f"{client.server_address}/segmentation/api/v1/table/{cg.table_name}/redo"
    response = cg.session.post(url, json={"operation_id": operation_id})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_proofreading_session(env: Env) -> None:
    client = CAVEclient(DS, server_address=env.url, auth_token=editor_token(env.cave, "ada"))
    ada = env.cave.auth.user("ada")
    cg = client.chunkedgraph
    cells = neurons(client)
    a, b = cells.iloc[0], cells.iloc[1]
    sv_a, sv_b = int(a.pt_supervoxel_id), int(b.pt_supervoxel_id)
    root_a, root_b = int(a.pt_root_id), int(b.pt_root_id)
    leaves_ab = set(cg.get_leaves(root_a).tolist()) | set(cg.get_leaves(root_b).tolist())
    t0 = now()

    # 1. merge two neurons (positions in annotation voxels; caveclient sends nm)
    merged = cg.do_merge([sv_a, sv_b], [a.pt_position, b.pt_position])
    assert set(merged) == {"operation_id", "new_root_ids"}
    [root_m] = merged["new_root_ids"]
    check_step(cg, merged["operation_id"], t0, {root_a, root_b}, {root_m}, leaves_ab)
    details = cg.get_operation_details([merged["operation_id"]])[str(merged["operation_id"])]
    assert details["added_edges"] == [sorted([sv_a, sv_b])] and details["user"] == ada.user_id
    log = cg.get_tabular_change_log([root_m])[root_m]
    assert log.user_id.tolist() == [ada.user_id] and log.user_name.tolist() == ["ada"]
    assert list(cg.get_change_log(root_m)["user_info"]) == [ada.user_id]
    assert details["source_coords"][0] == pytest.approx(
        (np.asarray(a.pt_position) * NM / GEOMETRY.resolution).tolist())
    live = live_roots_follow(client, now())
    assert live.loc[[a.id, b.id], "pt_root_id"].tolist() == [root_m, root_m]
    assert live_roots_follow(client, t0).loc[[a.id, b.id], "pt_root_id"].tolist() == [
        root_a, root_b]

    # 2. split it by supervoxels
    t1 = now()
    op, new = cg.execute_split([a.pt_position * NM], [b.pt_position * NM], root_m,
                               source_supervoxels=[sv_a], sink_supervoxels=[sv_b])
    assert len(new) == 2
    after = check_step(cg, op, t1, {root_m}, set(new), leaves_ab)
    assert len({r for r, g in after.items() if sv_a in g or sv_b in g}) == 2

    # 3. split a third neuron by root id + coordinates: soma vs. its farthest chunk
    c = cells.iloc[2]
    root_c, soma = int(c.pt_root_id), int(c.pt_supervoxel_id)
    leaves_c = set(cg.get_leaves(root_c).tolist())
    far = farthest_leaf(cg, root_c, soma)
    assert (chunk_of(far) != chunk_of(soma)).any()
    t2 = now()
    split_op, pieces = cg.execute_split([c.pt_position * NM], [chunk_center_nm(far)], root_c)
    split_groups = check_step(cg, split_op, t2, {root_c}, set(pieces), leaves_c)
    details = cg.get_operation_details([split_op])[str(split_op)]
    assert details["source_ids"] == [soma]  # the soma's supervoxel, in the soma's chunk
    [sink] = details["sink_ids"]
    assert sink in leaves_c and (chunk_of(sink) == chunk_of(far)).all()
    assert cg.get_root_id(soma) != cg.get_root_id(sink)
    root_c1 = int(cg.get_root_id(soma))
    assert root_c1 in pieces

    # 4. undo it: one new root (a new id) with the neuron's supervoxels
    t3 = now()
    undone = cg.undo_operation(split_op)
    [root_c3] = undone["new_root_ids"]
    assert root_c3 != root_c
    check_step(cg, undone["operation_id"], t3, set(pieces), {root_c3}, leaves_c)
    assert cg.get_operation_details([undone["operation_id"]])[
        str(undone["operation_id"])]["undo_operation_id"] == split_op

    # 5. redo it: the same partition, new ids again
    t4 = now()
    redone = redo(client, split_op)
    again = check_step(cg, redone["operation_id"], t4, {root_c3}, set(redone["new_root_ids"]),
                       leaves_c)
    assert set(again.values()) == set(split_groups.values())
    assert cg.get_change_log(cg.get_root_id(soma), filtered=False)["operations_ids"] == [
        split_op, undone["operation_id"], redone["operation_id"]]

    # 6. annotations follow: live queries now, old ids at the old version, a new version
    piece = int(cg.get_root_id(sink))
    piece_svs = set(cg.get_leaves(piece).tolist())
    live = live_roots_follow(client, now())
    assert live.loc[c.id, "pt_root_id"] == cg.get_root_id(soma) not in (root_c, root_c1)
    v1718 = client.materialize.query_table("synapses_pni_2", materialization_version=1718)
    # Every supervoxel stems from a synapse endpoint or a soma: the piece has synapses.
    side = next(s for s in ("post", "pre") if v1718[f"{s}_pt_supervoxel_id"].isin(piece_svs).any())
    on_piece = v1718[v1718[f"{side}_pt_supervoxel_id"].isin(piece_svs)]
    assert (on_piece[f"{side}_pt_root_id"] == root_c).all()
    live_syn = client.materialize.query_table(
        "synapses_pni_2", filter_equal_dict={f"{side}_pt_root_id": piece}, timestamp=now())
    assert set(live_syn.id) == set(on_piece.id)
    nuclei_1718 = client.materialize.query_table("nucleus_detection_v0",
                                                 materialization_version=1718).set_index("id")
    assert nuclei_1718.loc[[a.id, b.id, c.id], "pt_root_id"].tolist() == [root_a, root_b,
                                                                           root_c]

    stamp = now()
    env.cave.materializer().materialize(DS, stamp, version=1719)
    v1719 = client.materialize.query_table("synapses_pni_2", materialization_version=1719)
    assert len(v1719) == len(v1718), (len(v1719), len(v1718))
    for end in ("pre", "post"):
        svs = v1719[f"{end}_pt_supervoxel_id"].to_numpy()
        expected = cg.get_roots(svs, timestamp=stamp).astype(np.int64)
        assert (v1719[f"{end}_pt_root_id"].to_numpy() == expected).all()
    moved = v1719[v1719[f"{side}_pt_supervoxel_id"].isin(piece_svs)]
    assert set(moved.id) == set(on_piece.id) and (moved[f"{side}_pt_root_id"] == piece).all()
    nuclei_1719 = client.materialize.query_table("nucleus_detection_v0",
                                                 materialization_version=1719).set_index("id")
    assert nuclei_1719.loc[c.id, "pt_root_id"] == cg.get_root_id(soma)
    assert nuclei_1719.loc[a.id, "pt_root_id"] == cg.get_root_id(sv_a)
    # the old version is untouched
    assert client.materialize.query_table(
        "synapses_pni_2", materialization_version=1718).equals(v1718)


# -- several clients at once --------------------------------------------------------------------
def test_concurrent_clients(env: Env) -> None:
    """Four clients edit at once: merges along a chain of neurons (neighbouring merges share a
    root, others do not), splits of other neurons, and one split sent twice. Every accepted
    edit is logged exactly once, the duplicate is refused, and the final grouping is the
    model's: connected components of the atomic edges once the logged edits are applied."""
    client = env.client()
    cg = client.chunkedgraph
    cells = neurons(client).iloc[:12]
    svs = [int(s) for s in cells.pt_supervoxel_id]
    roots = [int(r) for r in cells.pt_root_id]
    jobs: list[tuple[str, int, int]] = [("merge", svs[i], svs[i + 1]) for i in range(8)]
    jobs += [("split", svs[i], farthest_leaf(cg, roots[i], svs[i])) for i in range(8, 12)]
    jobs.append(jobs[-1])  # the same split twice: only one can succeed
    model = nx.Graph()
    for root in roots:
        model.add_nodes_from(cg.get_leaves(root).tolist())
        model.add_edges_from(cg.get_subgraph(root, None)[0].tolist())
    ops_before = len(env.graph.operations())

    results = run_concurrently(env.url, [env.client() for _ in range(4)], jobs)

    ok = {i: body for i, (status, body) in results.items() if status == 200}
    refused = [(status, body) for status, body in results.values() if status != 200]
    assert len(ok) == len(jobs) - 1 and len(refused) == 1
    assert refused[0][0] == 400 and "one segment" in refused[0][1]["message"]
    op_ids = sorted(body["operation_id"] for body in ok.values())
    assert op_ids == list(range(ops_before + 1, ops_before + len(ok) + 1))
    assert len(env.graph.operations()) == ops_before + len(ok)
    details = cg.get_operation_details(op_ids)
    submitted = sorted((jobs[i][0], *sorted(jobs[i][1:])) for i in ok)
    logged = sorted(("merge" if "added_edges" in d else "split",
                     *sorted(d["source_ids"] + d["sink_ids"])) for d in details.values())
    assert logged == submitted
    for op in op_ids:  # the model applies the logged edge changes in operation order
        model.add_edges_from(details[str(op)].get("added_edges", []))
        model.remove_edges_from(details[str(op)].get("removed_edges", []))
    expected = {frozenset(c) for c in nx.connected_components(model)}
    final = grouping(cg, np.array(sorted(model.nodes), dtype=np.uint64))
    assert set(final.values()) == expected
    assert len({int(cg.get_root_id(s)) for s in svs[:9]}) == 1  # the chain is one neuron


def run_concurrently(url: str, clients: list[CAVEclient],
                     jobs: list[tuple[str, int, int]]) -> dict[int, tuple[int, dict]]:
    """Each client posts its share of the jobs (round robin), all starting together."""
    start = threading.Barrier(len(clients))
    results: dict[int, tuple[int, dict]] = {}
    base = f"{url}/segmentation/api/v1/table/{TABLE}"

    def work(k: int) -> None:
        session = clients[k].chunkedgraph.session
        start.wait()
        for i in range(k, len(jobs), len(clients)):
            kind, x, y = jobs[i]
            body = ([[x, 0, 0, 0], [y, 0, 0, 0]] if kind == "merge"
                    else {"sources": [[x, 0, 0, 0]], "sinks": [[y, 0, 0, 0]]})
            response = session.post(f"{base}/{kind}", json=body)
            results[i] = (response.status_code, response.json())

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results
