"""The append-only sorted levels behind the overlay."""

from __future__ import annotations

import numpy as np

from opencave.segmentation.levels import KeyedLog, NodeLog

SCHEMA = {"child": "u8", "ts": "i8", "parent": "u8"}


def _batch(children: list[int], ts: int, parents: list[int]) -> dict[str, np.ndarray]:
    return {
        "child": np.array(children, "u8"),
        "ts": np.full(len(children), ts),
        "parent": np.array(parents, "u8"),
    }


def test_last_record_at_or_before_a_time_across_levels() -> None:
    log = KeyedLog.empty("child", SCHEMA)
    truth: dict[int, list[tuple[int, int]]] = {}
    rng = np.random.default_rng(0)
    for ts in range(1, 200):
        children = rng.choice(50, size=rng.integers(1, 6), replace=False).tolist()
        parents = [1000 * ts + c for c in children]
        log = log.appended(_batch(children, ts, parents))
        for c, p in zip(children, parents, strict=True):
            truth.setdefault(c, []).append((ts, p))
    assert len(log.levels) < 10 and len(log) == sum(len(v) for v in truth.values())
    keys = np.arange(60, dtype="u8")
    for when in (0, 1, 57, 120, 199, 500):
        found, rows = log.last_at(keys, when)
        for k in range(60):
            hits = [p for t, p in truth.get(k, []) if t <= when]
            assert found[k] == bool(hits)
            if hits:
                assert rows["parent"][k] == hits[-1]


def test_matching_and_between() -> None:
    log = KeyedLog.empty("ts", SCHEMA)
    for ts in range(1, 6):
        log = log.appended(_batch([ts], ts, [ts * 10]))
    assert sorted(log.between(2, 4)["parent"].tolist()) == [30, 40]
    by_child = KeyedLog.empty("child", SCHEMA).appended(_batch([3, 1, 3], 1, [7, 8, 9]))
    assert sorted(by_child.matching(np.array([3], "u8"))["parent"].tolist()) == [7, 9]
    assert len(by_child.matching(np.array([2], "u8"))["parent"]) == 0
    assert by_child.appended(_batch([], 2, [])) is by_child


def test_node_log_children() -> None:
    log = NodeLog()
    for op in range(1, 40):
        ids = np.array([op * 2, op * 2 + 1], "u8")
        log = log.appended(
            ids,
            np.full(2, op),
            np.full(2, op),
            np.array([0, 1, 3]),
            np.array([op, op + 100, op + 200], "u8"),
        )
    found, kids, owner = log.children(np.array([9, 4, 999], "u8"))
    assert found.tolist() == [True, True, False]
    assert sorted(kids[owner == 0].tolist()) == [104, 204]
    assert kids[owner == 1].tolist() == [2]
    assert log.child_counts(np.array([9, 4, 999], "u8")).tolist() == [2, 1, 0]
    known, created, op = log.created(np.array([77, 1], "u8"))
    assert known.tolist() == [True, False] and created[0] == 38 and op[0] == 38
