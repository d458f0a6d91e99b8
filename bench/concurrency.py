"""Q5: 16 concurrent clients working through one fixed, shuffled list of requests mixing
Q1–Q4 (closed loop: each client sends its next request when the previous one answered).

opencave: 16 processes, each with its own caveclient (16 users; processes so that the
clients' own Python work is not serialized by one interpreter lock). PostgreSQL: 16 psql
sessions working through the same list. Both run on the same machine as their server.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .postgres import Psql
from .workload import Call, run_client

#: The mix, per 20 requests: mostly single-neuron lookups and cell-type queries, a few graph
#: queries among the proofread neurons, one large result.
MIX = {"q1_out": 8, "q1_in": 4, "q4": 4, "q2": 3, "q3": 1}


def requests_list(calls_by_kind: dict[str, Sequence[Call]], total: int,
                  seed: int = 0) -> list[Call]:
    rng = np.random.default_rng([seed, 5])
    weights = sum(MIX.values())
    out: list[Call] = []
    for kind, weight in MIX.items():
        options = calls_by_kind[kind]
        n = round(total * weight / weights)
        out += [options[i % len(options)] for i in range(n)]
    order = rng.permutation(len(out))
    return [out[i] for i in order]


@dataclass
class LoadResult:
    clients: int
    requests: int
    wall_seconds: float
    latencies: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.wall_seconds if self.wall_seconds else 0.0

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies, q)) if self.latencies else None

    def to_json(self) -> dict[str, Any]:
        return {"clients": self.clients, "requests": self.requests,
                "wall_seconds": self.wall_seconds, "throughput": self.throughput,
                "p50": self.percentile(50), "p99": self.percentile(99),
                "errors": self.errors[:20], "n_errors": len(self.errors),
                "by_kind_p50": {k: statistics.median(v) for k, v in self.by_kind.items()},
                "by_kind_max": {k: max(v) for k, v in self.by_kind.items()}}


def _client_worker(url: str, home: str, work: Any, results: Any, ready: Any, go: Any) -> None:
    os.environ["HOME"] = home
    from caveclient import CAVEclient

    try:
        client = CAVEclient("minnie65_public", server_address=url)
        client.materialize.get_versions()
    except Exception:  # the parent sees a missing ready signal as a failure
        results.put(("setup", 0.0, traceback.format_exc(limit=3)))
        ready.put(False)
        return
    ready.put(True)
    go.wait()
    while (item := work.get()) is not None:
        index, call = item
        started = time.perf_counter()
        try:
            run_client(client, call)
            results.put((call.kind, time.perf_counter() - started, None))
        except Exception as exc:
            results.put((call.kind, time.perf_counter() - started, f"{index}: {exc!r}"[:300]))


def run_http(url: str, home: str, calls: Sequence[Call], clients: int = 16) -> LoadResult:
    ctx = mp.get_context("spawn")
    work, results, ready = ctx.Queue(), ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=_client_worker, args=(url, home, work, results, ready, go),
                         daemon=True) for _ in range(clients)]
    for p in procs:
        p.start()
    if not all(ready.get(timeout=300) for _ in procs):
        for p in procs:
            p.terminate()
        raise RuntimeError(f"a Q5 client failed to start: {results.get(timeout=5)}")
    for item in enumerate(calls):
        work.put(item)
    for _ in procs:
        work.put(None)
    started = time.perf_counter()
    go.set()
    out = LoadResult(clients, len(calls), 0.0)
    for _ in calls:
        kind, seconds, error = results.get()
        out.latencies.append(seconds)
        out.by_kind.setdefault(kind, []).append(seconds)
        if error:
            out.errors.append(error)
    out.wall_seconds = time.perf_counter() - started
    for p in procs:
        p.join(timeout=30)
    return out


def run_postgres(sessions: Callable[[int], Psql], sql: Callable[[Call], str],
                 calls: Sequence[Call], clients: int = 16) -> LoadResult:
    """``sessions(version)`` opens a psql session on that version's database."""
    versions = sorted({c.version for c in calls})
    pools = [{v: sessions(v) for v in versions} for _ in range(clients)]
    statements = [sql(c) for c in calls]
    lock = threading.Lock()
    next_index = [0]
    out = LoadResult(clients, len(calls), 0.0)
    barrier = threading.Barrier(clients + 1)

    def worker(pool: dict[int, Psql]) -> None:
        barrier.wait()
        while True:
            with lock:
                index = next_index[0]
                next_index[0] += 1
            if index >= len(calls):
                return
            call = calls[index]
            started = time.perf_counter()
            try:
                pool[call.version].time(statements[index])
                error = None
            except Exception as exc:
                error = f"{index}: {exc!r}"[:300]
            seconds = time.perf_counter() - started
            with lock:
                out.latencies.append(seconds)
                out.by_kind.setdefault(call.kind, []).append(seconds)
                if error:
                    out.errors.append(error)

    threads = [threading.Thread(target=worker, args=(pool,)) for pool in pools]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    out.wall_seconds = time.perf_counter() - started
    for pool in pools:
        for session in pool.values():
            session.close()
    return out
