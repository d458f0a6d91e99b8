"""Shared fixtures: a small synthetic datastack built once per session, a real uvicorn
server for it on a free loopback port, and real caveclient clients pointed at it.

caveclient writes a datastack→server cache and reads tokens under ``~``; HOME points at a
throwaway directory so tests never touch the user's files.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

os.environ["HOME"] = tempfile.mkdtemp(prefix="opencave-test-home-")
# The test datastack has 30,000 synapses: under the default threshold (200,000 rows) every
# table would be compacted whole each version, and no test would see masks or tiers.
os.environ["OPENCAVE_COMPACT_WHOLE_ROWS"] = "20000"

from opencave.api import create_app
from opencave.instance import OpenCave
from opencave.settings import Settings
from opencave.synth import build

TEST_SYNAPSES = 30_000  # see OPENCAVE_COMPACT_WHOLE_ROWS above
TEST_SEED = 7


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn serving an app in a background thread on a free loopback port."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        assert httpx.get(f"{self.url}/health").status_code == 200
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def assert_error(response: httpx.Response, status: int, *needles: str) -> dict:
    """A 4xx in the one JSON error shape, whose message names each of ``needles``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) >= {"error", "message"}
    for needle in needles:
        assert needle in body["message"], body["message"]
    return body


def editor_token(cave: OpenCave, name: str = "editor") -> str:
    """A token for a user (created if new) of a group that may edit minnie65_public."""
    from opencave.auth import Level

    cave.auth.add_to_group(cave.auth.ensure_user(name), "proofreaders")
    cave.auth.grant("minnie65_public", "proofreaders", Level.EDIT)
    return cave.auth.create_token(cave.auth.user(name))


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "minnie"
    build(out, synapses_total=TEST_SYNAPSES, seed=TEST_SEED, progress=False)
    return out


@pytest.fixture(scope="session")
def cave(synth_dir: Path) -> Iterator[OpenCave]:
    instance = OpenCave(Settings(data_dir=synth_dir))
    yield instance
    instance.close()


@pytest.fixture(scope="session")
def server(cave: OpenCave) -> Iterator[str]:
    with LiveServer(create_app(cave)) as live:
        yield live.url


@pytest.fixture
def client(server: str):  # type: ignore[no-untyped-def]
    from caveclient import CAVEclient

    return CAVEclient("minnie65_public", server_address=server)
