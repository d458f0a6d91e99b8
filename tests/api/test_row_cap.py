"""The optional row cap behaves like the original: results stop at N rows and say so; so
does a query's own limit."""

from __future__ import annotations

import logging

import pytest

from opencave.api import create_app
from opencave.instance import OpenCave
from opencave.materialize import service
from opencave.settings import Settings
from tests.conftest import LiveServer


def test_capped_queries_return_n_rows_and_warn(synth_dir, caplog):
    from caveclient import CAVEclient

    cave = OpenCave(Settings(data_dir=synth_dir, row_cap=500))
    try:
        with LiveServer(create_app(cave)) as live:
            client = CAVEclient("minnie65_public", server_address=live.url)
            with caplog.at_level(logging.WARNING):
                rows = client.materialize.query_table("synapses_pni_2")
            assert len(rows) == 500
            assert 'Limited query to 500 rows' in caplog.text
            caplog.clear()
            few = client.materialize.query_table("nucleus_detection_v0", limit=20)
            assert len(few) == 20 and 'Limited query to 20 rows' in caplog.text
            caplog.clear()
            small = client.materialize.query_table("coregistration_manual_v4")
            assert len(small) < 500 and "Limited" not in caplog.text
    finally:
        cave.close()


@pytest.mark.parametrize("whole_page_rows", [service.WHOLE_PAGE_ROWS, 5],
                         ids=["page read whole", "page counted first"])
def test_a_limit_warns_when_the_result_fills_it(synth_dir, caplog, monkeypatch,
                                                 whole_page_rows):
    from caveclient import CAVEclient

    monkeypatch.setattr(service, "WHOLE_PAGE_ROWS", whole_page_rows)
    with OpenCave(Settings(data_dir=synth_dir)) as cave, LiveServer(create_app(cave)) as live:
        client = CAVEclient("minnie65_public", server_address=live.url)
        table = "nucleus_detection_v0"
        total = len(client.materialize.query_table(table))
        for limit, rows, warned in [(3, 3, True), (total, total, True), (total + 1, total, False)]:
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                got = client.materialize.query_table(table, limit=limit)
            assert len(got) == rows
            assert (f"Limited query to {limit} rows" in caplog.text) is warned, limit
