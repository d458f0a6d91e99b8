"""Timing one case on every path, interleaved, so that each figure has its baseline measured
next to it in the same run.

Paths, from the inside out:

- ``engine``: the query in-process (``MaterializationService``), every Arrow batch produced;
- ``+ipc``: the same plus the Arrow IPC stream the server writes to this machine's
  client (uncompressed under the default ``arrow_compression``), as bytes;
- ``http``: the exact request caveclient sends, replayed over HTTP, all bytes read (no
  decoding): server plus transport;
- ``caveclient``: the user's call, end to end (requests, Arrow → pandas, caveclient's own
  post-processing);
- ``postgres``: the original's query on the CAVE-layout PostgreSQL, as psql receives it.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import requests

from opencave.api.arrow import ipc_stream, write_options
from opencave.materialize.service import MaterializationService

from .postgres import Psql
from .workload import Call, run_client

PATHS = ("engine", "+ipc", "http", "caveclient", "postgres")
_TABLE_QUERY = re.compile(r"/datastack/([^/]+)/version/(\d+)/table/([^/]+)/query$")
_JOIN_QUERY = re.compile(r"/datastack/([^/]+)/version/(\d+)/query$")


@dataclass
class Captured:
    """The requests caveclient made for one call; the last query is the data request."""

    requests: list[requests.PreparedRequest]

    @property
    def query(self) -> requests.PreparedRequest:
        return [r for r in self.requests if urlparse(r.url).path.endswith("/query")][-1]


def capture(client: Any, call: Call) -> Captured:
    seen: list[requests.PreparedRequest] = []
    original = requests.Session.send

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(request.copy())
        return original(self, request, **kwargs)

    requests.Session.send = send  # type: ignore[method-assign]
    try:
        run_client(client, call)
    finally:
        requests.Session.send = original  # type: ignore[method-assign]
    return Captured(seen)


@dataclass
class CaseResult:
    name: str
    seconds: dict[str, list[float]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    bytes_on_wire: int | None = None
    requests_per_call: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def median(self, path: str) -> float | None:
        values = self.seconds.get(path)
        return statistics.median(values) if values else None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": self.seconds, "rows": self.rows,
                "bytes_on_wire": self.bytes_on_wire,
                "requests_per_call": self.requests_per_call, "extra": self.extra,
                "median": {p: self.median(p) for p in self.seconds}}


class Harness:
    def __init__(self, svc: MaterializationService, client: Any,
                 psql: dict[int, Psql] | None, pg_sql: Callable[[Call], str] | None,
                 arrow_compression: str) -> None:
        self.svc = svc
        # what the server sends the benchmark's client (on loopback)
        self.ipc_options = write_options("127.0.0.1", arrow_compression)
        self.client = client
        self.psql = psql or {}
        self.pg_sql = pg_sql
        self.session = requests.Session()

    # -- one call on one path ---------------------------------------------------------------
    def _result(self, request: requests.PreparedRequest):  # type: ignore[no-untyped-def]
        path = urlparse(request.url).path
        body = json.loads(request.body or b"{}")
        if m := _TABLE_QUERY.search(path):
            ds, version, table = m.group(1), int(m.group(2)), m.group(3)
            return self.svc.query_table(ds, version, table, body)
        if m := _JOIN_QUERY.search(path):
            return self.svc.join_query(m.group(1), int(m.group(2)), body)
        raise ValueError(f"not a query: {path}")

    def engine(self, request: requests.PreparedRequest) -> tuple[float, int]:
        started = time.perf_counter()
        rows = sum(batch.num_rows for batch in self._result(request).stream)
        return time.perf_counter() - started, rows

    def engine_ipc(self, request: requests.PreparedRequest) -> tuple[float, int]:
        started = time.perf_counter()
        size = self.ipc_bytes(request)
        return time.perf_counter() - started, size

    def ipc_bytes(self, request: requests.PreparedRequest) -> int:
        """Run the query and write its IPC stream as the server does; returns its size."""
        result = self._result(request)
        stream = ipc_stream(result.stream.schema, result.stream, self.ipc_options)
        return sum(len(chunk) for chunk in stream)

    def http(self, request: requests.PreparedRequest) -> tuple[float, int]:
        started = time.perf_counter()
        with self.session.send(request, stream=True) as response:
            response.raise_for_status()
            size = sum(len(c) for c in response.iter_content(chunk_size=1 << 20))
        return time.perf_counter() - started, size

    def caveclient(self, call: Call) -> tuple[float, int]:
        started = time.perf_counter()
        rows = run_client(self.client, call)
        return time.perf_counter() - started, rows

    def postgres(self, call: Call) -> float:
        assert self.pg_sql is not None
        return self.psql[call.version].time(self.pg_sql(call))

    # -- one case -------------------------------------------------------------------------
    def case(self, name: str, calls: Sequence[Call], *, repeat: int,
             paths: Sequence[str] = PATHS, log=print) -> CaseResult:  # type: ignore[no-untyped-def]
        """Each call on every path, ``repeat`` rounds, the order of paths rotating each
        round; one unmeasured warm-up round first. Figures are medians over all
        (call, round) pairs."""
        loaded = self.pg_sql and all(call.version in self.psql for call in calls)
        paths = [p for p in paths if p != "postgres" or loaded]
        result = CaseResult(name, {p: [] for p in paths})
        for call in calls:  # the first call fills caveclient's metadata caches
            capture(self.client, call)
        captured = [capture(self.client, call) for call in calls]
        result.requests_per_call = len(captured[0].requests)
        rows: dict[str, list[int]] = {p: [] for p in paths}
        wire: list[int] = []
        for round_ in range(repeat + 1):
            for i, call in enumerate(calls):
                order = paths[(round_ + i) % len(paths):] + paths[:(round_ + i) % len(paths)]
                for path in order:
                    seconds, count = self._one(path, call, captured[i].query)
                    if round_ == 0:
                        continue  # warm-up
                    result.seconds[path].append(seconds)
                    if path == "http":
                        wire.append(count)
                    elif path in ("engine", "caveclient"):
                        rows[path].append(count)
        result.rows = {p: int(statistics.median(v)) for p, v in rows.items() if v}
        result.bytes_on_wire = int(statistics.median(wire)) if wire else None
        log("  " + _summary(result))
        return result

    def _one(self, path: str, call: Call,
             request: requests.PreparedRequest) -> tuple[float, int]:
        if path == "engine":
            return self.engine(request)
        if path == "+ipc":
            return self.engine_ipc(request)
        if path == "http":
            return self.http(request)
        if path == "caveclient":
            return self.caveclient(call)
        if path == "postgres":
            return self.postgres(call), 0
        raise ValueError(path)


def _summary(result: CaseResult) -> str:
    parts = [f"{p} {1000 * m:.1f} ms" for p in result.seconds
             if (m := result.median(p)) is not None]
    return f"{result.name}: " + ", ".join(parts) + f"; rows {result.rows}"
