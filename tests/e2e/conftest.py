"""Fixtures of the end-to-end tests."""

import pytest

from opencave.materialize import query


@pytest.fixture(params=["tables-small", "no-table-small"])
def table_sizes(request, monkeypatch):
    """Both ways pages and joins are read: the test tables are small, so every query is a
    lookup and runs as compiled; with no table small, pages are found by their ids first,
    joined pages from the first table's leading rows, and joins read their second table by
    the values their filtered first names (materialize.pages)."""
    if request.param == "no-table-small":
        monkeypatch.setattr(query, "LOOKUP_TABLE_ROWS", 0)
