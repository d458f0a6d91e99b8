"""Progress bars for long work (rich), silent when disabled."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


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
        TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with progress:
        yield Steps(progress)
