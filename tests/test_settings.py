"""Settings come from arguments or the environment; queries get a bounded DuckDB memory."""

from __future__ import annotations

import pytest

from opencave.instance import OpenCave
from opencave.materialize.compaction import SMALL_TABLE_ROWS
from opencave.settings import (
    DEFAULT_QUERY_MEMORY,
    DEFAULT_RESULT_CACHE,
    InvalidSetting,
    Settings,
)


def _memory_limit(cave: OpenCave) -> str:
    return cave.engine.run("SELECT current_setting('memory_limit') AS m", []).column("m")[0].as_py()


def test_queries_get_a_bounded_memory_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENCAVE_MEMORY_LIMIT", raising=False)
    assert Settings(tmp_path).query_memory_limit == DEFAULT_QUERY_MEMORY
    with OpenCave(tmp_path / "a") as cave:
        assert _memory_limit(cave) == "953.6 MiB"  # DuckDB's spelling of 1GB


def test_the_environment_overrides_the_memory_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENCAVE_MEMORY_LIMIT", "2GB")
    with OpenCave(tmp_path / "b") as cave:
        assert _memory_limit(cave) == "1.8 GiB"


def test_a_setting_out_of_range_names_the_variable_and_what_it_accepts(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENCAVE_MAX_QUERIES", "0")
    with pytest.raises(InvalidSetting, match=r"OPENCAVE_MAX_QUERIES.*at least 1, got 0"):
        Settings(tmp_path)


def test_a_setting_that_is_not_a_number_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENCAVE_ROW_CAP", "lots")
    with pytest.raises(InvalidSetting, match=r"OPENCAVE_ROW_CAP must be a whole number, got 'lots'"
                       ):
        Settings(tmp_path)


def test_zero_compacts_no_table_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENCAVE_COMPACT_WHOLE_ROWS", "0")
    assert Settings(tmp_path).compact_whole_rows == 0
    monkeypatch.delenv("OPENCAVE_COMPACT_WHOLE_ROWS")
    assert Settings(tmp_path).compact_whole_rows == SMALL_TABLE_ROWS


def test_an_unknown_compression_lists_the_accepted_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENCAVE_ARROW_COMPRESSION", "gzip")
    with pytest.raises(InvalidSetting, match=r"one of auto, lz4, zstd, none; got 'gzip'"):
        Settings(tmp_path)


def test_the_result_cache_takes_a_size_with_units_and_zero_turns_it_off(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENCAVE_RESULT_CACHE", raising=False)
    assert Settings(tmp_path).result_cache_bytes == DEFAULT_RESULT_CACHE
    for text, size in [("10GiB", 10 * 2**30), ("500 MB", 500 * 10**6), ("1.5gb", 1.5e9),
                       ("4096", 4096)]:
        monkeypatch.setenv("OPENCAVE_RESULT_CACHE", text)
        assert Settings(tmp_path).result_cache_bytes == size
    monkeypatch.setenv("OPENCAVE_RESULT_CACHE", "0")
    with OpenCave(tmp_path / "c") as cave:
        assert cave.results is None


@pytest.mark.parametrize("text", ["lots", "-1GB", "2XB", "GB", "inf", "nan"])
def test_a_result_cache_size_that_is_not_one_says_what_is_accepted(tmp_path, monkeypatch, text):
    monkeypatch.setenv("OPENCAVE_RESULT_CACHE", text)
    with pytest.raises(InvalidSetting, match=r"OPENCAVE_RESULT_CACHE must be a size such as "
                       r"2GiB, 500MB or 0 \(units: B, KB, .*GiB, TiB\); got "):
        Settings(tmp_path)
