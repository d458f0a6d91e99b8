"""An ``opencave serve`` process on a free loopback port, and its memory as the kernel counts
it (``/proc``): resident set now, and the peak since the last reset."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from .postgres import free_port


def rss_bytes(pid: int) -> int:
    return _status(pid).get("VmRSS", 0)


def anon_bytes(pid: int) -> int:
    """Resident memory that is the process's own (not file pages it maps, which the kernel
    can drop and re-read: memory-mapped arrays count in RSS as they are touched)."""
    return _status(pid).get("RssAnon", 0)


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process tree has used so far."""
    ticks = 0
    for p in descendants(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


class MemoryWatch:
    """Samples the resident memory of a process tree every few milliseconds (the peak of
    the sum), and also reads the kernel's own high-water mark of the root process."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pids = descendants(self.pid)
        last_scan = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - last_scan > 1:
                pids, last_scan = descendants(self.pid), time.monotonic()
            self.peak = max(self.peak, sum(rss_bytes(p) for p in pids))
            self.peak_anon = max(self.peak_anon, sum(anon_bytes(p) for p in pids))
            self._stop.wait(self.interval)

    def __enter__(self) -> MemoryWatch:
        with contextlib.suppress(OSError):  # reset the kernel's peak RSS (VmHWM)
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status(self.pid).get("VmHWM", 0))


#: The environment of a server that runs every query (its result cache off).
NO_RESULT_CACHE = {"OPENCAVE_RESULT_CACHE": "0"}


class Server:
    """``python -m opencave.cli serve`` (the same entry point as ``opencave serve``)."""

    def __init__(self, data: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "opencave.cli", "serve", "--data", str(data),
             "--port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"opencave serve exited with {self._proc.returncode}; "
                                   f"see {self._log.name}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"opencave serve not ready after {timeout} s")

    def rss(self) -> int:
        return sum(rss_bytes(p) for p in descendants(self.pid))

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()

    def __enter__(self) -> Server:
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
