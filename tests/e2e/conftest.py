"""Fixtures of the end-to-end tests."""

import pytest

from opencave.materialize import query


@pytest.fixture(params=["as-compiled", "found-by-ids"])
def page_path(request, monkeypatch):
    """Both ways a page is read: the test tables are small, so every query is a lookup and
    runs as compiled; with no table small, pages are found by their ids first and joined
    pages from the first table's leading rows (materialize.pages)."""
    if request.param == "found-by-ids":
        monkeypatch.setattr(query, "LOOKUP_TABLE_ROWS", 0)
