"""Finished results are kept on disk and read back when the same query comes again: only
whole results of reproducible queries, within a budget that drops the least recently read
first, and never a file cut short."""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pytest

from opencave.errors import Busy
from opencave.materialize.engine import QueryEngine
from opencave.materialize.query import CompiledQuery
from opencave.materialize.results import SUFFIX, ResultCache

ROW_BYTES = 8  # one BIGINT column


def numbers(n: int, **options: object) -> CompiledQuery:
    sql = "SELECT range AS i FROM range(?)"
    return CompiledQuery(sql, [n], (), f"SELECT count(*) FROM ({sql})", [n],
                         **{"reproducible": True, **options})


@pytest.fixture
def engine():
    engine = QueryEngine(max_queries=1, queue_seconds=0.2)
    yield engine
    engine.close()


def run(cache: ResultCache, engine: QueryEngine, query: CompiledQuery) -> tuple[str, pa.Table]:
    """The query answered as the service answers it: from the cache, or run and kept."""
    key = cache.key(query)
    assert key is not None
    stream, status = cache.answer(key, lambda: engine.stream(query))
    return status, stream.read_all()


def files(cache: ResultCache) -> list[str]:
    return sorted(p.name for p in cache.directory.iterdir())


def test_a_repeated_query_is_read_from_its_file_without_running(tmp_path, engine):
    cache = ResultCache(tmp_path, 10 * 2**20)
    status, first = run(cache, engine, numbers(100_000))
    assert status == "miss" and first.num_rows == 100_000
    holding_the_only_slot = engine.stream(numbers(5))
    status, again = run(cache, engine, numbers(100_000))  # needs no query slot
    assert status == "hit" and again.equals(first)
    with pytest.raises(Busy):
        run(cache, engine, numbers(99_999))  # another query must wait for the slot
    holding_the_only_slot.close()
    assert len(cache) == 1 and cache.bytes == os.path.getsize(cache.directory / files(cache)[0])


def test_a_kept_result_is_also_offered_as_the_ipc_stream_a_client_reads(tmp_path, engine):
    cache = ResultCache(tmp_path, 10 * 2**20)
    key = cache.key(numbers(100_000))
    first, status = cache.answer(key, lambda: engine.stream(numbers(100_000)))
    assert status == "miss" and first.encoded is None  # a running query is not encoded yet
    rows = first.read_all()
    again, status = cache.answer(key, lambda: engine.stream(numbers(100_000)))
    sent = b"".join(again.encoded.chunks())
    again.close()
    assert status == "hit" and len(sent) == again.encoded.size
    assert pa.ipc.open_stream(sent).read_all().equals(rows)


def test_the_key_tells_apart_values_and_files_and_leaves_out_what_may_change():
    assert ResultCache.key(numbers(3)) == ResultCache.key(numbers(3))
    assert ResultCache.key(numbers(3)) != ResultCache.key(numbers(4))
    assert ResultCache.key(numbers(3, attachments={"f_a": "/v1/a.duckdb"})) != (
        ResultCache.key(numbers(3, attachments={"f_a": "/v2/a.duckdb"})))
    assert ResultCache.key(numbers(3, reproducible=False)) is None  # live or random
    assert ResultCache.key(numbers(3, lookup=True)) is None  # cheap anyway


def test_a_stream_closed_before_its_end_leaves_nothing(tmp_path, engine):
    cache = ResultCache(tmp_path, 10 * 2**20)
    stream, _ = cache.answer(cache.key(numbers(500_000)), lambda: engine.stream(numbers(500_000)))
    next(iter(stream))  # the client read one batch and went away
    stream.close()
    assert files(cache) == [] and len(cache) == 0
    assert run(cache, engine, numbers(500_000))[0] == "miss"


def test_a_result_larger_than_a_quarter_of_the_budget_streams_whole_but_is_not_kept(
        tmp_path, engine):
    cache = ResultCache(tmp_path, 4 * 100_000 * ROW_BYTES)
    assert run(cache, engine, numbers(100_001))[1].num_rows == 100_001
    assert files(cache) == []
    assert run(cache, engine, numbers(90_000))[0] == "miss"
    assert len(files(cache)) == 1


def test_the_least_recently_read_results_go_first_when_the_budget_is_exceeded(
        tmp_path, engine):
    cache = ResultCache(tmp_path, 9 * 70_000 * ROW_BYTES // 2)  # room for four of ~70,000
    for n in (70_000, 70_001, 70_002, 70_003):
        run(cache, engine, numbers(n))
    assert run(cache, engine, numbers(70_000))[0] == "hit"  # now the most recently read
    run(cache, engine, numbers(70_004))
    assert len(cache) == 4 and cache.bytes <= cache.max_bytes
    for n in (70_000, 70_002, 70_003, 70_004):
        assert run(cache, engine, numbers(n))[0] == "hit"
    assert run(cache, engine, numbers(70_001))[0] == "miss"  # the one dropped


def test_kept_results_outlive_the_process_in_the_order_they_were_read(tmp_path, engine):
    cache = ResultCache(tmp_path, 10 * 2**20)
    for n in (1_000, 2_000):
        run(cache, engine, numbers(n))
    older = cache.directory / files(cache)[0]
    os.utime(older, (1, 1))
    reopened = ResultCache(tmp_path, 10 * 2**20)
    assert len(reopened) == 2 and reopened.bytes == cache.bytes
    assert next(iter(reopened._entries)) == older.name.removesuffix(SUFFIX)
    assert run(reopened, engine, numbers(2_000)) == ("hit", run(cache, engine, numbers(2_000))[1])


def test_a_file_cut_short_by_a_crash_is_dropped_and_the_query_runs_again(tmp_path, engine):
    cache = ResultCache(tmp_path, 10 * 2**20)
    expected = run(cache, engine, numbers(50_000))[1]
    path = cache.directory / files(cache)[0]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert run(cache, engine, numbers(50_000)) == ("miss", expected)
    assert run(cache, engine, numbers(50_000)) == ("hit", expected)


def test_a_request_for_a_result_being_recorded_waits_for_it_instead_of_running_again(
        tmp_path):
    cache = ResultCache(tmp_path, 10 * 2**20)
    engine = QueryEngine()
    runs = []

    def run_query():
        runs.append(1)
        return engine.stream(numbers(300_000))

    key = cache.key(numbers(300_000))
    first, status = cache.answer(key, run_query)
    assert status == "miss"
    with ThreadPoolExecutor() as pool:
        second = pool.submit(cache.answer, key, run_query)
        time.sleep(0.2)
        assert not second.done()  # waiting for the first client to finish reading
        expected = first.read_all()
        stream, status = second.result(timeout=10)
    assert (status, len(runs)) == ("hit", 1)
    assert stream.read_all().equals(expected)
    engine.close()


def test_a_slow_recording_is_waited_for_while_it_goes_on(tmp_path, engine):
    cache = ResultCache(tmp_path, 10 * 2**20)
    key = cache.key(numbers(300_000))
    first, _ = cache.answer(key, lambda: engine.stream(numbers(300_000)))

    def read_slowly():  # a batch every 0.1 s: longer in all than the stall limit
        for _ in first:
            time.sleep(0.1)

    with ThreadPoolExecutor() as pool:
        reading = pool.submit(read_slowly)
        second, status = cache.answer(key, lambda: engine.stream(numbers(300_000)),
                                      stall_seconds=0.3)
        reading.result()
    assert status == "hit" and second.read_all().num_rows == 300_000


def test_a_recording_that_stalls_is_not_waited_for(tmp_path, engine):
    cache = ResultCache(tmp_path, 10 * 2**20)
    key = cache.key(numbers(300_000))
    first, _ = cache.answer(key, lambda: engine.stream(numbers(300_000)))
    second, status = cache.answer(key, lambda: QueryEngine().stream(numbers(300_000)),
                                  stall_seconds=0.1)
    assert status == "miss" and second.read_all().num_rows == 300_000
    first.close()  # given up: nothing kept, and the next request records anew
    assert files(cache) == []
    assert run(cache, engine, numbers(300_000))[0] == "miss"
    assert run(cache, engine, numbers(300_000))[0] == "hit"


def test_a_query_that_fails_to_start_lets_the_next_request_run_it(tmp_path, engine):
    cache = ResultCache(tmp_path, 10 * 2**20)
    key = cache.key(numbers(10))

    def fails():
        raise Busy("no slot")

    with pytest.raises(Busy):
        cache.answer(key, fails)
    stream, status = cache.answer(key, lambda: engine.stream(numbers(10)), stall_seconds=0)
    assert status == "miss" and stream.read_all().num_rows == 10
    assert run(cache, engine, numbers(10))[0] == "hit"  # the second request recorded it


def test_a_cache_cleared_by_hand_fills_again(tmp_path, engine):
    cache = ResultCache(tmp_path / "cache", 10 * 2**20)
    run(cache, engine, numbers(1_000))
    shutil.rmtree(cache.directory)
    assert run(cache, engine, numbers(1_000))[0] == "miss"
    assert run(cache, engine, numbers(1_000))[0] == "hit" and len(cache) == 1


def test_a_failing_write_leaves_the_query_whole(tmp_path, engine):
    cache = ResultCache(tmp_path / "cache", 10 * 2**20)
    cache.directory.rmdir()
    cache.directory.write_text("")  # where the file should go, it cannot
    assert run(cache, engine, numbers(10_000))[1].num_rows == 10_000
    assert len(cache) == 0
