"""Versions on a schedule: every day at a fixed UTC time (the original's habit is 08:10), a
new version of each scheduled datastack, then the expiry policy. Runs inside
``opencave serve`` as a background thread; a failed run is logged and retried the next day
(the version stays invisible, see :mod:`.materializer`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, time, timedelta

from ..errors import InvalidRequest
from ..timestamps import now

log = logging.getLogger("opencave.schedule")


def parse_daily_time(text: str) -> time:
    """``HH:MM`` in UTC."""
    try:
        hours, minutes = (int(part) for part in text.split(":"))
        return time(hours, minutes)
    except (ValueError, TypeError):
        raise InvalidRequest(f"a daily time is HH:MM in UTC, e.g. 08:10; got {text!r}") from None


def next_run(after: datetime, at: time) -> datetime:
    candidate = after.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    return candidate if candidate > after else candidate + timedelta(days=1)


class DailyMaterialization(threading.Thread):
    """Calls ``run(datastack)`` for each datastack every day at ``at`` (UTC)."""

    def __init__(self, at: time, datastacks: Callable[[], Sequence[str]],
                 run: Callable[[str], object], clock: Callable[[], datetime] = now) -> None:
        super().__init__(name="opencave-daily-materialization", daemon=True)
        self.at = at
        self.datastacks = datastacks
        self.run_one = run
        self.clock = clock
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            wait = (next_run(self.clock(), self.at) - self.clock()).total_seconds()
            if self._stop.wait(max(0.0, wait)):
                return
            self.run_once()

    def run_once(self) -> None:
        for name in self.datastacks():
            try:
                self.run_one(name)
                log.info("materialized a new version of %s", name)
            except Exception:  # a failed day must not stop the schedule
                log.exception("scheduled materialization of %s failed", name)

    def stop(self) -> None:
        self._stop.set()
