"""Segments, their serving copies and keyed masks: a query reads the same rows whichever
copy it uses — Parquet or native, sorted by pre or by post root — and a mask removes exactly
its rows, with the query's filters applied to it or not."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opencave.materialize.engine import QueryEngine
from opencave.materialize.query import compile_query, parse_query
from opencave.materialize.relations import Relation
from opencave.materialize.snapshots import Mask, SnapshotPart, TableSnapshot
from opencave.schemas import get_schema_type
from opencave.storage import segments
from opencave.storage.files import DataDir
from opencave.storage.segments import (
    Segment,
    arrow_schema,
    block_size,
    copy_sorted_segment,
    rewrite_serving_copy,
    serving_keys,
    serving_layout,
    serving_path,
    sorted_copy,
    write_mask,
    write_table_segment,
)
from opencave.timestamps import to_micros

SYNAPSE = get_schema_type("synapse")
KEYS = serving_keys(SYNAPSE.columns(), "pre_pt_root_id")
T = datetime(2022, 1, 1, tzinfo=UTC)
N = 3_000
ROOTS = np.arange(100, 130)


def synapses(rng: np.random.Generator) -> pa.Table:
    schema = arrow_schema(SYNAPSE)
    values = {
        "id": np.arange(1, N + 1), "created": [T] * N, "valid": [True] * N,
        "size": rng.random(N), "pre_pt_root_id": rng.choice(ROOTS, N),
        "post_pt_root_id": rng.choice(ROOTS, N), "pre_pt_supervoxel_id": np.ones(N, int),
        "post_pt_supervoxel_id": np.ones(N, int),
    }
    for point in ("pre_pt", "post_pt", "ctr_pt"):
        for axis in "xyz":
            values[f"{point}_position_{axis}"] = rng.integers(0, 1000, N)
    return pa.Table.from_arrays(
        [pa.array(values[f.name], f.type) if f.name in values else pa.nulls(N, f.type)
         for f in schema], schema=schema)


@pytest.fixture(scope="module", params=["parquet", "serving", "record", "record-scanned"])
def stored(request, tmp_path_factory):
    """One segment and a mask of a third of its rows, written as Parquet only, with serving
    copies, or as a large segment's: the Parquet record sorted by post root in place of that
    copy, read a few row groups at a time ("record") or scanned by DuckDB when a lookup
    would read more row groups than it allows ("record-scanned")."""
    kind = request.param
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segments, "SERVING_MIN_ROWS", 10**9 if kind == "parquet" else 0)
        patch.setattr(segments, "RECORD_ROW_GROUP_SIZE", 256)  # a root's rows span groups
        root = tmp_path_factory.mktemp(kind)
        rows = synapses(np.random.default_rng(7))
        order, keys = serving_layout(KEYS, segments.RECORD_SERVES_ROWS
                                     if kind.startswith("record") else N)
        write_table_segment(root / "seg.parquet", rows, order, keys)
        masked = rows.filter(pa.array(np.arange(N) % 3 == 0))
        # a chain of two masks, as versions append them
        halves = [masked.slice(0, masked.num_rows // 2), masked.slice(masked.num_rows // 2)]
        for name, half in zip(("mask-a.parquet", "mask-b.parquet"), halves, strict=True):
            write_mask(root / name, half, KEYS)
    part = SnapshotPart(Segment("seg.parquet", N, order), (
        Mask("mask-a.parquet", halves[0].num_rows, KEYS),
        Mask("mask-b.parquet", halves[1].num_rows, KEYS)))
    relation = Relation("syn", SYNAPSE.columns(), (4.0, 4.0, 40.0),
                        TableSnapshot("syn", to_micros(T), (part,), 0), "pre_pt_root_id")
    visible = rows.to_pandas()
    visible = visible[~visible.id.isin(masked.column("id").to_pylist())]
    return DataDir(root), QueryEngine(), relation, visible, kind


def test_serving_copies_hold_the_rows_sorted_by_each_key(stored):
    """Each key's rows are sorted by it in a native copy or, for a large segment's last
    key, in the Parquet record itself."""
    data, *_, kind = stored
    path = serving_path(data.root / "seg.parquet")
    assert path.exists() == (kind != "parquet")
    if kind == "parquet":
        return
    record = pq.read_table(data.root / "seg.parquet").to_pandas()
    record_key = "post_pt_root_id" if kind.startswith("record") else "pre_pt_root_id"
    assert record.equals(record.sort_values([record_key, "id"], ignore_index=True))
    with duckdb.connect(str(path), read_only=True) as con:
        assert block_size(con) == segments.SERVING_BLOCK_SIZE
        tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        copied = KEYS[:-1] if kind.startswith("record") else KEYS
        assert tables == {sorted_copy(key) for key in copied}
        for key in copied:
            column = con.sql(f'SELECT "{key}" FROM {sorted_copy(key)}').fetchnumpy()[key]
            assert len(column) == N and (np.diff(column) >= 0).all()


def test_large_segments_keep_one_native_copy_fewer():
    """From RECORD_SERVES_ROWS rows the record takes the last key's order (its copy would
    be a third full copy of the rows); tables with one key, and smaller segments, keep
    every copy."""
    big = segments.RECORD_SERVES_ROWS
    assert serving_layout(KEYS, big) == ("post_pt_root_id", ("pre_pt_root_id",))
    assert serving_layout(KEYS, big - 1) == ("pre_pt_root_id", KEYS)
    assert serving_layout(("target_id",), big) == ("target_id", ("target_id",))


def test_a_record_lookup_reads_the_row_groups_holding_its_values(tmp_path, monkeypatch):
    """Exactly the rows with the values asked for, from the groups whose statistics hold
    them; None (a scan for DuckDB) beyond RECORD_LOOKUP_GROUPS groups. Row groups of NULL
    keys, last in the record, never match."""
    monkeypatch.setattr(segments, "ROW_GROUP_SIZE", 100)
    rows = synapses(np.random.default_rng(9))
    post = rows.column("post_pt_root_id").to_numpy().copy()
    missing = post == ROOTS[-1]  # the last root's rows lose their key: NULLs, sorted last
    rows = rows.set_column(rows.schema.get_field_index("post_pt_root_id"), "post_pt_root_id",
                           pa.array(post, pa.int64(), mask=missing))
    path = tmp_path / "seg.parquet"
    write_table_segment(path, rows, "post_pt_root_id")
    reads: list[int] = []
    real_read = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, g, *a, **k: reads.append(g) or real_read(self, g, *a, **k))
    frame = rows.to_pandas()
    for values in ([ROOTS[0]], [ROOTS[3], ROOTS[17], 10**12], [ROOTS[-1]], [None, ROOTS[5]]):
        reads.clear()
        got = segments.read_record_rows(path, "post_pt_root_id", values).to_pandas()
        expected = frame[frame.post_pt_root_id.isin([v for v in values if v is not None])]
        assert sorted(got.id) == sorted(expected.id)
        assert len(reads) <= 2 * len(values)  # a root's ~100 rows span one or two groups
    assert segments.read_record_rows(path, "post_pt_root_id", ROOTS[:20].tolist()) is None


def test_a_records_footer_is_read_once_and_holds_back_no_other_record(tmp_path, monkeypatch):
    """Lookups arriving together at a fresh server read each record's footer once; while a
    new record's footer is being read, lookups in a record already read go on."""
    rows = synapses(np.random.default_rng(4))
    read, new = tmp_path / "read.parquet", tmp_path / "new.parquet"
    for path in (read, new):
        write_table_segment(path, rows, "post_pt_root_id")
    segments._read_record_index.cache_clear()
    footers: list[str] = []
    reading_new, release = threading.Event(), threading.Event()
    real_read_metadata = pq.read_metadata

    def read_metadata(path, *args, **kwargs):
        footers.append(str(path))
        if str(path) == str(new):
            reading_new.set()
            assert release.wait(10)
        return real_read_metadata(path, *args, **kwargs)

    monkeypatch.setattr(segments.pq, "read_metadata", read_metadata)
    expected = len(rows.filter(pc.equal(rows["post_pt_root_id"], ROOTS[0])))

    def lookup(path):
        return segments.read_record_rows(path, "post_pt_root_id", [ROOTS[0]]).num_rows

    assert lookup(read) == expected
    with ThreadPoolExecutor(8) as pool:
        waiting = [pool.submit(lookup, new) for _ in range(6)]
        assert reading_new.wait(10)
        assert pool.submit(lookup, read).result(timeout=10) == expected
        release.set()
        assert [f.result(timeout=10) for f in waiting] == [expected] * 6
    assert sorted(footers) == sorted([str(read), str(new)])


def test_a_large_segment_from_a_query_sorts_its_copy_then_its_record(tmp_path, monkeypatch):
    """Written from a query, a segment whose record serves the post root gets its pre copy
    sorted from the query and its record sorted from that copy — a range at a time beyond
    SORT_RUN_ROWS, with the same rows as at once, NULL keys last."""
    monkeypatch.setattr(segments, "SERVING_MIN_ROWS", 0)
    rows = synapses(np.random.default_rng(13))
    missing = np.random.default_rng(14).random(N) < 0.05
    values = rows.column("post_pt_root_id").to_numpy()
    rows = rows.set_column(rows.schema.get_field_index("post_pt_root_id"), "post_pt_root_id",
                           pa.array(values, pa.int64(), mask=missing))
    order, keys = serving_layout(KEYS, segments.RECORD_SERVES_ROWS)

    def written(run_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        monkeypatch.setattr(segments, "SORT_RUN_ROWS", run_rows)
        path = tmp_path / f"seg-{run_rows}.parquet"
        with duckdb.connect() as con:
            con.register("source", rows)
            assert copy_sorted_segment(con, path, "SELECT * FROM source WHERE size < ?",
                                       [0.9], order, keys) == len(expected)
        with duckdb.connect(str(serving_path(path)), read_only=True) as con:
            copy = con.sql(f"SELECT * FROM {sorted_copy(keys[0])}").df()
        return pq.read_table(path).to_pandas(), copy

    expected = rows.to_pandas()
    expected = expected[expected["size"] < 0.9]
    whole, whole_copy = written(10**9)
    ranged, ranged_copy = written(300)
    pd.testing.assert_frame_equal(ranged, whole)
    pd.testing.assert_frame_equal(ranged_copy, whole_copy)
    assert ranged.id.tolist() == expected.sort_values(
        [order, "id"], na_position="last").id.tolist()
    assert ranged_copy.id.tolist() == expected.sort_values(["pre_pt_root_id", "id"]).id.tolist()


def test_a_segment_copied_through_a_connection_gets_sorted_copies_under_its_settings(
        tmp_path, monkeypatch):
    """The synth writes its big tables through its work connection (one memory limit for
    both the sort and the serving copy), whose insertion order is not kept."""
    monkeypatch.setattr(segments, "SERVING_MIN_ROWS", 0)
    rows = synapses(np.random.default_rng(3))
    with duckdb.connect(str(tmp_path / "work.duckdb")) as con:
        con.execute("SET preserve_insertion_order = false")
        con.register("source", rows)
        copy_sorted_segment(con, tmp_path / "seg.parquet", "SELECT * FROM source", None,
                            "pre_pt_root_id", KEYS)
        kept = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()
        assert kept == [(False,)]
        assert con.sql("SELECT count(*) FROM duckdb_databases() WHERE database_name = "
                       "'serving_copy'").fetchall() == [(0,)]  # detached again
    with duckdb.connect(str(serving_path(tmp_path / "seg.parquet")), read_only=True) as con:
        assert block_size(con) == segments.SERVING_BLOCK_SIZE
        for key in KEYS:
            copy = con.sql(f'SELECT "{key}", id FROM {sorted_copy(key)}').df()
            assert len(copy) == N
            assert copy.equals(copy.sort_values([key, "id"], ignore_index=True))


@pytest.mark.parametrize("rows", [N, segments.RECORD_SERVES_ROWS])
def test_a_copy_an_older_opencave_wrote_is_rewritten_with_the_current_blocks(
        tmp_path, monkeypatch, rows):
    """Copies written with DuckDB's default blocks (before SERVING_BLOCK_SIZE) are written
    anew from the record, with the same tables — also a large segment's, whose record is
    sorted by its last key; a copy already current is left alone."""
    monkeypatch.setattr(segments, "SERVING_MIN_ROWS", 0)
    order, keys = serving_layout(KEYS, rows)
    path = tmp_path / "seg.parquet"
    with monkeypatch.context() as older:
        older.setattr(segments, "SERVING_BLOCK_SIZE", 262_144)
        write_table_segment(path, synapses(np.random.default_rng(5)), order, keys)

    def copies() -> dict[str, pd.DataFrame]:
        with duckdb.connect(str(serving_path(path)), read_only=True) as con:
            return {key: con.sql(f"SELECT * FROM {sorted_copy(key)}").df() for key in keys}

    before = copies()
    assert rewrite_serving_copy(path, order)
    with duckdb.connect(str(serving_path(path)), read_only=True) as con:
        assert block_size(con) == segments.SERVING_BLOCK_SIZE
    after = copies()
    assert after.keys() == before.keys()
    assert all(after[key].equals(before[key]) for key in keys)
    assert not rewrite_serving_copy(path, order)


@pytest.mark.parametrize("params", ["named", "positional"])
def test_large_segments_are_sorted_a_key_range_at_a_time(tmp_path, monkeypatch, params):
    """Beyond SORT_RUN_ROWS, the query runs once per range of the key (and the serving
    copies sort a range at a time): the file and the copies hold the rows a single sort
    gives, NULL keys last, with the caller's parameters bound in every run."""
    monkeypatch.setattr(segments, "SERVING_MIN_ROWS", 0)
    rows = synapses(np.random.default_rng(11))
    missing = np.random.default_rng(12).random(N) < 0.05  # some keys NULL
    for key in KEYS:
        values = rows.column(key).to_numpy()
        rows = rows.set_column(rows.schema.get_field_index(key), key,
                               pa.array(values, pa.int64(), mask=missing))
    select, bound = (("SELECT * FROM source WHERE size < $most", {"most": 0.9})
                     if params == "named" else ("SELECT * FROM source WHERE size < ?", [0.9]))
    runs: list[int] = []
    count_runs = segments.sort_runs
    monkeypatch.setattr(segments, "sort_runs",
                        lambda *a, **k: runs.append(len(found := count_runs(*a, **k))) or found)

    def written(run_rows: int) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
        monkeypatch.setattr(segments, "SORT_RUN_ROWS", run_rows)
        path = tmp_path / f"seg-{run_rows}.parquet"
        with duckdb.connect() as con:
            con.register("source", rows)
            copy_sorted_segment(con, path, select, bound, "pre_pt_root_id", KEYS)
        with duckdb.connect(str(serving_path(path)), read_only=True) as con:
            copies = {key: con.sql(f"SELECT * FROM {sorted_copy(key)}").df() for key in KEYS}
        return pq.read_table(path).to_pandas(), copies

    whole, whole_copies = written(10**9)
    ranged, ranged_copies = written(300)
    assert runs[:2] == [1, 1] and min(runs[2:]) > 3  # one sort each, then ranges
    expected = rows.to_pandas()
    expected = expected[expected["size"] < 0.9]
    for key in KEYS:
        ordered = expected.sort_values([key, "id"], na_position="last", ignore_index=True)
        pd.testing.assert_frame_equal(ranged_copies[key], whole_copies[key])
        assert ranged_copies[key].id.tolist() == ordered.id.tolist()
    pd.testing.assert_frame_equal(ranged, whole)
    assert ranged.id.tolist() == expected.sort_values(
        ["pre_pt_root_id", "id"], na_position="last").id.tolist()


@pytest.mark.parametrize("writer", ["pyarrow", "duckdb"])
def test_segments_are_delta_encoded_parquet_that_reads_back_exactly(tmp_path, writer):
    """Both writers (rows in memory; rows of a DuckDB query, out of core) delta-encode the
    integer and timestamp columns, and a plain Parquet reader gets the rows back."""
    rows = synapses(np.random.default_rng(5))
    path = tmp_path / "seg.parquet"
    if writer == "pyarrow":
        write_table_segment(path, rows, "pre_pt_root_id")
    else:
        with duckdb.connect() as con:
            con.register("source", rows)
            copy_sorted_segment(con, path, "SELECT * FROM source", None, "pre_pt_root_id")
    footer = pq.ParquetFile(path).metadata
    # DuckDB keeps a dictionary where few distinct values make one smaller (here: all but id)
    delta = ("id", "created", "pre_pt_root_id", "post_pt_position_x")[
        : 4 if writer == "pyarrow" else 1]
    for name in delta:
        column = footer.row_group(0).column(footer.schema.names.index(name))
        assert "DELTA_BINARY_PACKED" in column.encodings, (name, column.encodings)
    expected = rows.to_pandas().sort_values(["pre_pt_root_id", "id"], ignore_index=True)
    pd.testing.assert_frame_equal(pq.read_table(path).to_pandas(), expected)


@settings(max_examples=25, deadline=None)
@given(pre=st.lists(st.sampled_from(ROOTS.tolist()), max_size=4),
       post=st.lists(st.sampled_from(ROOTS.tolist()), max_size=4),
       min_size=st.none() | st.floats(0, 1))
def test_queries_match_pandas_whichever_copy_they_read(stored, pre, post, min_size):
    data, engine, relation, visible, kind = stored
    body: dict = {"filter_in_dict": {"syn": {}}}
    expected = visible
    if pre:
        body["filter_in_dict"]["syn"]["pre_pt_root_id"] = pre
        expected = expected[expected.pre_pt_root_id.isin(pre)]
    if post:
        body["filter_in_dict"]["syn"]["post_pt_root_id"] = post
        expected = expected[expected.post_pt_root_id.isin(post)]
    if min_size is not None:
        body["filter_greater_dict"] = {"syn": {"size": min_size}}
        expected = expected[expected["size"] > min_size]
    with pytest.MonkeyPatch.context() as patch:
        if kind == "record-scanned":
            patch.setattr(segments, "RECORD_LOOKUP_GROUPS", 0)
        got = engine.table(compile_query(parse_query(body, [relation]), data)).to_pandas()
    assert sorted(got.id) == sorted(expected.id)
    if len(got):
        merged = got.merge(expected, on="id", suffixes=("", "_expected"))
        pd.testing.assert_series_equal(merged.post_pt_root_id, merged.post_pt_root_id_expected,
                                       check_names=False)


def test_a_lookup_by_the_records_key_reads_the_record(stored):
    """A neuron's inputs in a large segment come from the record's few row groups (or its
    scan), not from a copy the segment does not have."""
    data, engine, relation, visible, kind = stored
    body = {"filter_in_dict": {"syn": {"post_pt_root_id": [int(ROOTS[4]), int(ROOTS[9])]}}}
    with pytest.MonkeyPatch.context() as patch:
        if kind == "record-scanned":
            patch.setattr(segments, "RECORD_LOOKUP_GROUPS", 0)
        compiled = compile_query(parse_query(body, [relation]), data)
        got = engine.table(compiled).to_pandas()
    read_rows = [name for name in compiled.tables if name.startswith("record_")]
    assert bool(read_rows) == (kind == "record")
    assert ("read_parquet" in compiled.sql) == (kind in ("parquet", "record-scanned"))
    expected = visible[visible.post_pt_root_id.isin(ROOTS[[4, 9]])]
    assert sorted(got.id) == sorted(expected.id)


@pytest.mark.parametrize("statistics", [True, False])
def test_the_largest_id_of_a_segment_comes_from_its_footer_or_its_rows(tmp_path, statistics):
    """New rows take ids above a segment's largest: a file whose footer has no statistics is
    read rather than taken for empty."""
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"id": [7, 90, 12, 55]}), path, row_group_size=2,
                   write_statistics=statistics)
    assert segments.max_id(path) == 90
    assert (segments.id_bounds(path) == (7, 90)) is statistics
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.int64())}), empty)
    assert segments.max_id(empty) == 0
