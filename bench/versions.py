"""Versions benchmark (issue 4): what a new version costs after proofreading, against a full
rebuild measured in the same run, and what a query "as of a timestamp" costs against the
same query at a version.

    .venv/bin/python -m bench.versions --synapses 100000000

Works on its own copy of the synthetic datastack (``bench/.cache/versions-<N>``), which it
edits: each run adds edits and one version.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq

from opencave.auth import SYSTEM
from opencave.instance import OpenCave
from opencave.storage.segments import copy_sorted_segment, file_bytes
from opencave.synth import world
from opencave.timestamps import now

from . import datastack
from .datastack import CACHE

DS = world.DATASTACK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synapses", type=int, default=1_000_000)
    parser.add_argument("--edited", type=float, default=0.01,
                        help="fraction of neurons edited before the new version")
    parser.add_argument("--note", default="", help="a remark kept with the results")
    args = parser.parse_args()
    data = _datastack(args.synapses)
    cave = datastack.engine_instance(data)
    try:
        rows = _run(cave, args.edited)
    finally:
        cave.close()
    _print(args.synapses, rows)
    record = CACHE / f"versions-results-{args.synapses}.json"
    record.write_text(json.dumps({"synapses": args.synapses, "edited": args.edited,
                                  "date": now().strftime("%Y-%m-%d %H:%M UTC"),
                                  "note": args.note,
                                  "rows": rows}, indent=1))


def _datastack(synapses: int) -> Path:
    """A fresh copy of the query benchmark's cached datastack of this size (built when
    missing), so that the edits made here never touch it. Segment, serving-copy and graph
    files are immutable once written, so they are hard-linked (no disk at 10^8); the live
    database is copied."""
    source, _ = datastack.ensure(synapses, 0)
    path = CACHE / f"versions-{synapses}"
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(source, path, copy_function=_link_or_copy)
    return path


def _link_or_copy(src: str, dst: str) -> None:
    if Path(src).name.startswith("live.sqlite"):
        shutil.copy2(src, dst)
    else:
        os.link(src, dst)


def _run(cave: OpenCave, fraction: float) -> list[tuple[str, str, str, str, str]]:
    latest = cave.versions.latest(DS)
    assert latest is not None
    neurons = _neurons(cave, latest.version)
    edited = _edit(cave, neurons, fraction, latest.time_stamp)
    started = time.perf_counter()
    report = cave.new_version(DS, now())
    incremental_s = time.perf_counter() - started
    version = report.version.version
    full_s, full_bytes = _full_rebuild(cave, version)
    rows = [
        ("version after editing", f"{edited:,} neurons ({fraction:.0%})",
         f"{incremental_s:.2f} s, {report.bytes_written / 1e6:,.1f} MB",
         f"full rebuild: {full_s:.2f} s, {full_bytes / 1e6:,.1f} MB",
         f"time {incremental_s / full_s:.3f}, disk {report.bytes_written / full_bytes:.4f}"
         f" (target <= 0.05)"),
    ]
    rows += _timestamp_queries(cave, version, neurons)
    return rows


def _neurons(cave: OpenCave, version: int) -> np.ndarray:
    """Supervoxels of segmented nuclei (one per root)."""
    frame = cave.materialization().query_table(
        DS, version, "nucleus_detection_v0", {"select_columns": ["pt_root_id"]},
        user=SYSTEM).stream.read_all().to_pandas()
    cells = frame[frame.pt_root_id != 0].drop_duplicates("pt_root_id")
    return cells.pt_supervoxel_id.to_numpy(np.uint64)


def _edit(cave: OpenCave, neurons: np.ndarray, fraction: float, after) -> int:  # type: ignore[no-untyped-def]
    """Merge pairs of neurons: each merge edits two."""
    graph = cave.segmentation(world.SEGMENTATION_TABLE)
    pairs = max(1, round(len(neurons) * fraction / 2))
    rng = np.random.default_rng(len(graph.operations()))
    chosen = rng.choice(neurons, 2 * pairs, replace=False)
    when = max(after, now() - timedelta(minutes=1))
    for i, (a, b) in enumerate(chosen.reshape(-1, 2)):
        graph.merge(int(a), int(b), user_id="bench",
                    timestamp=when + timedelta(microseconds=i + 1))
    return 2 * pairs


def _full_rebuild(cave: OpenCave, version: int) -> tuple[float, int]:
    """The baseline: what a copy-everything design does for the same version — read every
    visible row of every table with its roots at the version and write it anew, in the same
    format (Parquet sorted by the cluster key, with its serving copies)."""
    service = cave.materialization()
    out = cave.data.root / "bench-full-rebuild"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    con = duckdb.connect()
    started = time.perf_counter()
    for name in cave.versions.table_names(cave.versions.get(DS, version)):
        table = cave.tables.get(world.ALIGNED_VOLUME, name)
        stream = service.query_table(DS, version, name, {}, user=SYSTEM).stream
        unsorted = out / f"{name}.unsorted.parquet"
        writer = None
        for batch in stream:
            if writer is None:
                writer = pq.ParquetWriter(unsorted, batch.schema, compression="zstd")
            writer.write_batch(batch)
        if writer is not None:
            writer.close()
            copy_sorted_segment(con, out / f"{name}.parquet", "SELECT * FROM read_parquet(?)",
                                [str(unsorted)], table.cluster_key, table.serving_keys)
            unsorted.unlink()
    seconds = time.perf_counter() - started
    size = sum(file_bytes(p) for p in out.glob("*.parquet"))
    con.close()
    shutil.rmtree(out)
    return seconds, size


def _timed(call: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _timestamp_queries(cave: OpenCave, version: int,
                       neurons: np.ndarray) -> list[tuple[str, str, str, str, str]]:
    service = cave.materialization()
    ds = cave.info.datastack(DS)
    graph = cave.segmentation(world.SEGMENTATION_TABLE)
    at = now()
    roots = graph.get_roots(neurons[:50], timestamp=at).astype(np.int64)
    cases = {
        "one neuron's outputs": ("synapses_pni_2",
                                 {"filter_equal_dict": {"synapses_pni_2": {
                                     "pre_pt_root_id": int(roots[0])}}}),
        "synapses among 50 neurons": ("synapses_pni_2", {"filter_in_dict": {"synapses_pni_2": {
            "pre_pt_root_id": roots.tolist(), "post_pt_root_id": roots.tolist()}}}),
        "nucleus table": ("nucleus_detection_v0", {}),
    }
    rows = []
    for name, (table, body) in cases.items():
        at_version = _timed(lambda t=table, b=body: service.query_table(
            DS, version, t, b, user=SYSTEM).stream.read_all())
        live = _timed(lambda t=table, b=body: service.live_query(
            DS, {"table": t, "timestamp": at.isoformat(), **b},
            allow_invalid_root_ids=True, user=SYSTEM).stream.read_all())
        rows.append((f"timestamp query: {name}", f"{ds.name}", f"{live * 1e3:.1f} ms",
                     f"same at version {version}: {at_version * 1e3:.1f} ms",
                     f"{live / at_version:.2f} (target <= 2)"))
    return rows


def _print(synapses: int, rows: list[tuple[str, str, str, str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"versions benchmark, {synapses:,} synapses")
    for column in ("figure", "scope", "measured", "baseline (same run)", "ratio"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
