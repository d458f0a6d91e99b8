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

from .layout import DATASTACK
from .server import MemoryWatch

CACHE = Path(__file__).resolve().parent / ".cache"


@dataclass
class SynthStats:
    synapses: int
    seed: int
    seconds: float | None  # None: built outside the benchmark, time unknown
    peak_rss: int | None
    disk_bytes: int
    #: bytes each version added: version 117 holds the bulk segments, later ones their
    #: delta segments and masks
    version_bytes: dict[str, int]
    version_rows: dict[str, int]  # synapse rows visible in each version
    note: str = ""


def directory(synapses: int, seed: int) -> Path:
    return CACHE / f"ds-{synapses}-seed{seed}"


def _complete(path: Path) -> bool:
    return (path / "live.sqlite").exists() and not (path / ".synth-incomplete").exists()


def ensure(synapses: int, seed: int, *, log=print) -> tuple[Path, SynthStats]:  # type: ignore[no-untyped-def]
    path = directory(synapses, seed)
    stats_file = path.with_suffix(".json")
    if _complete(path) and stats_file.exists():
        return path, SynthStats(**json.loads(stats_file.read_text()))
    seconds = peak = None
    if not _complete(path):
        seconds, peak = build(path, synapses, seed, log=log)
    stats = measure(path, synapses, seed, seconds, peak)
    stats_file.write_text(json.dumps(asdict(stats), indent=1))
    return path, stats


def build(path: Path, synapses: int, seed: int, *, log=print) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Run ``opencave synth`` as a child process; its wall time and the peak resident memory
    of its process tree."""
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"building the {synapses:,}-synapse datastack (opencave synth) in {path} …")
    started = time.perf_counter()
    with open(path.with_suffix(".synth.log"), "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "opencave.cli", "synth", "--out", str(path),
             "--synapses", str(synapses), "--seed", str(seed)],
            stdout=out, stderr=subprocess.STDOUT)
        with MemoryWatch(proc.pid, interval=0.2) as watch:
            code = proc.wait()
    if code != 0:
        raise RuntimeError(f"opencave synth failed ({code}); see {out.name}")
    seconds = time.perf_counter() - started
    log(f"  built in {seconds:.0f} s, peak memory {watch.peak / 2**30:.2f} GiB")
    return seconds, watch.peak


def measure(path: Path, synapses: int, seed: int, seconds: float | None,
            peak: int | None) -> SynthStats:
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
                    for rel in (part.segment.path, part.masked):
                        if rel and rel not in seen:
                            seen.add(rel)
                            added += cave.data.absolute(rel).stat().st_size
            version_bytes[str(version.version)] = added
            version_rows[str(version.version)] = svc.row_count(DATASTACK, version.version,
                                                               "synapses_pni_2")
    finally:
        cave.close()
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return SynthStats(synapses, seed, seconds, peak, disk, version_bytes, version_rows)
