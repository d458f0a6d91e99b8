"""Settings come from arguments or the environment; queries get a bounded DuckDB memory."""

from __future__ import annotations

from opencave.instance import OpenCave
from opencave.settings import DEFAULT_QUERY_MEMORY, Settings


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
