"""Q5: 16 concurrent clients working through one fixed, shuffled list of requests mixing
Q1–Q4 (closed loop: each client sends its next request when the previous one answered).

opencave: 16 processes, each with its own caveclient (16 users; processes so that the
clients' own Python work is not serialized by one interpreter lock). PostgreSQL: 16 psql
sessions working through the same list, fetching through a cursor (``FETCH_COUNT``) so that
16 large results need not sit in client memory at once. Both run on the same machine as their
server.

Below 3.4×10^8 synapses, Q2 and Q3 return far more rows than on minnie65 (P is topped up
with the highest-degree neurons), so 16 clients holding such results can exhaust the machine:
a guard stops the run (and says so) when available memory falls under 2 GiB, rather than let
the kernel's OOM killer pick a victim.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import statistics
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from .postgres import Psql
from .workload import Call, run_client

#: The mix, per 20 requests: mostly single-neuron lookups and cell-type queries, one graph
#: query among the proofread neurons, one large result.
MIX = {"q1_out": 8, "q1_in": 5, "q4": 5, "q2": 1, "q3": 1}
#: Stop the load when the machine has less than this available.
MIN_AVAILABLE = 2 * 2**30
PG_FETCH_COUNT = 50_000


def available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 62


class MemoryGuard:
    """Calls ``stop()`` once if available memory falls under :data:`MIN_AVAILABLE`."""

    def __init__(self, stop: Callable[[], None]) -> None:
        self.tripped: str | None = None
        self._stop_load = stop
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(0.1):
            free = available_memory()
            if free < MIN_AVAILABLE:
                self.tripped = (f"stopped: only {free / 2**30:.1f} GiB of memory left on the "
                                "machine")
                self._stop_load()
                return

    def __enter__(self) -> MemoryGuard:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


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
    aborted: str | None = None
    client_cpu_seconds: float | None = None  # the clients' own CPU time, all together

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
                "aborted": self.aborted, "completed": len(self.latencies),
                "client_cpu_seconds": self.client_cpu_seconds,
                "by_kind_p50": {k: statistics.median(v) for k, v in self.by_kind.items()},
                "by_kind_max": {k: max(v) for k, v in self.by_kind.items()}}


@dataclass(frozen=True)
class Replay:
    """A data request caveclient made, sent again by a client that reads the response's
    bytes without decoding them: the server's side of a call, as if the client's own work
    ran on another machine."""

    kind: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None

    @classmethod
    def of(cls, kind: str, request: Any, server_url: str) -> Replay:
        """``request`` (a prepared request sent to any server) aimed at ``server_url``."""
        parts = urlsplit(request.url)
        url = server_url + urlunsplit(("", "", parts.path, parts.query, ""))
        body = request.body.encode() if isinstance(request.body, str) else request.body
        return cls(kind, request.method, url, dict(request.headers), body)


def _perform(client: Any, session: Any, item: Call | Replay) -> None:
    if isinstance(item, Call):
        run_client(client, item)
        return
    with session.request(item.method, item.url, headers=item.headers, data=item.body,
                         stream=True) as response:
        response.raise_for_status()
        for _ in response.iter_content(1 << 20):
            pass


def _client_worker(url: str, home: str, work: Any, results: Any, ready: Any, go: Any,
                   spent: Any) -> None:
    os.environ["HOME"] = home
    import requests
    from caveclient import CAVEclient

    try:
        session = requests.Session()
        client = CAVEclient("minnie65_public", server_address=url)
        client.materialize.get_versions()
    except Exception:  # the parent sees a missing ready signal as a failure
        results.put(("setup", 0.0, traceback.format_exc(limit=3)))
        ready.put(False)
        return
    ready.put(True)
    go.wait()
    cpu_at_start = time.process_time()
    while (item := work.get()) is not None:
        index, call = item
        started = time.perf_counter()
        try:
            _perform(client, session, call)
            results.put((call.kind, time.perf_counter() - started, None))
        except Exception as exc:
            results.put((call.kind, time.perf_counter() - started, f"{index}: {exc!r}"[:300]))
    spent.put(time.process_time() - cpu_at_start)


def run_http(url: str, home: str, calls: Sequence[Call | Replay],
             clients: int = 16) -> LoadResult:
    ctx = mp.get_context("spawn")
    work, results, ready, spent = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=_client_worker,
                         args=(url, home, work, results, ready, go, spent), daemon=True)
             for _ in range(clients)]
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
    out = LoadResult(clients, len(calls), 0.0)

    def stop() -> None:
        for p in procs:
            p.kill()

    started = time.perf_counter()
    go.set()
    with MemoryGuard(stop) as guard:
        received = 0
        while received < len(calls):
            try:
                kind, seconds, error = results.get(timeout=1)
            except queue.Empty:
                if guard.tripped or not any(p.is_alive() for p in procs):
                    break
                continue
            received += 1
            out.latencies.append(seconds)
            out.by_kind.setdefault(kind, []).append(seconds)
            if error:
                out.errors.append(error)
    out.aborted = guard.tripped
    out.wall_seconds = time.perf_counter() - started
    if not out.aborted:
        with contextlib.suppress(queue.Empty):
            out.client_cpu_seconds = sum(spent.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    return out


def run_postgres(sessions: Callable[[int], Psql], sql: Callable[[Call], str],
                 calls: Sequence[Call], clients: int = 16) -> LoadResult:
    """``sessions(version)`` opens a psql session on that version's database."""
    versions = sorted({c.version for c in calls})
    pools = [{v: sessions(v) for v in versions} for _ in range(clients)]
    stopped = threading.Event()
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
            if index >= len(calls) or stopped.is_set():
                return
            call = calls[index]
            started = time.perf_counter()
            try:
                pool[call.version].time(statements[index])
                error = None
            except Exception as exc:
                if stopped.is_set():
                    return
                error = f"{index}: {exc!r}"[:300]
            seconds = time.perf_counter() - started
            with lock:
                out.latencies.append(seconds)
                out.by_kind.setdefault(call.kind, []).append(seconds)
                if error:
                    out.errors.append(error)

    def stop() -> None:
        stopped.set()
        for pool in pools:
            for session in pool.values():
                session.kill()

    threads = [threading.Thread(target=worker, args=(pool,)) for pool in pools]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    with MemoryGuard(stop) as guard:
        for t in threads:
            t.join()
    out.aborted = guard.tripped
    out.wall_seconds = time.perf_counter() - started
    for pool in pools:
        for session in pool.values():
            session.close()
    return out
