"""The synthetic datastack of a given size: built once with ``opencave synth`` (timed, its peak
memory sampled) and cached under ``bench/.cache/``; and what each version costs on disk."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from opencave.instance import OpenCave
from opencave.settings import Settings
from opencave.storage.segments import file_bytes

from .layout import DATASTACK
from .server import MemoryWatch

CACHE = Path(__file__).resolve().parent / ".cache"


@dataclass
class SynthStats:
    synapses: int
    seed: int
    seconds: float | None  # None: built outside the benchmark, time unknown
    peak_rss: int | None  # resident, including pages of memory-mapped files
    disk_bytes: int
    #: bytes each version added: version 117 holds the bulk segments, later ones their
    #: delta segments and masks
    version_bytes: dict[str, int]
    version_rows: dict[str, int]  # synapse rows visible in each version
    note: str = ""
    peak_anon: int | None = None  # resident memory of its own (RssAnon): what it needs


def directory(synapses: int, seed: int) -> Path:
    return CACHE / f"ds-{synapses}-seed{seed}"


def _complete(path: Path) -> bool:
    return (path / "live.sqlite").exists() and not (path / ".synth-incomplete").exists()


def ensure(synapses: int, seed: int, *, log=print) -> tuple[Path, SynthStats]:  # type: ignore[no-untyped-def]
    path = directory(synapses, seed)
    stats_file = path.with_suffix(".json")
    if _complete(path) and stats_file.exists():
        return path, SynthStats(**json.loads(stats_file.read_text()))
    seconds = peak = anon = None  # built outside the bench: not timed here
    if not _complete(path):
        seconds, peak, anon = build(path, synapses, seed, log=log)
    stats = measure(path, synapses, seed, seconds, peak, anon)
    stats_file.write_text(json.dumps(asdict(stats), indent=1))
    return path, stats


class BuildStopped(RuntimeError):
    """``opencave synth`` went over the memory or time cap and was stopped."""

    def __init__(self, message: str, seconds: float, peak: int, where: str) -> None:
        super().__init__(message)
        self.seconds, self.peak, self.where = seconds, peak, where


def build(path: Path, synapses: int, seed: int, *, log=print,  # type: ignore[no-untyped-def]
          max_memory: int | None = None, max_seconds: float | None = None
          ) -> tuple[float | None, int, int]:
    """Run ``opencave synth`` as a child process; its wall time and the peak resident memory
    of its process tree (all of it, and its own: without pages of memory-mapped files). Over
    ``max_memory`` bytes of its own memory or ``max_seconds``, the build is stopped
    (after recording where it was, with py-spy) and :class:`BuildStopped` is raised.
    An interrupted build there resumes (its wall time is then unknown: None)."""
    resuming = (path / ".synth-checkpoint").exists()
    if path.exists() and not resuming:
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"{'resuming' if resuming else 'building'} the {synapses:,}-synapse datastack "
        f"(opencave synth) in {path} …")
    started = time.perf_counter()
    with open(path.with_suffix(".synth.log"), "a" if resuming else "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "opencave.cli", "synth", "--out", str(path),
             "--synapses", str(synapses), "--seed", str(seed)],
            stdout=out, stderr=subprocess.STDOUT)
        with MemoryWatch(proc.pid, interval=0.2) as watch:
            while proc.poll() is None:
                elapsed = time.perf_counter() - started
                over = ((max_memory and watch.peak_anon > max_memory)
                        or (max_seconds and elapsed > max_seconds))
                if over:
                    where = stack_of(proc.pid)
                    proc.kill()
                    proc.wait()
                    raise BuildStopped(
                        f"opencave synth stopped after {elapsed / 60:.1f} min at "
                        f"{watch.peak_anon / 2**30:.2f} GiB of its own (cap: "
                        f"{(max_memory or 0) / 2**30:.0f} GiB, {(max_seconds or 0) / 60:.0f} "
                        f"min), in {where}", elapsed, watch.peak_anon, where)
                time.sleep(0.5)
            code = proc.returncode
    if code != 0:
        raise RuntimeError(f"opencave synth failed ({code}); see {out.name}")
    seconds = time.perf_counter() - started
    part = " (the resumed part)" if resuming else ""
    log(f"  built in {seconds:.0f} s{part}, peak memory {watch.peak_anon / 2**30:.2f} GiB of "
        f"its own, {watch.peak / 2**30:.2f} GiB resident with mapped files")
    return None if resuming else seconds, watch.peak, watch.peak_anon


def stack_of(pid: int) -> str:
    """The innermost opencave frames of a process's main thread (py-spy dump), or ''."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return "(py-spy not installed)"
    try:
        dump = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True,
                              text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "(py-spy failed)"
    frames = [line.strip() for line in dump.splitlines()
              if "opencave/" in line and "cli/" not in line]
    return " ← ".join(frames[:4]) or "(no opencave frame)"


def engine_instance(path: Path) -> OpenCave:
    """The datastack's instance for measuring the engine: every query runs (the result
    cache, which answers repeats from files, is off)."""
    return OpenCave(Settings(path, result_cache_bytes=0))


def measure(path: Path, synapses: int, seed: int, seconds: float | None,
            peak: int | None, peak_anon: int | None = None) -> SynthStats:
    cave = OpenCave(path)
    try:
        svc = cave.materialization()
        seen: set[str] = set()
        version_bytes: dict[str, int] = {}
        version_rows: dict[str, int] = {}
        for version in cave.versions.available(DATASTACK):
            added = 0
            for snapshot in cave.versions.snapshots(version).values():
                for part in snapshot.parts:
                    for rel in (part.segment.path, *(m.path for m in part.masks)):
                        if rel and rel not in seen:
                            seen.add(rel)
                            added += file_bytes(cave.data.absolute(rel))  # with serving copy
            version_bytes[str(version.version)] = added
            version_rows[str(version.version)] = svc.row_count(DATASTACK, version.version,
                                                               "synapses_pni_2")
    finally:
        cave.close()
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return SynthStats(synapses, seed, seconds, peak, disk, version_bytes, version_rows,
                      peak_anon=peak_anon)
