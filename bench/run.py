"""``python -m bench --synapses N``: the query benchmark of issue 6.

Builds (or reuses) the synthetic datastack of N synapses, starts ``opencave serve`` and a
PostgreSQL 15 holding the same versions in the original CAVE's layout, runs Q1–Q5 on every
path side by side, and prints one table of medians and ratios. Results are kept as JSON
under ``bench/.cache/`` (for the growth table across scales and the README section).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opencave.storage.files import DataDir

from . import concurrency, datastack, report
from .layout import CaveTable, database, load_version
from .measure import Harness
from .postgres import Postgres, available
from .server import NO_RESULT_CACHE, MemoryWatch, Server, cpu_seconds
from .workload import (
    CELL_TYPE,
    LATEST,
    P_SIZES,
    PG_TABLES,
    SYNAPSES,
    Call,
    pick,
    postgres_sql,
)

CACHE = datastack.CACHE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--synapses", type=int, help="datastack size (e.g. 1000000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5, help="measured rounds per case")
    parser.add_argument("--requests", type=int, default=320, help="Q5: requests in total")
    parser.add_argument("--clients", type=int, default=16, help="Q5: concurrent clients")
    parser.add_argument("--no-postgres", action="store_true", help="skip the baseline")
    parser.add_argument("--pg-versions", default="",
                        help="comma-separated versions to load into PostgreSQL (default: every "
                        "version a case reads; each takes a full copy of the tables, ~28 GB "
                        "at 10^8): a case at another version runs without the baseline")
    parser.add_argument("--keep-postgres", action="store_true",
                        help="keep the loaded PostgreSQL under bench/.cache and reuse it")
    parser.add_argument("--no-full-stream", action="store_true",
                        help="skip streaming the whole synapse table over HTTP")
    parser.add_argument("--readme", action="store_true",
                        help="only rewrite README's Performance section from cached results")
    parser.add_argument("--only", default="", help="comma-separated cases (q1,q2,q3,q4,page,q5)")
    parser.add_argument("--data", type=Path,
                        help="use this existing datastack directory instead of the cache")
    parser.add_argument("--note", default="", help="a remark kept with the results (e.g. "
                        "what else ran on the machine)")
    parser.add_argument("--results", type=Path, help="where to write the results JSON "
                        "(default: bench/.cache/results-N-seedS.json)")
    args = parser.parse_args(argv)
    if not args.readme and not args.synapses:
        parser.error("--synapses is required")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.readme:
        report.write_readme(CACHE)
        return
    started = time.perf_counter()
    # caveclient keeps a datastack→server cache and reads tokens under ~: use a throwaway HOME
    home = tempfile.mkdtemp(prefix="opencave-bench-home-")
    os.environ["HOME"] = home
    try:
        results = run(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    results["bench_seconds"] = time.perf_counter() - started
    path = args.results or CACHE / f"results-{args.synapses}-seed{args.seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str))
    print()
    print(report.render(results))
    print()
    if args.results is None:
        print(report.growth(CACHE))
    print(f"\nbench took {results['bench_seconds'] / 60:.1f} min; results in {path}")


def log(message: str) -> None:
    print(message, flush=True)


def run(args: argparse.Namespace, home: str) -> dict[str, Any]:
    from caveclient import CAVEclient

    CACHE.mkdir(parents=True, exist_ok=True)
    only = set(filter(None, args.only.split(",")))

    def want(case: str) -> bool:
        return not only or case in only

    if args.data is not None:
        data = args.data
        synth = datastack.measure(data, args.synapses, args.seed, None, None)
    else:
        data, synth = datastack.ensure(args.synapses, args.seed, log=log)
    # Every case measures the engine: the result cache (which would answer each repeat
    # from a file) is off, here and in the server, except in the second run of Q5.
    cave = datastack.engine_instance(data)
    svc = cave.materialization()
    picks = pick(cave, data.with_suffix(".picks.json"), args.seed, log=log)
    results: dict[str, Any] = {
        "synapses": args.synapses, "seed": args.seed, "repeat": args.repeat,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": _command(args),
        "machine": machine(), "synth": synth.__dict__, "cases": {}, "postgres": None,
        "note": args.note,
        "picks": {"q1_neurons": len(picks.q1_neurons),
                  "proofread": {v: len(p) for v, p in picks.proofread.items()},
                  "composition": picks.proofread_composition,
                  "q3_neurons": len(picks.q3_neurons), "cell_type": picks.cell_type},
    }

    pg = None
    psql: dict[int, Any] = {}
    tables: dict[str, CaveTable] = {}
    if not args.no_postgres and available():
        pg_dir = (CACHE / f"pg-{args.synapses}-seed{args.seed}" if args.keep_postgres
                  else Path(tempfile.mkdtemp(prefix="pg-", dir=CACHE)))
        pg = Postgres(pg_dir, keep=args.keep_postgres).start()
    elif not args.no_postgres:
        log("PostgreSQL 15 binaries not found: running without the baseline")
    server = Server(data, CACHE / f"server-{args.synapses}.log", env=NO_RESULT_CACHE)
    try:
        if pg is not None:
            versions = pg_versions(args.pg_versions)
            loads = []
            t0 = time.perf_counter()
            for version in versions:
                marker = database(version)
                if args.keep_postgres and pg.has_database(marker) and pg.sql(
                        "SELECT to_regclass('public.synapses_pni_2') IS NOT NULL",
                        marker).strip() == "t":
                    log(f"  postgres v{version}: reusing the kept database")
                    continue
                log(f"loading v{version} into PostgreSQL (CAVE layout) …")
                loads += [r.__dict__ for r in load_version(
                    pg, cave, version, PG_TABLES, spill=CACHE / "spill", log=log)]
            results["postgres"] = {"version": pg.sql("SHOW server_version").strip(),
                                   "load_seconds": time.perf_counter() - t0, "loads": loads}
            tables = {t: CaveTable.of(cave, t) for t in PG_TABLES}
            psql = {v: pg.session(database(v)) for v in versions}
        server.wait_ready()
        results["server_idle_rss"] = server.rss()
        client = CAVEclient("minnie65_public", server_address=server.url)
        client.materialize.get_versions()
        harness = Harness(svc, client, psql, (lambda c: postgres_sql(tables, c))
                          if psql else None, cave.settings.arrow_compression)

        calls = cases(picks)

        def measure(names: list[str]) -> None:
            for name in names:
                if not want(name.split()[0].lower()):
                    continue
                log(f"{name} …")
                batch = calls[name]
                if name.startswith("Q3"):
                    with MemoryWatch(server.pid) as watch:
                        result = harness.case(name, batch, repeat=max(2, args.repeat // 2),
                                              log=log)
                    result.extra["server_peak_rss"] = watch.peak
                else:
                    result = harness.case(name, batch, repeat=args.repeat, log=log)
                results["cases"][name] = result.to_json()

        pages = [name for name in calls if name.startswith("Page")]
        measure([name for name in calls if name not in pages])
        # Q5 reads what Q1–Q4 read: it runs before the pages' scans leave the page cache
        # cold (at 3.4e8, the replayed Q5 after them: 40% busy, its first Q3 read from disk
        # for ~24 s).
        if want("q5"):
            results["q5"] = q5(args, server, client, home, calls, pg,
                               (lambda c: postgres_sql(tables, c)) if psql else None)
        measure(pages)
        # Last: reading the whole table leaves the page cache cold for whatever comes next
        # (at 3.4e8, the first Q5 after it ran at 2.7 req/s against 4.5–4.8 before it).
        if not args.no_full_stream and want("q3"):
            results["full_stream"] = full_stream(harness, server, client)
    finally:
        server.stop()
        for session in psql.values():
            session.close()
        if pg is not None:
            pg.stop()
        cave.close()
    return results


def pg_versions(wanted: str) -> list[int]:
    """The versions the cases read, or those of them in ``wanted`` (comma-separated)."""
    read = {*P_SIZES, LATEST}
    if not wanted:
        return sorted(read)
    chosen = {v.strip() for v in wanted.split(",")}
    if not chosen <= {str(v) for v in read}:
        raise SystemExit(f"--pg-versions {wanted}: the cases read versions {sorted(read)}")
    return sorted(int(v) for v in chosen)


def cases(picks: Any) -> dict[str, list[Call]]:
    p = {int(v): tuple(ids) for v, ids in picks.proofread.items()}
    return {
        "Q1 out": [Call("q1_out", LATEST, (r,)) for r in picks.q1_neurons],
        "Q1 in": [Call("q1_in", LATEST, (r,)) for r in picks.q1_neurons],
        **{f"Q2 |P|={len(ids):,} v{v}": [Call("q2", v, ids)] for v, ids in sorted(p.items())},
        f"Q3 {len(picks.q3_neurons):,} neurons out": [
            Call("q3", LATEST, tuple(picks.q3_neurons))],
        f"Q4 {CELL_TYPE} ⋈ nuclei": [Call("q4", LATEST)],
        "Page limit=10": [Call("page", LATEST, limit=10)],
        "Page limit=1,000 offset=100,000": [Call("page", LATEST, limit=1000, offset=100_000)],
        "Page target predictions ⋈ synapses limit=10": [Call("joined_page", LATEST, limit=10)],
    }


def full_stream(harness: Harness, server: Server, client: Any) -> dict[str, Any]:
    """The whole synapse table over HTTP (raw bytes, not decoded): the server must stream."""
    from .measure import capture

    log("Q3+ the whole synapse table over HTTP …")
    call = Call("q1_out", LATEST, (0,))  # any synapse query; its body is then emptied
    request = capture(client, call).query
    request.prepare_body(data=json.dumps({}).encode(), files=None)
    before = server.rss()
    with MemoryWatch(server.pid) as watch:
        seconds, size = harness.http(request)
    rows = harness.svc.row_count("minnie65_public", LATEST, SYNAPSES)
    out = {"seconds": seconds, "bytes": size, "rows": rows, "server_peak_rss": watch.peak,
           "server_rss_before": before}
    log(f"  {rows:,} rows, {size / 2**20:.0f} MiB in {seconds:.1f} s, server peak "
        f"{watch.peak / 2**30:.2f} GiB")
    return out


def q5(args: argparse.Namespace, server: Server, client: Any, home: str,
       calls: dict[str, list[Call]], pg: Postgres | None, sql: Any) -> dict[str, Any]:
    by_kind: dict[str, list[Call]] = {}
    for batch in calls.values():
        for call in batch:
            if call.kind == "q2" and call.version != min(P_SIZES):
                continue  # Q2 in the mix: the 1,436-neuron query
            by_kind.setdefault(call.kind, []).append(call)
    mix = concurrency.requests_list(by_kind, args.requests, args.seed)
    log(f"Q5 {args.clients} clients × {len(mix)} requests (opencave over HTTP, every query "
        "run) …")
    out: dict[str, Any] = {"mix": concurrency.MIX, "cores": os.cpu_count(),
                           **_q5_load(args, server, home, mix)}
    # As served by default: a result kept on disk answers its repeats (the mix repeats its
    # Q2 and Q3). The cache starts empty. Then the server's side alone: the same requests
    # replayed by clients that read the bytes without decoding them (caveclient's pandas
    # work, on the server's cores here, runs on the users' machines in life).
    from .measure import capture

    captured = {call: capture(client, call).query for call in set(mix)}
    results = DataDir(server.data).results
    for key, label, _ in report.Q5_RUNS:
        shutil.rmtree(results, ignore_errors=True)
        log(f"Q5 {args.clients} clients × {len(mix)} requests (opencave over HTTP, {label}) …")
        with Server(server.data, CACHE / f"server-{args.synapses}-{key}.log") as cached:
            work = mix if key != "replayed" else [
                concurrency.Replay.of(c.kind, captured[c], cached.url) for c in mix]
            out[key] = _q5_load(args, cached, home, work)
    shutil.rmtree(results, ignore_errors=True)
    if pg is not None and sql is not None and {c.version for c in mix} <= set(
            pg_versions(args.pg_versions)):
        log(f"Q5 {args.clients} clients × {len(mix)} requests (PostgreSQL) …")
        base = concurrency.run_postgres(
            lambda v: pg.session(database(v), fetch_count=concurrency.PG_FETCH_COUNT), sql,
            mix, args.clients)
        out["postgres"] = base.to_json()
        log(f"  {base.throughput:.1f} req/s, p50 {base.percentile(50):.3f} s, p99 "
            f"{base.percentile(99):.3f} s, {len(base.errors)} errors {base.aborted or ''}")
    return out


def _q5_load(args: argparse.Namespace, server: Server, home: str,
             mix: list[Call] | list[concurrency.Replay]) -> dict[str, Any]:
    server_cpu = cpu_seconds(server.pid)
    with MemoryWatch(server.pid) as watch:
        http = concurrency.run_http(server.url, home, mix, args.clients)
    log(f"  {http.throughput:.1f} req/s, p50 {http.percentile(50):.3f} s, p99 "
        f"{http.percentile(99):.3f} s, {len(http.errors)} errors {http.aborted or ''}")
    return {"opencave": http.to_json(), "server_peak_rss": watch.peak,
            "server_cpu_seconds": cpu_seconds(server.pid) - server_cpu}


def revision() -> str:
    """The opencave code measured: its git commit (``+dirty`` if src/ has changes), or
    ``$OPENCAVE_BENCH_REVISION`` when running from an exported tree."""
    import opencave

    if os.environ.get("OPENCAVE_BENCH_REVISION"):
        return os.environ["OPENCAVE_BENCH_REVISION"]
    src = Path(opencave.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "."],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(int(line.split()[1]) * 1024 for line in
                   Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem = 0
    import duckdb

    return {"cpus": os.cpu_count(), "cpu": model, "memory": mem, "revision": revision(),
            "disk_free": shutil.disk_usage(CACHE).free, "python": platform.python_version(),
            "duckdb": duckdb.__version__, "platform": platform.platform(),
            "argv": " ".join(sys.argv)}


def _command(args: argparse.Namespace) -> str:
    """How to rerun this benchmark: ``make bench`` when it ran with the defaults."""
    if args.no_postgres or args.only or args.data or args.pg_versions:
        options = " --no-postgres" if args.no_postgres else ""
        options += f" --pg-versions {args.pg_versions}" if args.pg_versions else ""
        options += f" --only {args.only}" if args.only else ""
        options += f" --data {args.data}" if args.data else ""
        return f"python -m bench --synapses {args.synapses}{options} --repeat {args.repeat}"
    return f"make bench SCALE={args.synapses}" + (
        f" (rounds: {args.repeat})" if args.repeat != 5 else "")
