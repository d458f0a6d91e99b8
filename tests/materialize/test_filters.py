"""Filters are values: parsed and validated against a relation, compiled with bound
parameters. Nothing from the request ever becomes SQL text."""

import pytest

from opencave.errors import InvalidRequest
from opencave.materialize.filters import Op, ValueLists, parse_filters
from opencave.materialize.relations import Relation
from opencave.schemas import get_schema_type

PROOF = Relation("proof", get_schema_type("compartment_proofread_status_strategy").columns(),
                 (4.0, 4.0, 40.0))
SYN = Relation("syn", get_schema_type("synapse").columns(), (4.0, 4.0, 40.0))


def one(body, relation=SYN):
    (f,) = parse_filters(body, {relation.name: relation})
    return f


def test_boolean_values_are_coerced_like_postgres():
    f = one({"filter_equal_dict": {"proof": {"status_axon": "t"}}}, PROOF)
    assert (f.op, f.value) == (Op.EQUAL, True)
    assert one({"filter_equal_dict": {"proof": {"status_axon": "false"}}}, PROOF).value is False


def test_both_exclusion_keys_are_accepted():
    for key in ("filter_out_dict", "filter_notin_dict"):
        f = one({key: {"syn": {"pre_pt_root_id": [1, 2]}}})
        assert f.op is Op.NOT_IN and f.value == (1, 2)


def test_in_filters_take_lists_and_scalars():
    assert one({"filter_in_dict": {"syn": {"pre_pt_root_id": 7}}}).value == (7,)
    assert one({"filter_in_dict": {"syn": {"pre_pt_root_id": ["8", 9.0]}}}).value == (8, 9)


def test_one_neuron_compiles_to_a_comparison_that_prunes_row_groups():
    """One value: ``=`` (DuckDB prunes row groups by min/max); several: one bound list."""
    lists = ValueLists()
    sql, params = one({"filter_in_dict": {"syn": {"pre_pt_root_id": [7]}}}).sql("r", lists)
    assert (sql, params) == ('r."pre_pt_root_id" = ?::BIGINT', [7])
    sql, params = one({"filter_in_dict": {"syn": {"pre_pt_root_id": [7, 8]}}}).sql("r", lists)
    assert sql == 'r."pre_pt_root_id" IN (SELECT v FROM in_list_0)' and params == []
    assert lists.params == [[7, 8]]


def test_a_list_filtering_several_columns_or_parts_is_bound_once():
    lists = ValueLists()
    pre = one({"filter_in_dict": {"syn": {"pre_pt_root_id": [7, 8]}}})
    post = one({"filter_in_dict": {"syn": {"post_pt_root_id": [7, 8]}}})
    other = one({"filter_notin_dict": {"syn": {"post_pt_root_id": [9, 10]}}})
    texts = [f.sql(alias, lists)[0] for f in (pre, post, pre, other) for alias in "rs"]
    assert lists.definitions == ["in_list_0 AS (SELECT unnest(?::BIGINT[]) AS v)",
                                 "in_list_1 AS (SELECT unnest(?::BIGINT[]) AS v)"]
    assert lists.params == [[7, 8], [9, 10]]
    assert texts[-1] == 's."post_pt_root_id" NOT IN (SELECT v FROM in_list_1)'


def test_root_ids_keep_all_64_bits():
    root = 864691135808473885
    assert one({"filter_equal_dict": {"syn": {"pre_pt_root_id": root}}}).value == root


def test_spatial_box_covers_all_three_axes_in_any_corner_order():
    f = one({"filter_spatial_dict": {"syn": {"post_pt_position": [[10, 20, 30], [1, 2, 3.5]]}}})
    assert f.columns == ("post_pt_position_x", "post_pt_position_y", "post_pt_position_z")
    assert f.value == ((1, 2, 4), (10, 20, 30))
    sql, params = f.sql("r", ValueLists())
    assert sql.count("BETWEEN ? AND ?") == 3 and params == [1, 10, 2, 20, 4, 30]


def test_values_are_bound_not_inlined():
    sneaky = "x'); DROP TABLE t; --"
    f = one({"filter_equal_dict": {"proof": {"strategy_axon": sneaky}}}, PROOF)
    sql, params = f.sql("r", ValueLists())
    assert sneaky not in sql and params == [sneaky]


@pytest.mark.parametrize(("body", "message"), [
    ({"filter_in_dict": {"other": {"id": [1]}}}, "names table 'other'"),
    ({"filter_in_dict": {"syn": {"nope": [1]}}}, "has no column 'nope'"),
    ({"filter_equal_dict": {"syn": {"pre_pt_root_id": "abc"}}}, "holds integers"),
    ({"filter_equal_dict": {"syn": {"pre_pt_root_id": [1, 2]}}}, "use filter_in_dict"),
    ({"filter_greater_dict": {"proof": {"strategy_axon": "a"}}}, "inequality filters"),
    ({"filter_regex_dict": {"syn": {"size": "1.*"}}}, "text columns only"),
    ({"filter_regex_dict": {"proof": {"strategy_axon": "("}}}, "invalid regular expression"),
    ({"filter_spatial_dict": {"syn": {"ctr_pt_position": [[1, 2], [3, 4]]}}}, "spatial filter"),
    ({"filter_in_dict": {"syn": {"pre_pt_position": [1]}}}, "filter_spatial_dict"),
    ({"filter_equal_dict": {"proof": {"status_axon": "maybe"}}}, "expected a boolean"),
    ({"filter_equal_dict": {"syn": {"pre_pt_root_id": 2**64}}}, "64-bit"),
    ({"filter_equal_dict": ["not", "a", "dict"]}, "must map table names"),
])
def test_bad_filters_say_what_is_wrong(body, message):
    relations = {"syn": SYN, "proof": PROOF}
    with pytest.raises(InvalidRequest, match=message):
        parse_filters(body, relations)
