"""A part whose masks hold more ids than one anti-join should hash is read a range of ids at a
time (``MASK_JOIN_IDS``), each range against only its masks' ids: every version answers the
same, whole or filtered, paged or counted."""

from __future__ import annotations

import pandas as pd
import pytest

from opencave.auth import ANONYMOUS
from opencave.instance import OpenCave
from opencave.materialize import query
from opencave.synth import world

DS = "minnie65_public"
SYNAPSES = "synapses_pni_2"
VERSIONS = [number for number, _ in world.VERSIONS]


def rows(cave: OpenCave, version: int, body: dict) -> pd.DataFrame:
    result = cave.materialization().query_table(DS, version, SYNAPSES, body)
    return result.stream.read_all().to_pandas().sort_values("id", ignore_index=True)


def count(cave: OpenCave, version: int, body: dict) -> int:
    result = cave.materialization().query_table(DS, version, SYNAPSES, body, count=True)
    return result.stream.read_all()["count"][0].as_py()


def anti_joins(cave: OpenCave, version: int, body: dict) -> int:
    """How many anti-joins the query's SQL has (a range of ids has its own)."""
    svc = cave.materialization()
    datastack = svc.access.datastack(ANONYMOUS, DS)
    relation = svc._relation(ANONYMOUS, datastack, svc.versions.get(DS, version), SYNAPSES)
    compiled = query.compile_query(query.parse_query(body, [relation]), svc.data)
    return compiled.sql.count("ANTI JOIN")


@pytest.mark.parametrize("version", VERSIONS)
def test_masks_read_a_range_of_ids_at_a_time_hide_the_same_rows(cave, version, monkeypatch):
    everything = rows(cave, version, {})
    root = int(everything.post_pt_root_id.mode()[0])
    bodies = [
        {},  # the whole table: what the ranges are for
        {"filter_greater_dict": {SYNAPSES: {"size": 0.5}}},  # filters not on the masks' keys
        {"filter_out_dict": {SYNAPSES: {"post_pt_root_id": [root]}}},
        {"limit": 7, "offset": 11},
        {"filter_in_dict": {SYNAPSES: {"post_pt_root_id": [root]}}},  # a lookup: one range
    ]
    expected = [(rows(cave, version, b), count(cave, version, b)) for b in bodies]
    one_range = anti_joins(cave, version, {})
    monkeypatch.setattr(query, "MASK_JOIN_IDS", 2_000)
    assert anti_joins(cave, version, {}) > one_range  # ranges, each with its anti-joins
    assert anti_joins(cave, version, bodies[-1]) == one_range
    for body, (frame, total) in zip(bodies, expected, strict=True):
        pd.testing.assert_frame_equal(rows(cave, version, body), frame)
        assert count(cave, version, body) == total == len(frame)
