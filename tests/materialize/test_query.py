"""The query engine on hand-made snapshots: masks, visibility in time, pages, joins,
selections and resolutions — each checked against the rows it was given."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from opencave.errors import InvalidRequest
from opencave.materialize import query
from opencave.materialize.engine import QueryEngine
from opencave.materialize.query import LOOKUP_VALUES, compile_query, parse_query
from opencave.materialize.relations import Relation
from opencave.materialize.snapshots import Mask, SnapshotPart, TableSnapshot
from opencave.schemas import get_schema_type
from opencave.storage.files import DataDir
from opencave.storage.segments import Segment, arrow_schema, write_id_set, write_table_segment
from opencave.timestamps import to_micros

T0 = datetime(2021, 1, 1, tzinfo=UTC)


def table_of(schema_name, columns, n):
    schema = arrow_schema(get_schema_type(schema_name))
    arrays = [pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type)
              for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("query")
    data = DataDir(root)
    rng = np.random.default_rng(1)
    n = 400
    created = [T0 + timedelta(days=int(d)) for d in rng.integers(0, 10, n)]
    deleted = [None if d > 20 else T0 + timedelta(days=int(d)) for d in rng.integers(5, 40, n)]
    nuclei = table_of("nucleus_detection", {
        "id": np.arange(1, n + 1), "created": created, "deleted": deleted, "valid": [True] * n,
        "volume": rng.random(n) * 300, "pt_position_x": rng.integers(0, 1000, n),
        "pt_position_y": rng.integers(0, 1000, n), "pt_position_z": rng.integers(0, 100, n),
        "pt_supervoxel_id": rng.integers(1, 10**6, n), "pt_root_id": rng.integers(1, 30, n),
    }, n)
    write_table_segment(root / "nuclei.parquet", nuclei, "pt_root_id")
    masked = np.arange(1, 400, 7)
    write_id_set(root / "mask.parquet", masked)
    types = table_of("cell_type_reference", {
        "id": np.arange(1, 201), "created": [T0] * 200, "valid": [True] * 200,
        "target_id": rng.choice(np.arange(1, n + 1), 200, replace=False),
        "classification_system": ["excitatory_neuron"] * 150 + ["nonneuron"] * 50,
        "cell_type": rng.choice(["23P", "4P", "BC"], 200),
    }, 200)
    write_table_segment(root / "types.parquet", types, "target_id")
    at = T0 + timedelta(days=15)
    nucleus_rel = Relation(
        "nuclei", get_schema_type("nucleus_detection").columns(), (4.0, 4.0, 40.0),
        TableSnapshot("nuclei", to_micros(at), (SnapshotPart(
            Segment("nuclei.parquet", n, "pt_root_id"), (Mask("mask.parquet", len(masked)),)),), 0))
    type_rel = Relation(
        "types", get_schema_type("cell_type_reference").columns(), (4.0, 4.0, 40.0),
        TableSnapshot("types", to_micros(at), (SnapshotPart(
            Segment("types.parquet", 200, "target_id")),), 200))
    frame = nuclei.to_pandas()
    visible = frame[(frame.created <= at) & (frame.deleted.isna() | (frame.deleted > at))
                    & ~frame.id.isin(masked)]
    return data, QueryEngine(), nucleus_rel, type_rel, visible, types.to_pandas()


def run(world, body, relations=None, **kwargs):
    data, engine, nuclei, *_ = world
    query = parse_query(body, relations or [nuclei], **kwargs)
    return engine.table(compile_query(query, data)).to_pandas()


def test_snapshot_shows_rows_alive_at_its_time_minus_masked_ones(world):
    *_, visible, _ = world
    result = run(world, {})
    assert sorted(result.id) == sorted(visible.id)
    assert result.valid.all() and result.superceded_id.isna().all()
    assert "deleted" not in result.columns


def test_pages_are_ordered_by_id_and_do_not_overlap(world):
    *_, visible, _ = world
    pages = [run(world, {"limit": 25, "offset": k}) for k in (0, 25, 50)]
    ids = [i for page in pages for i in page.id]
    assert ids == sorted(visible.id)[:75]


def test_desired_resolution_converts_positions_on_the_server(world):
    *_, visible, _ = world
    nm = run(world, {"desired_resolution": [1, 1, 1]}).set_index("id").sort_index()
    expected = visible.set_index("id").sort_index()
    assert (nm.pt_position_x == expected.pt_position_x * 4).all()
    assert (nm.pt_position_z == expected.pt_position_z * 40).all()
    assert nm.pt_position_x.dtype.kind == "i"
    half = run(world, {"desired_resolution": [8, 8, 40]})
    assert half.pt_position_x.dtype.kind == "f"


def test_selecting_a_root_id_brings_its_supervoxel(world):
    result = run(world, {"select_columns": ["pt_position", "pt_root_id"]})
    assert list(result.columns) == ["pt_position_x", "pt_position_y", "pt_position_z",
                                    "pt_supervoxel_id", "pt_root_id"]


def test_in_lists_shared_by_filters_and_empty_lists_select_what_they_say(world):
    *_, visible, _ = world
    roots = [3, 5, 8]
    both = run(world, {"filter_in_dict": {"nuclei": {"pt_root_id": roots}},
                       "filter_notin_dict": {"nuclei": {"pt_root_id": roots}}})
    assert both.empty
    some = run(world, {"filter_in_dict": {"nuclei": {"pt_root_id": roots}},
                       "filter_notin_dict": {"nuclei": {"id": roots}}})
    expected = visible[visible.pt_root_id.isin(roots) & ~visible.id.isin(roots)]
    assert sorted(some.id) == sorted(expected.id)
    assert run(world, {"filter_in_dict": {"nuclei": {"pt_root_id": []}}}).empty
    everything = run(world, {"filter_notin_dict": {"nuclei": {"pt_root_id": []}}})
    assert sorted(everything.id) == sorted(visible.id)


def test_random_sample_returns_that_many_distinct_visible_rows(world):
    *_, visible, _ = world
    sample = run(world, {}, random_sample=10)
    assert len(sample) == 10 and sample.id.is_unique and set(sample.id) <= set(visible.id)


def test_a_query_by_a_few_values_of_a_sorted_key_or_of_small_tables_is_a_lookup(
        world, monkeypatch):
    data, _, nuclei, types, *_ = world

    def lookup(body, relations=None, **kwargs):
        return compile_query(parse_query(body, relations or [nuclei], **kwargs), data).lookup

    join = {"relations": [types, nuclei], "join_columns": ["target_id", "id"]}
    assert lookup({}) and lookup({}, **join)  # 400 and 200 rows: small tables
    monkeypatch.setattr(query, "LOOKUP_TABLE_ROWS", 100)  # now they are big
    few, many = list(range(1, LOOKUP_VALUES + 1)), list(range(1, LOOKUP_VALUES + 2))
    assert lookup({"filter_in_dict": {"nuclei": {"pt_root_id": [3]}}})
    assert lookup({"filter_equal_dict": {"nuclei": {"id": 5}}})
    assert lookup({"filter_in_dict": {"nuclei": {"pt_root_id": few}},
                   "filter_greater_dict": {"nuclei": {"volume": 3.0}}})
    assert not lookup({"filter_in_dict": {"nuclei": {"pt_root_id": many}}})
    assert not lookup({})  # the whole table
    assert not lookup({"filter_in_dict": {"nuclei": {"volume": [1.0]}}})  # not a sorted key
    assert not lookup({"filter_greater_dict": {"nuclei": {"pt_root_id": 3}}})
    assert not lookup({"filter_equal_dict": {"types": {"target_id": 3}}}, **join)


def test_join_suffixes_only_colliding_columns(world):
    _, _, nuclei, types, visible, cell_types = world
    body = {"filter_equal_dict": {"types": {"cell_type": "BC"}},
            "suffix_map": {"types": "", "nuclei": "_ref"}}
    result = run(world, body, [types, nuclei], join_columns=["target_id", "id"])
    assert {"id", "id_ref", "created_ref", "valid_ref", "target_id", "pt_root_id"} <= set(
        result.columns)
    expected = cell_types[(cell_types.cell_type == "BC")
                          & cell_types.target_id.isin(visible.id)]
    assert sorted(result.id) == sorted(expected.id)
    assert (result.target_id == result.id_ref).all()


def test_select_column_map_picks_per_table(world):
    _, _, nuclei, types, *_ = world
    body = {"select_column_map": {"nuclei": ["pt_root_id", "id"], "types": ["cell_type"]},
            "suffix_map": {"types": "_ref", "nuclei": ""}}
    result = run(world, body, [types, nuclei], join_columns=["target_id", "id"])
    assert list(result.columns) == ["cell_type", "id", "pt_supervoxel_id", "pt_root_id"]


@pytest.mark.parametrize(("body", "message"), [
    ({"limit": 0}, "limit must be an integer"),
    ({"offset": -1}, "offset must be an integer"),
    ({"desired_resolution": [1, 1]}, "desired_resolution"),
    ({"desired_resolution": [0, 1, 1]}, "desired_resolution"),
    ({"select_columns": ["nope"]}, "no column 'nope'"),
    ({"select_column_map": {"other": ["id"]}}, "not in this query"),
])
def test_bad_queries_say_what_is_wrong(world, body, message):
    with pytest.raises(InvalidRequest, match=message):
        run(world, body)
