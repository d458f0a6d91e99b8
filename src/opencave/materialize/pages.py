"""Pages of large tables (``limit``/``offset``, in id order) without reading every row.

DuckDB answers ``ORDER BY id LIMIT k`` with a top-N, but the top-N sits above the anti-joins
that hide masked rows, so every visible row is still read whole and probed against the
masks: at 10^8 synapses ``limit=10`` took 0.74 s and a page at offset 100,000 5 s. A
segment's ids are scattered through its copies (they are sorted by root ids), so zone maps
on ``id`` help only once the page's ids are known.

So a page is found first from the id column and the masks alone
(:func:`~opencave.materialize.query.compile_page_ids`): each part's ``n`` smallest ids
(``n`` twice the page's end, plus some), minus what its masks hide, are every visible row
below a bound, and the page is cut from them. Then the query runs as asked but between the
page's first and last id, a range DuckDB pushes into every part and mask. When masks hid
so much that the page would reach past the bound, a larger ``n`` is tried, then the query
without any of this.

A joined page (an inner join of two tables, in the order of the first's ids, then the
second's) is cut the same way from the first table's leading rows, joined only to the rows
of the second that they name. Any inner join whose first table is filtered down to a few
join values reads the second table by those values (:func:`narrow_join`).
"""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc

from ..schemas import ColumnType
from ..storage.files import DataDir
from .engine import QueryEngine
from .filters import Filter, Op
from .query import CompiledQuery, Query, compile_page_ids, compile_query, is_lookup
from .relations import Relation

#: Each part's ids are first taken up to twice the page's end plus this many, so a page
#: survives masks hiding up to half of them (a tenth at 10^8, v1181).
SLACK_ROWS = 100
#: How much that grows when masks hid too many, and how many tries there are.
GROWTH = 8
TRIES = 2
#: Pages ending beyond this row run as compiled: the ids taken per part would be as many
#: as the page's sort holds.
MAX_BOUNDED_ROWS = 1_000_000
#: An inner join reads its second table by the values its filtered first table names when
#: they are at most this many (an IN list; beyond it the hash join is as good).
NAMED_VALUES = 10_000


def read_page(engine: QueryEngine, query: Query, compiled: CompiledQuery,
              data_dir: DataDir) -> pa.Table:
    """The rows of a query with a ``limit`` (``compiled``: the query as compiled), read
    whole. A single-table query that is no lookup is found by its ids first, an inner join
    from its first table's leading rows; samples, left joins (views) and lookups (whose
    plans already read few rows) run as compiled."""
    if (query.limit is None or query.random_sample or query.left_join or compiled.lookup
            or _last_row(query) > MAX_BOUNDED_ROWS):
        return engine.table(compiled)
    if query.is_join:
        return joined_page(engine, query, data_dir)
    return bounded_page(engine, query, data_dir)


def bounded_page(engine: QueryEngine, query: Query, data_dir: DataDir) -> pa.Table:
    """The page of a single-table query with a ``limit``, found by its ids first."""
    if query.limit is None or query.is_join:
        raise ValueError("a bounded page needs a limit and a single table")
    rows = 2 * _last_row(query) + SLACK_ROWS
    for _ in range(TRIES):
        sql, params, sources = compile_page_ids(query, data_dir, rows)
        found = engine.run(sql, params, tables=sources.tables,
                           attachments=sources.attachments).to_pylist()[0]
        if found["found"] == query.limit or found["bound"] is None:
            first, last = (found["first"], found["last"]) if found["found"] else (0, -1)
            return engine.table(compile_query(between(query, first, last), data_dir))
        rows *= GROWTH
    return engine.table(compile_query(query, data_dir))


def joined_page(engine: QueryEngine, query: Query, data_dir: DataDir) -> pa.Table:
    """The page of an inner join of two tables with a ``limit``, ordered by the first
    table's ids: its first rows (a bounded page of that table alone), then the join of those
    with the rows of the second they name. A reference table peeked at with caveclient
    (``limit=10``, merged with its 10^8-row target) took 40 s as one statement."""
    if query.limit is None or len(query.relations) != 2 or query.left_join:
        raise ValueError("a joined page needs a limit and an inner join of two tables")
    first, second = query.relations
    own_column, their_column = query.join_columns
    rows = 2 * _last_row(query) + SLACK_ROWS
    columns = first.by_name
    wanted = tuple({c.name: c for c in (columns["id"], columns[own_column])}.values())
    for _ in range(TRIES):
        alone = replace(query, relations=(first,), join_columns=(), suffixes={},
                        select={first.name: wanted},
                        filters=tuple(f for f in query.filters if f.relation == first.name),
                        limit=rows, offset=None, desired_resolution=None)
        leading = bounded_page(engine, alone, data_dir)
        if leading.num_rows == 0:
            return engine.table(compile_query(between(query, 0, -1), data_dir))
        ids = leading.column("id")
        named = tuple(v for v in pc.unique(leading.column(own_column)).to_pylist()
                      if v is not None)
        narrowed = replace(query, filters=(
            *query.filters, *_id_range(first.name, pc.min(ids).as_py(), pc.max(ids).as_py()),
            _naming(second, their_column, named)))
        page = engine.table(compile_query(narrowed, data_dir))
        if page.num_rows == query.limit or leading.num_rows < rows:
            return page
        rows *= GROWTH
    return engine.table(compile_query(query, data_dir))


def narrow_join(engine: QueryEngine, query: Query, data_dir: DataDir) -> Query:
    """An inner join whose first table has filters, with its second table narrowed to the
    join values those filters leave (at most :data:`NAMED_VALUES`; else the join as it is).
    DuckDB's hash join would probe every row of the second table, masks and all: a reference
    table filtered to 200 synapses, merged with the 10^8-row synapse table, took 1.1 s."""
    if not query.is_join or query.left_join or len(query.relations) != 2 or is_lookup(query):
        return query
    first, second = query.relations
    own = tuple(f for f in query.filters if f.relation == first.name)
    if not own:
        return query
    own_column, their_column = query.join_columns
    alone = compile_query(Query(relations=(first,), filters=own,
                                select={first.name: (first.by_name[own_column],)}), data_dir)
    name = alone.columns[0].name
    found = engine.run(f'SELECT DISTINCT "{name}" AS v FROM ({alone.sql}) LIMIT ?',
                       [*alone.params, NAMED_VALUES + 1], tables=alone.tables,
                       attachments=alone.attachments).column("v").to_pylist()
    if len(found) > NAMED_VALUES:
        return query
    named = tuple(v for v in found if v is not None)
    return replace(query, filters=(*query.filters, _naming(second, their_column, named)))


def _naming(relation: Relation, column: str, values: tuple[object, ...]) -> Filter:
    """``column IN values`` on ``relation``."""
    return Filter(relation.name, (column,), Op.IN, values, relation.by_name[column].type)


def between(query: Query, first: int, last: int) -> Query:
    """The query's rows with ids from ``first`` to ``last``, from the first on (no offset)."""
    return replace(query, offset=None, filters=(
        *query.filters, *_id_range(query.relations[0].name, first, last)))


def _id_range(relation: str, first: int, last: int) -> tuple[Filter, Filter]:
    return (Filter(relation, ("id",), Op.GREATER_EQUAL, first, ColumnType.INT64),
            Filter(relation, ("id",), Op.LESS_EQUAL, last, ColumnType.INT64))


def _last_row(query: Query) -> int:
    return (query.limit or 0) + (query.offset or 0)
