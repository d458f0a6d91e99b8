"""Segments, their serving copies and keyed masks: a query reads the same rows whichever
copy it uses — Parquet or native, sorted by pre or by post root — and a mask removes exactly
its rows, with the query's filters applied to it or not."""

from datetime import UTC, datetime

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
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
    copy_sorted_segment,
    serving_keys,
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


@pytest.fixture(scope="module", params=["parquet", "serving"])
def stored(request, tmp_path_factory):
    """One segment and a mask of a third of its rows, written as Parquet only or with
    serving copies."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(segments, "SERVING_MIN_ROWS", 0 if request.param == "serving" else 10**9)
        root = tmp_path_factory.mktemp(request.param)
        rows = synapses(np.random.default_rng(7))
        write_table_segment(root / "seg.parquet", rows, "pre_pt_root_id", KEYS)
        masked = rows.filter(pa.array(np.arange(N) % 3 == 0))
        # a chain of two masks, as versions append them
        halves = [masked.slice(0, masked.num_rows // 2), masked.slice(masked.num_rows // 2)]
        for name, half in zip(("mask-a.parquet", "mask-b.parquet"), halves, strict=True):
            write_mask(root / name, half, KEYS)
    part = SnapshotPart(Segment("seg.parquet", N, "pre_pt_root_id"), (
        Mask("mask-a.parquet", halves[0].num_rows, KEYS),
        Mask("mask-b.parquet", halves[1].num_rows, KEYS)))
    relation = Relation("syn", SYNAPSE.columns(), (4.0, 4.0, 40.0),
                        TableSnapshot("syn", to_micros(T), (part,), 0), "pre_pt_root_id")
    visible = rows.to_pandas()
    visible = visible[~visible.id.isin(masked.column("id").to_pylist())]
    return DataDir(root), QueryEngine(), relation, visible, request.param


def test_serving_copies_hold_the_rows_sorted_by_each_key(stored):
    data, *_, kind = stored
    path = serving_path(data.root / "seg.parquet")
    assert path.exists() == (kind == "serving")
    if kind == "parquet":
        return
    with duckdb.connect(str(path), read_only=True) as con:
        for key in KEYS:
            column = con.sql(f'SELECT "{key}" FROM {sorted_copy(key)}').fetchnumpy()[key]
            assert len(column) == N and (np.diff(column) >= 0).all()


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
        for key in KEYS:
            copy = con.sql(f'SELECT "{key}", id FROM {sorted_copy(key)}').df()
            assert len(copy) == N
            assert copy.equals(copy.sort_values([key, "id"], ignore_index=True))


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
    data, engine, relation, visible, _ = stored
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
    got = engine.table(compile_query(parse_query(body, [relation]), data)).to_pandas()
    assert sorted(got.id) == sorted(expected.id)
    if len(got):
        merged = got.merge(expected, on="id", suffixes=("", "_expected"))
        pd.testing.assert_series_equal(merged.post_pt_root_id, merged.post_pt_root_id_expected,
                                       check_names=False)
