"""A writer killed mid-batch (SIGKILL, no chance to clean up) leaves no partial batch: each
batch is one transaction, so after a restart a table holds all of it or none of it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from contextlib import suppress

import httpx

from opencave.auth import Level
from opencave.instance import OpenCave
from tests.cli.test_main import wait_healthy
from tests.conftest import free_port

VOLUME, TABLE = "minnie65_phase3", "crash_tags"
BATCH = 150_000


def rows_in(data) -> int:
    cave = OpenCave(data)
    try:
        table = cave.tables.get(VOLUME, TABLE)
        return cave.rows.count(table)[0]
    finally:
        cave.close()


def test_a_killed_writer_leaves_all_or_nothing(tmp_path, synth_dir):
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    cave = OpenCave(data)
    user = cave.auth.ensure_user("writer")
    cave.auth.add_to_group(user, "lab")
    cave.auth.grant("minnie65_public", "lab", Level.EDIT)
    token = cave.auth.create_token(cave.auth.user("writer"))
    cave.annotations().create_table(cave.auth.user("writer"), VOLUME, {
        "schema_type": "bound_tag", "table_name": TABLE, "metadata": {
            "voxel_resolution_x": 4, "voxel_resolution_y": 4, "voxel_resolution_z": 40,
            "description": "crash test"}})
    cave.close()
    batch = {"annotations": [{"pt": {"position": [200_000 + i % 1000, 150_000, 20_000]},
                              "tag": f"t{i}"} for i in range(BATCH)]}
    committed = 0
    outcomes = []
    # killed at various points of the batch, then once after the server answered
    for delay in (0.5, 1.5, 2.5, 4.0, 6.0, None):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, "-m", "opencave.cli", "serve", "--data",
                                   str(data), "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_healthy(url, server)
        writer = threading.Thread(target=_post, args=(url, token, batch), daemon=True)
        writer.start()
        writer.join(timeout=delay)
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        count = rows_in(data)
        assert count in (committed, committed + BATCH), (delay, count)
        outcomes.append(count > committed)
        committed = count
    # the earliest kill loses the batch, an answered one is committed; nothing in between
    assert not outcomes[0] and outcomes[-1], outcomes


def _post(url: str, token: str, batch: dict) -> None:
    with suppress(httpx.HTTPError):  # the server is killed under us
        httpx.post(f"{url}/annotation/api/v2/aligned_volume/{VOLUME}/table/{TABLE}/annotations",
                   json=batch, headers={"Authorization": f"Bearer {token}"}, timeout=120)
