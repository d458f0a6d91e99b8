"""The server against the independent oracle (``tests/oracle.py``) on randomized queries:
random versions, tables, filters of every kind, selections, pages and resolutions, all
through the real caveclient. Row for row, value for value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from opencave.synth import world
from tests.oracle import Oracle, apply_filters, schema_of

SIMPLE_TABLES = ["synapses_pni_2", "nucleus_detection_v0", "proofreading_status_and_strategy",
                 "coregistration_manual_v4"]
REFERENCE_TABLES = {"aibs_metamodel_celltypes_v661": "nucleus_detection_v0",
                    "allen_v1_column_types_slanted_ref": "nucleus_detection_v0",
                    "synapse_target_predictions_ssa_v2": "synapses_pni_2"}
TIMES = dict(world.VERSIONS)
HYPOTHESIS = settings(max_examples=50, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture,
                                             HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def oracle(cave):
    return Oracle(cave)


@pytest.fixture(scope="module")
def mat(server):
    from caveclient import CAVEclient

    return CAVEclient("minnie65_public", server_address=server).materialize


def test_root_ids_are_the_connected_components_at_every_version(oracle):
    for _, timestamp in world.VERSIONS:
        assert len(oracle.root_map(timestamp)) > 0  # asserts the grouping inside


def test_nucleus_root_ids_change_between_versions_where_edits_say_so(oracle, mat):
    edited = set()
    first, last = world.VERSIONS[0][1], world.VERSIONS[-1][1]
    for edit in oracle.edits.itertuples():
        if first < edit.timestamp <= last:
            edited.update((int(edit.a), int(edit.b)))
    early = mat.query_table("nucleus_detection_v0", materialization_version=117)
    late = mat.query_table("nucleus_detection_v0", materialization_version=1718)
    both = early.merge(late, on="id", suffixes=("_117", "_1718"))
    assert len(both) == len(early) == len(late)  # nucleus ids are stable
    changed = both[both.pt_root_id_117 != both.pt_root_id_1718]
    assert len(changed) > 0
    roots_117, roots_1718 = oracle.root_map(first), oracle.root_map(last)
    touched = {int(roots_1718[np.int64(sv)]) for sv in edited if np.int64(sv) in roots_1718}
    assert set(changed.pt_root_id_1718) <= touched | {0}
    unchanged = both[both.pt_root_id_117 == both.pt_root_id_1718]
    assert not set(unchanged.pt_root_id_1718) & (touched - set(roots_117))


def _values(frame: pd.DataFrame, column: str, data: st.DataObject, k: int,
            at_least: int = 1) -> list:
    values = frame[column].dropna().unique().tolist()
    if not values:
        return []
    at_least = min(at_least, len(values))
    return data.draw(st.lists(st.sampled_from(values), min_size=at_least,
                              max_size=max(k, at_least), unique=True))


def _filters(frame: pd.DataFrame, table: str, schema, data: st.DataObject) -> dict:
    """One to three random filters that usually match something."""
    candidates = [c for c in schema.columns() if c.role.value not in ("crud", "valid")
                  and c.name in frame.columns and c.role.value != "position"]
    body: dict = {}
    for _ in range(data.draw(st.integers(1, 3))):
        column = data.draw(st.sampled_from(candidates))
        kind = data.draw(st.sampled_from(
            ["in", "notin", "equal", "greater", "less", "greater_equal", "less_equal", "regex",
             "spatial"]))
        name = column.name
        if kind == "spatial" and schema.points:
            point = data.draw(st.sampled_from(schema.points))
            center = frame[[f"{point}_position_{a}" for a in "xyz"]].dropna()
            if center.empty:
                continue
            c = center.iloc[data.draw(st.integers(0, len(center) - 1))].to_numpy()
            half = np.array([data.draw(st.integers(0, 40_000)) for _ in range(3)])
            half[2] = half[2] // 10
            box = [(c - half).astype(int).tolist(), (c + half).astype(int).tolist()]
            body.setdefault("filter_spatial_dict", {}).setdefault(table, {})[
                f"{point}_position"] = box
        elif kind in ("in", "notin"):
            # Lists past 50 values take another path in DuckDB (the engine's IN_FILTER_ROWS)
            at_least = data.draw(st.sampled_from([1, 51]))
            values = _values(frame, name, data, 6, at_least)
            event(f"an IN list of {'more than' if len(values) > 50 else 'at most'} 50 values")
            if values:
                key = "filter_in_dict" if kind == "in" else "filter_notin_dict"
                body.setdefault(key, {}).setdefault(table, {})[name] = values
        elif kind == "equal":
            values = _values(frame, name, data, 1)
            if values:
                body.setdefault("filter_equal_dict", {}).setdefault(table, {})[name] = values[0]
        elif kind in ("greater", "less", "greater_equal", "less_equal") and column.is_numeric:
            values = _values(frame, name, data, 1)
            if values:
                body.setdefault(f"filter_{kind}_dict", {}).setdefault(table, {})[name] = values[0]
        elif kind == "regex" and column.type.value == "string":
            values = _values(frame, name, data, 1)
            if values:
                body.setdefault("filter_regex_dict", {}).setdefault(table, {})[name] = (
                    "^" + str(values[0])[:3])
    return body


def _client_name(key: str) -> str:
    """caveclient's keyword for a body key (it sends ``filter_out_dict`` as notin)."""
    return "filter_out_dict" if key == "filter_notin_dict" else key


def _call_kwargs(body: dict, table: str) -> dict:
    return {_client_name(key): inner[table] for key, inner in body.items() if table in inner}


def _convert(frame: pd.DataFrame, resolution: list[float] | None) -> pd.DataFrame:
    if resolution is None:
        return frame
    frame = frame.copy()
    for column in frame.columns:
        if "_position_" in column:
            axis = "xyz".index(column[-1])
            frame[column] = frame[column] * (world.VOXEL_RESOLUTION[axis] / resolution[axis])
    return frame


def _same(got: pd.DataFrame, expected: pd.DataFrame, columns: list[str]) -> None:
    got = got.sort_values("id").reset_index(drop=True)
    expected = expected.sort_values("id").reset_index(drop=True)
    assert list(got.id) == list(expected.id)
    for column in columns:
        a, b = got[column], expected[column]
        if column in ("created", "superceded_id"):
            continue
        if a.dtype.kind == "f" or b.dtype.kind == "f":
            assert np.allclose(a.astype(float), b.astype(float), equal_nan=True), column
        else:
            assert list(a) == list(b), column


def _versions_with(oracle: Oracle, table: str) -> list[int]:
    created = oracle.cave.tables.get(world.ALIGNED_VOLUME, table).created
    return [v for v, t in world.VERSIONS if t >= created]


@HYPOTHESIS
@given(data=st.data())
def test_simple_queries_match_the_oracle(oracle, mat, data):
    table = data.draw(st.sampled_from(SIMPLE_TABLES))
    version = data.draw(st.sampled_from(_versions_with(oracle, table)))
    schema = schema_of(oracle.cave, table)
    truth = oracle.rows(table, TIMES[version])
    body = _filters(truth, table, schema, data)
    resolution = data.draw(st.sampled_from([None, [1, 1, 1], [8, 8, 40]]))
    expected = _convert(apply_filters(truth, table, body), resolution)
    got = mat.query_table(table, materialization_version=version, split_positions=True,
                          desired_resolution=resolution, **_call_kwargs(body, table))
    columns = [c for c in got.columns if c in expected.columns]
    assert set(got.columns) == {c.name for c in schema.columns() if c.name != "deleted"}
    _same(got, expected, columns)


@HYPOTHESIS
@given(data=st.data())
def test_pages_match_the_oracle(oracle, mat, data, table_sizes):
    table = data.draw(st.sampled_from(SIMPLE_TABLES))
    version = data.draw(st.sampled_from(_versions_with(oracle, table)))
    truth = oracle.rows(table, TIMES[version]).sort_values("id")
    body = _filters(truth, table, schema_of(oracle.cave, table), data) if data.draw(
        st.booleans()) else {}
    truth = apply_filters(truth, table, body)
    limit = data.draw(st.integers(1, 200))
    offset = data.draw(st.integers(0, max(0, len(truth) - 1)))
    got = mat.query_table(table, materialization_version=version, split_positions=True,
                          limit=limit, offset=offset, select_columns=["id"],
                          **_call_kwargs(body, table))
    assert list(got.id) == list(truth.id.iloc[offset:offset + limit])


def _reference_join(oracle, data, *, every_filter: bool) -> tuple[str, str, int, dict,
                                                                   pd.DataFrame]:
    """A random reference join: (reference, target, version, body, the oracle's rows). With
    ``every_filter`` both tables are filtered, else each maybe."""
    version = data.draw(st.sampled_from([v for v, _ in world.VERSIONS if v >= 1507]))
    reference = data.draw(st.sampled_from(sorted(REFERENCE_TABLES)))
    target = REFERENCE_TABLES[reference]
    rows = {table: oracle.rows(table, TIMES[version]) for table in (reference, target)}
    body: dict = {}
    for table, frame in rows.items():
        if every_filter or data.draw(st.booleans()):
            for key, inner in _filters(frame, table, schema_of(oracle.cave, table), data).items():
                body.setdefault(key, {}).update(inner)
    expected = apply_filters(rows[reference], reference, body).merge(
        apply_filters(rows[target], target, body), left_on="target_id", right_on="id",
        suffixes=("_ref", ""))
    return reference, target, version, body, expected


@HYPOTHESIS
@given(data=st.data())
def test_reference_joins_match_the_oracle(oracle, mat, data, table_sizes):
    reference, target, version, body, expected = _reference_join(oracle, data,
                                                                 every_filter=True)
    got = mat.join_query(
        [[reference, "target_id"], [target, "id"]], suffixes={reference: "_ref", target: ""},
        materialization_version=version, split_positions=True,
        **{_client_name(k): v for k, v in body.items()})
    assert sorted(got.id) == sorted(expected.id)
    assert sorted(got.id_ref) == sorted(expected.id_ref)
    shared = [c for c in ("pt_root_id", "pre_pt_root_id", "post_pt_root_id", "cell_type",
                          "tag") if c in got.columns]
    _same(got, expected, shared)


@HYPOTHESIS
@given(data=st.data())
def test_reference_join_pages_match_the_oracle(oracle, mat, data, table_sizes):
    reference, target, version, body, expected = _reference_join(oracle, data,
                                                                 every_filter=False)
    expected = expected.sort_values(["id_ref", "id"])
    limit = data.draw(st.integers(1, 100))
    offset = data.draw(st.integers(0, max(0, len(expected) - 1)))
    got = mat.join_query(
        [[reference, "target_id"], [target, "id"]], suffixes={reference: "_ref", target: ""},
        materialization_version=version, limit=limit, offset=offset,
        **{_client_name(k): v for k, v in body.items()})
    page = expected.iloc[offset:offset + limit]
    assert list(zip(got.id_ref, got.id, strict=True)) == list(zip(page.id_ref, page.id,
                                                                    strict=True))
