"""Progress bars for long work (rich), silent when disabled.

Each bar also shows the process's own memory at its peak during that step (resident memory
without mapped files, sampled four times a second, also when the output is a file): where a
long build needs its memory.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

_STATUS = Path("/proc/self/status")


def own_memory() -> int | None:
    """This process's resident memory of its own (``RssAnon``: mapped file pages excluded),
    in bytes; None where the system does not say (not Linux)."""
    try:
        found = re.search(r"RssAnon:\s+(\d+) kB", _STATUS.read_text())
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


class PeakMemory(ProgressColumn):
    """The peak of :func:`own_memory` while the task ran (see :func:`sample_memory`)."""

    def render(self, task: Task) -> Text:
        peak = task.fields.get("peak_memory")
        return Text(f"{peak / 2**30:.1f} GiB" if peak else "", style="magenta")


def sample_memory(progress: Progress) -> None:
    """Record :func:`own_memory` as the peak of every unfinished task where it is higher."""
    now = own_memory()
    if now is None:
        return
    for task in progress.tasks:
        if not task.finished and now > task.fields.get("peak_memory", 0):
            progress.update(task.id, peak_memory=now)


@contextmanager
def _sampling(progress: Progress, interval: float = 0.25) -> Iterator[None]:
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            sample_memory(progress)

    thread = threading.Thread(target=run, name="memory-sampler", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class Steps:
    """A named sequence of steps, each optionally with a total, shown as progress bars."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress

    def task(self, description: str, total: float | None = None) -> TaskID | None:
        if self._progress is None:
            return None
        return self._progress.add_task(description, total=total)

    def advance(self, task: TaskID | None, amount: float = 1) -> None:
        if self._progress is not None and task is not None:
            self._progress.advance(task, amount)

    def done(self, task: TaskID | None) -> None:
        if self._progress is not None and task is not None:
            total = self._progress.tasks[task].total
            self._progress.update(task, completed=total if total is not None else 1,
                                  total=total if total is not None else 1)


@contextmanager
def steps(enabled: bool = True) -> Iterator[Steps]:
    if not enabled:
        yield Steps(None)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), PeakMemory(),
    )
    with progress, _sampling(progress):
        yield Steps(progress)
