"""A materialization killed at random points (SIGKILL: no cleanup) never leaves a partial
version visible, and running it again completes it."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta

from opencave.instance import OpenCave
from opencave.synth import world

DS = world.DATASTACK


def _materialize(data, at: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "opencave.cli", "materialize", "--data",
                             str(data), "--version", "1719", "--at", at],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _visible(data) -> list[int]:
    cave = OpenCave(data)
    try:
        return [v.version for v in cave.versions.available(DS)]
    finally:
        cave.close()


def test_killed_runs_leave_no_version_and_a_rerun_completes(tmp_path, synth_dir):
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    cave = OpenCave(data)
    nuclei = cave.materialization().query_table(DS, 1718, "nucleus_detection_v0", {})
    frame = nuclei.stream.read_all().to_pandas()
    cells = frame[frame.pt_root_id != 0].drop_duplicates("pt_root_id")
    at = world.VERSIONS[-1][1] + timedelta(days=2)
    cave.segmentation(world.SEGMENTATION_TABLE).merge(
        int(cells.pt_supervoxel_id.iloc[0]), int(cells.pt_supervoxel_id.iloc[1]),
        user_id="1", timestamp=at - timedelta(days=1))
    cave.close()
    rng = random.Random(11)
    for delay in sorted(rng.uniform(0.3, 3.0) for _ in range(5)):
        process = _materialize(data, at.isoformat())
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        visible = _visible(data)
        if 1719 in visible:
            break  # this run had finished: the version is whole (checked below)
        assert max(visible) == 1718
    if 1719 not in _visible(data):
        assert _materialize(data, at.isoformat()).wait() == 0
    cave = OpenCave(data)
    try:
        service = cave.materialization()
        for table in cave.versions.table_names(cave.versions.get(DS, 1718)):
            before = service.row_count(DS, 1718, table)
            after = service.query_table(DS, 1719, table, {}).stream.read_all()
            assert after.num_rows == service.row_count(DS, 1719, table) >= before
        merged = service.query_table(DS, 1719, "nucleus_detection_v0", {}).stream.read_all()
        ids = set(cells.id.iloc[:2])
        roots = {r["pt_root_id"] for r in merged.to_pylist() if r["id"] in ids}
        assert len(roots) == 1  # the two merged cells share a root in the new version
    finally:
        cave.close()
