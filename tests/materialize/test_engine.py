"""The query engine admits a bounded number of queries at once: the others wait for a slot,
and a clear 503 (Busy) comes back only when none frees in time; lookups have slots of their
own. It parses each count statement once and binds every later query's values to it,
streams results in batches, and pushes a list of keys a query joins into the scans."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pytest

from opencave.errors import Busy
from opencave.materialize import engine as engine_module
from opencave.materialize.engine import (
    IN_FILTER_ROWS,
    PARSED_STATEMENTS,
    QueryEngine,
    QuerySlots,
)
from opencave.materialize.query import CompiledQuery


def numbers(n: int, *, lookup: bool = False) -> CompiledQuery:
    sql = "SELECT range AS i FROM range(?)"
    return CompiledQuery(sql, [n], (), f"SELECT count(*) FROM ({sql})", [n], lookup=lookup)


@pytest.fixture
def engine():
    engine = QueryEngine(max_queries=1, queue_seconds=0.3)
    yield engine
    engine.close()


def test_an_open_stream_holds_its_slot_until_closed(engine):
    stream = engine.stream(numbers(10))
    with pytest.raises(Busy, match="try again"):
        engine.count(numbers(3))
    stream.close()
    stream.close()  # closing twice gives the slot back once
    assert engine.count(numbers(3)) == 3


def test_reading_a_stream_to_the_end_frees_its_slot(engine):
    assert engine.stream(numbers(100_000)).read_all().num_rows == 100_000
    assert sum(b.num_rows for b in engine.stream(numbers(5))) == 5
    assert engine.run("SELECT 1 AS one", []).num_rows == 1


def test_a_waiting_query_runs_as_soon_as_a_slot_frees(engine):
    stream = engine.stream(numbers(10))
    timer = threading.Timer(0.1, stream.close)
    timer.start()
    assert engine.count(numbers(7)) == 7  # waited for the stream, within the 0.3 s
    timer.join()


def test_a_failing_query_gives_its_slot_back(engine):
    with pytest.raises(Exception, match="nope"):
        engine.stream(CompiledQuery("SELECT * FROM nope", [], (), "", []))
    assert engine.count(numbers(2)) == 2


def test_lookups_run_while_long_streams_hold_every_other_slot():
    engine = QueryEngine(max_queries=1, lookup_queries=1, queue_seconds=0.3)
    download = engine.stream(numbers(1_000_000))  # a client reading a big result slowly
    assert engine.count(numbers(3, lookup=True)) == 3
    assert engine.stream(numbers(5, lookup=True)).read_all().num_rows == 5
    with pytest.raises(Busy):
        engine.count(numbers(3))  # another scan waits for the download's slot
    lookup = engine.stream(numbers(7, lookup=True))
    with pytest.raises(Busy):
        engine.count(numbers(2, lookup=True))  # lookups are bounded too
    lookup.close()
    download.close()
    assert engine.count(numbers(4)) == 4
    engine.close()


def test_lookups_also_take_free_query_slots_first_their_own():
    engine = QueryEngine(max_queries=1, lookup_queries=1, queue_seconds=0.3)
    first = engine.stream(numbers(10, lookup=True))  # the slot kept for lookups
    second = engine.stream(numbers(10, lookup=True))  # the free query slot
    with pytest.raises(Busy):
        engine.count(numbers(3))
    second.close()
    assert engine.count(numbers(3)) == 3
    first.close()
    engine.close()


def test_a_free_query_slot_goes_to_a_waiting_query_before_lookups():
    slots = QuerySlots(queries=1, lookups=1, queue_seconds=0.1)
    slots.acquire(lookup=True)  # the slot kept for lookups
    slots._waiting = 1  # as when a released slot wakes a query and a lookup together
    with pytest.raises(Busy):
        slots.acquire(lookup=True)
    slots._waiting = 0
    release = slots.acquire(lookup=True)  # no query waits: the lookup takes the free slot
    with pytest.raises(Busy):
        slots.acquire(lookup=False)
    release()
    slots.acquire(lookup=False)


def test_one_parsed_statement_answers_every_value_bound_to_it_from_any_thread():
    engine = QueryEngine(max_queries=4)
    sizes = [n % 97 for n in range(400)]
    with ThreadPoolExecutor(8) as pool:
        counted = list(pool.map(lambda n: engine.count(numbers(n)), sizes))
        streamed = list(pool.map(lambda n: engine.stream(numbers(n)).read_all().num_rows,
                                 sizes))
    assert counted == streamed == sizes
    assert len(engine._parsed) == 1  # the count's text, parsed once
    engine.close()


def test_the_parsed_statements_kept_are_bounded(engine):
    for n in range(PARSED_STATEMENTS + 20):
        assert engine.count(CompiledQuery("", [], (), f"SELECT {n}", [])) == n
    assert len(engine._parsed) == PARSED_STATEMENTS


def test_streams_bind_once_through_duckdbs_submit_and_without_it_through_relations(monkeypatch):
    """A DuckDB without the private submit streams through its relation API (binding each
    statement twice): a DuckDB upgrade that drops it fails here first, not in production."""
    assert engine_module._PRIVATE_SUBMIT
    engine = QueryEngine()
    for private in (True, False):
        monkeypatch.setattr(engine_module, "_PRIVATE_SUBMIT", private)
        batches = list(engine.stream(numbers(70_000), batch_rows=50_000))
        assert [b.num_rows for b in batches][:1] == [50_000]
        assert sum(b.num_rows for b in batches) == 70_000
    engine.close()


def scanned_row_groups(engine: QueryEngine, sql: str, params: list, attachments: dict) -> list:
    """(row groups read, row groups in the table) for each table scan, from DuckDB's profile."""
    explain = engine.run(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params, attachments=attachments)
    found = []

    def walk(node: dict) -> None:
        if node.get("type") == "TABLE_SCAN":
            found.append((node["row_groups_scanned"], node["total_row_groups_to_scan"]))
        for child in node.get("children", []):
            walk(child)

    for node in json.loads(explain.column(1)[0].as_py())["operator"]:
        walk(node)
    return found


def test_a_list_of_keys_reads_only_the_row_groups_holding_them(engine, tmp_path):
    """A list of roots (the tutorials' 1,436 proofread neurons) is bound once and joined; the
    join pushes the list itself into the scan, so a copy sorted by that key skips every row
    group holding none of them (at 3.4e8 synapses: Q2 2.2 → 0.55 s)."""
    path = tmp_path / "sorted.duckdb"
    with duckdb.connect() as con:
        con.execute(f"ATTACH '{path}' AS f (ROW_GROUP_SIZE 2048)")
        con.execute("CREATE TABLE f.t AS SELECT range * 1000 AS k, range % 7 AS x "
                    "FROM range(100000)")
    # Sparse keys (as root ids are) in row groups 5 and 40: their min and max alone let 36
    # row groups through, and DuckDB's Bloom filter cannot skip a row group by its zone map.
    keys = [1000 * k for k in (*range(5 * 2048, 6 * 2048, 8), *range(40 * 2048, 41 * 2048, 8))]
    assert 50 < len(keys) <= IN_FILTER_ROWS  # longer than DuckDB's default 50
    sql = ("WITH l AS (SELECT unnest(?::BIGINT[]) AS v) "
           "SELECT * FROM f.t WHERE k IN (SELECT v FROM l)")
    rows = engine.run(sql, [keys], attachments={"f": str(path)})
    assert sorted(rows["k"].to_pylist()) == keys
    [(read, total)] = scanned_row_groups(engine, sql, [keys], {"f": str(path)})
    assert total == 49 and read <= 2
