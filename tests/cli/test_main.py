"""The command line as a user runs it: real subprocesses, a real port."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx

from opencave.storage import segments
from opencave.synth import world
from tests.conftest import free_port

OPENCAVE = [sys.executable, "-m", "opencave.cli"]


def wait_healthy(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server never became healthy")


def test_serve_answers_health_and_the_datastack(synth_dir: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([*OPENCAVE, "serve", "--data", str(synth_dir), "--port",
                                str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, process)
        info = httpx.get(f"{url}/info/api/v2/datastack/full/minnie65_public").json()
        assert info["local_server"] == url
        assert info["segmentation_source"] == f"graphene://{url}/segmentation/table/minnie3_v1"
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_serve_refuses_a_result_cache_that_is_not_a_size(synth_dir: Path):
    result = subprocess.run([*OPENCAVE, "serve", "--data", str(synth_dir), "--result-cache",
                             "lots"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--result-cache must be a size such as 2GiB, 500MB or 0" in result.stdout + result.stderr


def test_demo_builds_serves_and_prints_how_to_connect(tmp_path: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [*OPENCAVE, "demo", "--data", str(tmp_path / "demo"), "--port", str(port),
         "--synapses", "12000"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_healthy(url, process, seconds=300)
        process.terminate()
        out, _ = process.communicate(timeout=20)
    finally:
        process.kill()
    assert "from caveclient import CAVEclient" in out
    assert f'client = CAVEclient("minnie65_public", server_address="{url}")' in out


def test_synth_rejects_tiny_datastacks(tmp_path: Path):
    result = subprocess.run([*OPENCAVE, "synth", "--out", str(tmp_path / "x"), "--synapses",
                             "100"], capture_output=True, text=True)
    assert result.returncode == 2 and "10,000" in result.stderr


def test_materialize_runs_beside_a_server_which_lists_the_new_version(synth_dir, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([*OPENCAVE, "serve", "--data", str(data), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(url, server)
        versions = f"{url}/materialize/api/v3/datastack/minnie65_public/versions"
        assert 1719 not in httpx.get(versions).json()
        done = subprocess.run([*OPENCAVE, "materialize", "--data", str(data)],
                              capture_output=True, text=True, check=True)
        assert done.stdout.startswith("version 1719 at ")
        assert 1719 in httpx.get(versions).json()
        query = f"{url}/materialize/api/v3/datastack/minnie65_public/version/1719/table/"
        assert httpx.post(query + "nucleus_detection_v0/query", json={}).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_compact_reports_every_version(synth_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)  # made by this opencave: compacted as it was made
    result = subprocess.run([*OPENCAVE, "compact", "--data", str(data)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    reported = [line for line in result.stderr.splitlines() if line.startswith("version ")]
    assert len(reported) == len(world.VERSIONS)
    assert all(before == after for before, after in (
        re.match(r"version \d+: (\d+) parts → (\d+)", line).groups() for line in reported))
    assert "0.0 MB written" in result.stdout


def test_rewrite_copies_brings_older_serving_copies_to_the_current_layout(synth_dir, tmp_path,
                                                                          monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    bulk = next((data / "tables" / "minnie65_phase3" / "synapses_pni_2").glob("bulk-*.parquet"))
    with monkeypatch.context() as older:  # the copy as opencave wrote it before 64 KiB blocks
        older.setattr(segments, "SERVING_BLOCK_SIZE", 262_144)
        assert segments.rewrite_serving_copy(bulk, "pre_pt_root_id")

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([*OPENCAVE, "rewrite-copies", "--data", str(data)],
                              capture_output=True, text=True, check=True)

    first = run()
    assert first.stdout.splitlines()[-1] == "rewrote 1 serving copies"
    assert bulk.name in first.stderr
    with duckdb.connect(str(segments.serving_path(bulk)), read_only=True) as con:
        assert segments.block_size(con) == segments.SERVING_BLOCK_SIZE
    assert run().stdout.splitlines()[-1] == "rewrote 0 serving copies"


def test_gc_waits_for_servers_to_stop_then_removes_only_what_no_version_uses(synth_dir,
                                                                          tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    left = data / "tables" / "minnie65_phase3" / "synapses_pni_2" / "delta-0a1b2c3d4e5f.parquet"
    left.write_bytes(b"x" * 1000)  # as a materialization killed before publishing leaves
    port = free_port()
    server = subprocess.Popen([*OPENCAVE, "serve", "--data", str(data), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
        refused = subprocess.run([*OPENCAVE, "gc", "--data", str(data)], capture_output=True,
                                 text=True)
        assert refused.returncode == 2 and "another opencave process" in refused.stderr
        assert left.exists()
    finally:
        server.terminate()
        server.wait(timeout=20)
    listed = subprocess.run([*OPENCAVE, "gc", "--data", str(data), "--dry-run"],
                            capture_output=True, text=True, check=True)
    # the synth (versions made as a server makes them) left nothing behind: only that file
    assert listed.stderr.split() == [
        "tables/minnie65_phase3/synapses_pni_2/delta-0a1b2c3d4e5f.parquet"]
    assert "would remove (dry run)" in listed.stdout and left.exists()
    done = subprocess.run([*OPENCAVE, "gc", "--data", str(data)], capture_output=True,
                          text=True, check=True)
    assert done.stdout.startswith("removed ") and not left.exists()
    again = subprocess.run([*OPENCAVE, "gc", "--data", str(data)], capture_output=True,
                           text=True, check=True)
    assert again.stdout.startswith("removed 0 files")
    server = subprocess.Popen([*OPENCAVE, "serve", "--data", str(data), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # every version still answers
        wait_healthy(f"http://127.0.0.1:{port}", server)
        base = f"http://127.0.0.1:{port}/materialize/api/v3/datastack/minnie65_public/version"
        for version, _ in world.VERSIONS:
            count = httpx.get(f"{base}/{version}/table/synapses_pni_2/count")
            assert count.status_code == 200 and count.json() > 0
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_a_killed_synth_resumes_where_it_stopped(tmp_path: Path):
    """``kill -9`` once the segmentation graph is built (the live store and DuckDB left
    mid-write), then the same command: it resumes after that step and completes."""
    out = tmp_path / "ds"
    command = [*OPENCAVE, "synth", "--out", str(out), "--synapses", "20000", "--seed", "5"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / ".synth-checkpoint" / "state.json"
    deadline = time.monotonic() + 120
    while '"segmentation"' not in (state.read_text() if state.exists() else ""):
        assert process.poll() is None and time.monotonic() < deadline, "never got that far"
        time.sleep(0.05)
    process.kill()
    process.wait()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming the build" in done.stdout
    assert "versions 117, 343" in done.stdout and not (out / ".synth-checkpoint").exists()
