"""Pages found by their ids first, and joined pages from the first table's leading rows: the
same rows as the plain ``ORDER BY id`` page, even when masks hide most of the smallest ids,
an id lives on in a newer part, or the second table's filters drop most leading rows."""

from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencave.materialize import pages
from opencave.materialize import query as query_module
from opencave.materialize.engine import QueryEngine
from opencave.materialize.pages import bounded_page, joined_page, narrow_join, read_page
from opencave.materialize.query import compile_query, parse_query
from opencave.materialize.relations import Relation
from opencave.materialize.snapshots import Mask, SnapshotPart, TableSnapshot
from opencave.schemas import get_schema_type
from opencave.storage.files import DataDir
from opencave.storage.segments import Segment, write_id_set, write_table_segment
from opencave.timestamps import to_micros
from tests.materialize.test_query import T0, table_of

ROWS = 3_000


def nuclei(ids, roots, rng):
    n = len(ids)
    return table_of("nucleus_detection", {
        "id": ids, "created": [T0] * n, "valid": [True] * n, "volume": rng.random(n),
        "pt_position_x": rng.integers(0, 1000, n), "pt_position_y": rng.integers(0, 1000, n),
        "pt_position_z": rng.integers(0, 100, n), "pt_supervoxel_id": rng.integers(1, 10**6, n),
        "pt_root_id": roots,
    }, n)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A bulk segment sorted by root (its ids scattered through it), a mask hiding nine in
    ten of its 1,500 smallest ids, and a newer part where some of those ids live on."""
    root = tmp_path_factory.mktemp("pages")
    rng = np.random.default_rng(3)
    bulk = nuclei(np.arange(1, ROWS + 1), rng.integers(1, 40, ROWS), rng)
    write_table_segment(root / "bulk.parquet", bulk, "pt_root_id", ("pt_root_id",))
    hidden = np.array([i for i in range(1, 1501) if i % 10])
    write_id_set(root / "mask.parquet", hidden)
    moved = hidden[::7]
    newer = nuclei(moved, rng.integers(40, 50, len(moved)), rng)
    write_table_segment(root / "newer.parquet", newer, "pt_root_id")
    relation = Relation(
        "nuclei", get_schema_type("nucleus_detection").columns(), (4.0, 4.0, 40.0),
        TableSnapshot("nuclei", to_micros(T0 + timedelta(days=1)), (
            SnapshotPart(Segment("bulk.parquet", ROWS, "pt_root_id"),
                         (Mask("mask.parquet", len(hidden)),)),
            SnapshotPart(Segment("newer.parquet", len(moved), "pt_root_id")),
        ), 0), cluster_key="pt_root_id")
    frame = bulk.to_pandas()
    visible = frame[~frame.id.isin(hidden)]
    visible = visible.set_index("id").combine_first(newer.to_pandas().set_index("id"))
    return DataDir(root), QueryEngine(), relation, visible.reset_index()


@pytest.fixture(scope="module")
def references(world, tmp_path_factory):
    """A reference table naming every nucleus of ``world`` twice, its ids shuffled."""
    data, _, _, _ = world
    rng = np.random.default_rng(4)
    n = 2 * ROWS
    types = table_of("cell_type_reference", {
        "id": rng.permutation(np.arange(1, n + 1)), "created": [T0] * n, "valid": [True] * n,
        "target_id": np.tile(np.arange(1, ROWS + 1), 2),
        "classification_system": ["excitatory_neuron"] * n,
        "cell_type": rng.choice(["23P", "4P", "BC"], n),
    }, n)
    write_table_segment(data.root / "types.parquet", types, "target_id")
    return Relation(
        "types", get_schema_type("cell_type_reference").columns(), (4.0, 4.0, 40.0),
        TableSnapshot("types", to_micros(T0 + timedelta(days=1)), (
            SnapshotPart(Segment("types.parquet", n, "target_id")),), 0))


def plain(world, body):
    data, engine, relation, _ = world
    return engine.table(compile_query(parse_query(body, [relation]), data)).to_pandas()


def bounded(world, body):
    data, engine, relation, _ = world
    return bounded_page(engine, parse_query(body, [relation]), data).to_pandas()


def bound_rows(monkeypatch):
    """The row counts the bounds of the next pages are taken over, in order."""
    asked = []
    original = pages.compile_page_ids

    def spy(query, data_dir, rows):
        asked.append(rows)
        return original(query, data_dir, rows)

    monkeypatch.setattr(pages, "compile_page_ids", spy)
    return asked


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(1, 400), offset=st.integers(0, ROWS), root=st.integers(1, 50),
       filtered=st.booleans())
def test_a_bounded_page_is_the_plain_page(world, limit, offset, root, filtered):
    body = {"limit": limit, "offset": offset}
    if filtered:
        body["filter_greater_equal_dict"] = {"nuclei": {"pt_root_id": root}}
    page = bounded(world, body)
    assert page.equals(plain(world, body))
    *_, visible = world
    if filtered:
        visible = visible[visible.pt_root_id >= root]
    assert list(page.id) == sorted(visible.id)[offset:offset + limit]


def test_a_page_the_masks_thin_out_takes_a_larger_bound(world, monkeypatch):
    asked = bound_rows(monkeypatch)
    page = bounded(world, {"limit": 100})
    *_, visible = world
    assert list(page.id) == sorted(visible.id)[:100]
    first = 2 * 100 + pages.SLACK_ROWS
    assert asked == [first, first * pages.GROWTH]  # 300 smallest ids: only ~70 unmasked


def test_when_every_bound_falls_short_the_page_is_read_without_one(world, monkeypatch):
    monkeypatch.setattr(pages, "GROWTH", 1)
    asked = bound_rows(monkeypatch)
    *_, visible = world
    assert list(bounded(world, {"limit": 100}).id) == sorted(visible.id)[:100]
    assert len(asked) == pages.TRIES


def test_the_last_page_ends_with_the_last_row(world):
    *_, visible = world
    last = bounded(world, {"limit": 10, "offset": len(visible) - 4})
    assert list(last.id) == sorted(visible.id)[-4:]


def test_a_page_past_the_end_or_of_nothing_is_empty(world):
    assert bounded(world, {"limit": 10, "offset": 10 * ROWS}).empty
    nothing = bounded(world, {"limit": 10, "filter_equal_dict": {"nuclei": {"pt_root_id": 999}}})
    assert nothing.empty and list(nothing.columns) == list(plain(world, {"limit": 1}).columns)


def test_lookups_and_samples_run_as_compiled(world, monkeypatch):
    data, engine, relation, _ = world
    asked = bound_rows(monkeypatch)
    for body, sample in (({"limit": 5, "filter_in_dict": {"nuclei": {"pt_root_id": [3]}}}, None),
                         ({"limit": 5}, 3)):
        query = parse_query(body, [relation], random_sample=sample)
        read_page(engine, query, compile_query(query, data), data)
    assert asked == []
    monkeypatch.setattr(query_module, "LOOKUP_TABLE_ROWS", 0)  # no table is small now
    query = parse_query({"limit": 5}, [relation])
    read_page(engine, query, compile_query(query, data), data)
    assert asked == [2 * 5 + pages.SLACK_ROWS]


@pytest.mark.parametrize(("body", "tries"), [
    ({"limit": 25, "offset": 40}, 1),
    # nuclei with these roots live only in the newer part: most leading rows find no target
    ({"limit": 20, "filter_greater_equal_dict": {"nuclei": {"pt_root_id": 45}}}, 2),
    ({"limit": 500, "filter_equal_dict": {"types": {"cell_type": "BC"}},
      "filter_less_dict": {"nuclei": {"pt_root_id": 20}}}, 2),
])
def test_a_joined_page_is_the_plain_page(world, references, body, tries, monkeypatch):
    data, engine, nuclei, _ = world
    asked = bound_rows(monkeypatch)
    query = parse_query(body, [references, nuclei], join_columns=["target_id", "id"])
    page = joined_page(engine, query, data)
    assert page.equals(engine.table(compile_query(query, data)))
    assert page.num_rows == body["limit"]
    # the first table's leading rows: twice the page's end and some, then eight times that
    leading = 2 * (body["limit"] + body.get("offset", 0)) + pages.SLACK_ROWS
    tried = [leading * pages.GROWTH ** k for k in range(tries)]
    assert asked == [2 * rows + pages.SLACK_ROWS for rows in tried]


def test_a_join_reads_its_second_table_by_the_values_its_first_names(
        world, references, monkeypatch):
    data, engine, nuclei, _ = world
    monkeypatch.setattr(query_module, "LOOKUP_TABLE_ROWS", 0)  # a lookup would run as is
    body = {"filter_in_dict": {"types": {"cell_type": ["BC"]}},
            "filter_less_dict": {"types": {"id": 200}}}
    query = parse_query(body, [references, nuclei], join_columns=["target_id", "id"])
    narrowed = narrow_join(engine, query, data)
    named = narrowed.filters[-1]
    assert (named.relation, named.columns) == ("nuclei", ("id",)) and 0 < len(named.value) < 200
    plain = engine.table(compile_query(query, data)).sort_by("id")
    assert engine.table(compile_query(narrowed, data)).sort_by("id").equals(plain)
    monkeypatch.setattr(pages, "NAMED_VALUES", len(named.value) - 1)  # too many to name
    assert narrow_join(engine, query, data) is query
    unfiltered = parse_query({}, [references, nuclei], join_columns=["target_id", "id"])
    assert narrow_join(engine, unfiltered, data) is unfiltered
