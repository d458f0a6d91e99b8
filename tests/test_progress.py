"""Progress bars show each step's peak memory of the process's own."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from rich.progress import Progress

from opencave.progress import PeakMemory, own_memory, sample_memory

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@linux
def test_own_memory_grows_with_what_the_process_holds():
    before = own_memory()
    held = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    assert own_memory() - before > 48 * 2**20
    del held


@linux
def test_a_step_keeps_its_peak_after_it_finished():
    progress = Progress(PeakMemory())
    task_id = progress.add_task("step", total=1)
    task = progress.tasks[0]
    held = np.ones(64 * 2**20 // 8)
    sample_memory(progress)
    during = PeakMemory().render(task).plain
    progress.update(task_id, completed=1)
    del held
    sample_memory(progress)
    assert PeakMemory().render(task).plain == during and during.endswith(" GiB")
    assert task.fields["peak_memory"] >= 64 * 2**20
