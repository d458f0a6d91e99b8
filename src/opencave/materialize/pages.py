"""Pages of large tables (``limit``/``offset``, in id order) without reading every row.

DuckDB answers ``ORDER BY id LIMIT k`` with a top-N, but the top-N sits above the anti-joins
that hide masked rows, so every visible row is still read whole and probed against the
masks: at 10^8 synapses ``limit=10`` took 0.66 s and ``limit=1000`` 3.3 s, though a
segment's ids are scattered through its copies (they are sorted by root ids) and zone maps
on ``id`` only help once a bound is known.

A page's rows are the ``offset + limit`` smallest visible ids, and masks only remove rows, so
they all lie at or below the n-th smallest id of the rows *before* masking, for any
``n >= offset + limit`` that leaves enough unmasked. That bound is a top-N over the id column
alone, per part (:func:`~opencave.materialize.query.compile_id_bound`); the page is then the
query as asked plus ``id <= bound``, a filter DuckDB pushes into every part and mask. When
masks hid so much that the page comes back short while the bound cut rows off, a larger
``n`` is tried, then the query without a bound.
"""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa

from ..schemas import ColumnType
from ..storage.files import DataDir
from .engine import QueryEngine
from .filters import Filter, Op
from .query import CompiledQuery, Query, compile_id_bound, compile_query

#: Rows the bound is first taken over: twice the page's last row plus this many, so that a
#: page survives masks hiding up to half its candidates (a tenth at 10^8, v1181).
SLACK_ROWS = 100
#: How much the bound's rows grow when masks hid too many, and how many tries there are.
GROWTH = 8
TRIES = 2
#: Pages ending beyond this row read the query without a bound: the bound's own top-N would
#: hold as many ids as the page's sort.
MAX_BOUNDED_ROWS = 1_000_000


def read_page(engine: QueryEngine, query: Query, compiled: CompiledQuery,
              data_dir: DataDir) -> pa.Table:
    """The rows of a query with a ``limit`` (``compiled``: the query as compiled), read
    whole. A single-table query that is no lookup goes through an id bound; the rest (joins,
    samples, lookups, whose plans already read few rows) run as compiled."""
    if (query.limit is None or query.is_join or query.random_sample or compiled.lookup
            or _last_row(query) > MAX_BOUNDED_ROWS):
        return engine.table(compiled)
    return bounded_page(engine, query, data_dir)


def bounded_page(engine: QueryEngine, query: Query, data_dir: DataDir) -> pa.Table:
    """The page of a single-table query with a ``limit``, read below an id bound."""
    if query.limit is None or query.is_join:
        raise ValueError("a bounded page needs a limit and a single table")
    rows = 2 * _last_row(query) + SLACK_ROWS
    for _ in range(TRIES):
        sql, params, sources = compile_id_bound(query, data_dir, rows)
        found = engine.run(sql, params, tables=sources.tables,
                           attachments=sources.attachments).to_pylist()[0]
        bound = found["bound"] if found["bound"] is not None else -1  # no row: an empty page
        page = engine.table(compile_query(below(query, bound), data_dir))
        if page.num_rows >= query.limit or found["seen"] < rows:
            return page
        rows *= GROWTH
    return engine.table(compile_query(query, data_dir))


def below(query: Query, bound: int) -> Query:
    """The query narrowed to ids at most ``bound``."""
    relation = query.relations[0].name
    return replace(query, filters=(*query.filters,
                                   Filter(relation, ("id",), Op.LESS_EQUAL, bound,
                                          ColumnType.INT64)))


def _last_row(query: Query) -> int:
    return (query.limit or 0) + (query.offset or 0)
