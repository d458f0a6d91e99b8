"""Where the time goes: ``python -m bench.profile --synapses N [--cases q1_in,q2]``.

For each case (the same calls as the benchmark, on the cached datastack):

- the engine: the DuckDB statement opencave compiled for it, run with DuckDB's profiler —
  planning vs execution, and per operator kind the time, rows and row groups read, split by
  file kind (bulk segment, delta segment, mask);
- the layers above: pyinstrument over the in-process call + Arrow IPC writing, and over the
  caveclient call against a running server (client side);
- the server: ``py-spy`` sampling the server process while it answers the call repeatedly
  (``--py-spy``), top frames by own time.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from opencave.instance import OpenCave

from . import datastack
from .measure import capture
from .run import cases
from .server import NO_RESULT_CACHE, Server
from .workload import Picks


def compiled_statement(cave: OpenCave, run: Any) -> Any:
    """The CompiledQuery the engine receives when ``run()`` issues a query."""
    seen = []
    original = cave.engine.stream

    def stream(query, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(query)
        return original(query, **kwargs)

    cave.engine.stream = stream  # type: ignore[method-assign]
    try:
        result = run()
        for _ in result.stream:
            pass
    finally:
        cave.engine.stream = original  # type: ignore[method-assign]
    return seen[-1]


def duckdb_profile(cave: OpenCave, query: Any) -> dict[str, Any]:
    cursor = cave.engine._db.cursor()  # diagnostics only: the engine's own database
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    try:
        cursor.execute("SET TimeZone = 'UTC'")
        for name, table in query.tables.items():
            cursor.register(name, table)
        cursor.execute("PRAGMA enable_profiling = 'json'")
        cursor.execute(f"PRAGMA profiling_output = '{out}'")
        started = time.perf_counter()
        rows = len(cursor.execute(query.sql, query.params).fetchall())
        wall = time.perf_counter() - started
        cursor.execute("PRAGMA disable_profiling")
        profile = json.loads(out.read_text())
    finally:
        cursor.close()
        out.unlink(missing_ok=True)
    ops: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.Counter())

    def walk(node: dict[str, Any]) -> None:
        kind = node.get("type") or node.get("operator_type") or "?"
        info = node.get("extra_info", {})
        if kind == "TABLE_SCAN":
            files = str(info.get("Filename(s)", ""))
            kind += (" mask" if "-mask-" in files else " delta" if "/delta-" in files
                     else " bulk" if "/bulk-" in files else " other")
        c = ops[kind]
        c["seconds"] += float(node.get("timing", node.get("operator_timing", 0)) or 0)
        c["count"] += 1
        c["rows_out"] += int(node.get("intermediate_rows", node.get("operator_cardinality", 0))
                             or 0)
        c["rows_scanned"] += int(node.get("rows_scanned", 0) or 0)
        c["row_groups_scanned"] += int(node.get("row_groups_scanned", 0) or 0)
        c["row_groups_total"] += int(node.get("total_row_groups_to_scan", 0) or 0)
        for child in node.get("children", []):
            walk(child)

    for node in profile.get("operator", profile.get("children", [])):
        walk(node)
    return {
        "wall": wall, "rows": rows,
        "planner": profile.get("planner", {}).get("total_time"),
        "optimizer": profile.get("optimizer", {}).get("total_time"),
        "execution": profile.get("query", {}).get("total_time", profile.get("latency")),
        "cpu": profile.get("query", {}).get("cpu_time", profile.get("cpu_time")),
        "bytes_read": profile.get("io", {}).get("total_bytes_read"),
        "peak_buffer_memory": profile.get("system", {}).get("peak_buffer_memory"),
        "operators": {k: dict(v) for k, v in sorted(ops.items(),
                                                    key=lambda kv: -kv[1]["seconds"])},
        "parts": query.sql.count("read_parquet(") ,
    }


def print_duckdb(name: str, p: dict[str, Any]) -> None:
    print(f"\n== {name}: DuckDB wall {p['wall'] * 1000:.1f} ms, {p['rows']:,} rows; planner "
          f"{(p['planner'] or 0) * 1000:.1f} ms, optimizer {(p['optimizer'] or 0) * 1000:.1f} ms, "
          f"execution {(p['execution'] or 0) * 1000:.1f} ms (cpu {(p['cpu'] or 0) * 1000:.1f} ms), "
          f"{p['parts']} read_parquet calls, read {(p['bytes_read'] or 0) / 2**20:.1f} MiB, "
          f"peak buffers {(p['peak_buffer_memory'] or 0) / 2**20:.1f} MiB")
    for kind, c in p["operators"].items():
        scanned = (f", scanned {int(c['rows_scanned']):,} rows in "
                   f"{int(c['row_groups_scanned'])}/{int(c['row_groups_total'])} row groups"
                   if c["row_groups_total"] else "")
        print(f"   {kind:22s} ×{int(c['count']):3d} {c['seconds'] * 1000:9.1f} ms (thread time), "
              f"out {int(c['rows_out']):,}{scanned}")


def pyinstrument_text(func: Any, *, repeat: int = 3) -> str:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(repeat):
        func()
    profiler.stop()
    return profiler.output_text(unicode=False, color=False, show_all=False)


def py_spy_top(pid: int, func: Any, seconds: float) -> str:
    """Sample the server with py-spy while ``func`` runs in a loop; own time per frame."""
    out = Path(tempfile.mkstemp(suffix=".txt")[1])
    spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record",
                            "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
                            "--format", "raw", "--output", str(out), "--native",
                           ],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1)
    deadline = time.monotonic() + seconds - 1
    while time.monotonic() < deadline:
        func()
    spy.wait()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or not count.isdigit():
            continue
        if any("idle" in f or "select" in f.split(" ")[0] for f in frames[-1:]):
            continue
        own[frames[-1]] += int(count)
        total += int(count)
    out.unlink(missing_ok=True)
    return "\n".join(f"   {100 * c / max(total, 1):5.1f}%  {frame[:150]}"
                     for frame, c in own.most_common(20))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--synapses", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", default="q1,q2,q3,q4")
    parser.add_argument("--py-spy", action="store_true", help="also sample the server")
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args(argv)
    os.environ["HOME"] = tempfile.mkdtemp(prefix="opencave-bench-home-")
    from caveclient import CAVEclient

    data = datastack.directory(args.synapses, args.seed)
    picks = Picks.load(data.with_suffix(".picks.json"))
    cave = datastack.engine_instance(data)
    svc = cave.materialization()
    wanted = set(args.cases.split(","))
    server = Server(data, datastack.CACHE / f"profile-server-{args.synapses}.log",
                    env=NO_RESULT_CACHE)
    try:
        server.wait_ready()
        client = CAVEclient("minnie65_public", server_address=server.url)
        from .measure import Harness

        harness = Harness(svc, client, None, None, cave.settings.arrow_compression)
        for name, calls in cases(picks).items():
            if name.split()[0].lower() not in wanted:
                continue
            call = calls[0]
            request = capture(client, call).query
            statement = compiled_statement(cave, lambda r=request: harness._result(r))
            duckdb_profile(cave, statement)  # warm
            print_duckdb(name, duckdb_profile(cave, statement))

            def in_process(r=request) -> None:
                harness.ipc_bytes(r)

            print(f"-- {name}: in-process query + IPC (pyinstrument)")
            print(_trim(pyinstrument_text(in_process)))
            print(f"-- {name}: caveclient call, client side (pyinstrument)")
            print(_trim(pyinstrument_text(lambda c=call: harness.caveclient(c))))
            if args.py_spy:
                print(f"-- {name}: server process, own time by frame (py-spy --native)")
                print(py_spy_top(server.pid, lambda r=request: harness.http(r), args.seconds))
    finally:
        server.stop()
        cave.close()


def _trim(text: str, lines: int = 45) -> str:
    body = [line for line in text.splitlines() if line.strip()]
    return "\n".join(body[:lines])


if __name__ == "__main__":
    main()
