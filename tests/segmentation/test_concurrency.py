"""Concurrent edits: threads on different and on the same roots, and two processes."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import numpy as np

from opencave.segmentation import SegmentationGraph
from opencave.storage import LiveStore

from .helpers import Model, build, partition, supervoxels


def _graph(tmp_path: Path):  # type: ignore[no-untyped-def]
    chunks = [(x, y, 0) for x in range(4) for y in range(2)]
    svs = supervoxels(chunks, 4)
    return build(tmp_path, svs, []), svs


def test_threads_on_different_and_same_roots(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g, svs = _graph(tmp_path)
    pairs = [(svs[i], svs[i + 1]) for i in range(0, len(svs) - 1, 2)]  # disjoint roots
    pairs += [(svs[0], svs[j]) for j in range(3, len(svs), 6)]  # all touch svs[0]'s root
    errors: list[BaseException] = []

    def worker(chunk: list) -> None:  # type: ignore[type-arg]
        for a, b in chunk:
            try:
                g.merge(a, b, user_id=threading.current_thread().name)
            except Exception as exc:  # merging pieces a racing merge already joined
                if "same segment" not in str(exc):
                    errors.append(exc)

    threads = [threading.Thread(target=worker, args=(pairs[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ops = g.operations()
    assert [op.id for op in ops] == list(range(1, len(ops) + 1))
    model = Model(svs, np.zeros((0, 2), np.uint64), np.zeros(0))
    for op in ops:
        a, b = op.added_edges[0].tolist()
        model.active[(a, b)] = 1.0
    assert partition(g.get_roots(svs), svs) == model.components()
    stamps = [op.timestamp for op in ops]
    assert stamps == sorted(stamps)


def _merge_in_process(directory: str, table_id: str, pairs: list) -> None:  # type: ignore[type-arg]
    g = SegmentationGraph.open(
        LiveStore.in_directory(Path(directory)), Path(directory) / table_id, table_id
    )
    for a, b in pairs:
        g.merge(a, b, user_id="process")


def test_two_processes_share_one_database(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g, svs = _graph(tmp_path)
    left = [(int(svs[i]), int(svs[i + 1])) for i in range(0, 16, 2)]
    right = [(int(svs[i]), int(svs[i + 1])) for i in range(16, 32, 2)]
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_merge_in_process, args=(str(tmp_path), g.table_id, p))
        for p in (left, right)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    ops = g.operations()
    assert len(ops) == 16 and [op.id for op in ops] == list(range(1, 17))
    expected = {frozenset(p) for p in left + right}
    assert partition(g.get_roots(svs), svs) == expected
    new_roots = np.concatenate([op.new_root_ids for op in ops])
    assert len(np.unique(new_roots)) == 16  # no id was minted twice
