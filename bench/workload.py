"""What the benchmark asks: the neurons and id sets of each case, picked once per datastack
from the data itself (cached), and each case as a caveclient call and as the original's SQL.

- Q1: one neuron's outputs (``synapse_query(pre_ids=r)``) and inputs (``post_ids=r``) at
  v1718, for 8 neurons drawn at random (seeded) among the neurons with a nucleus.
- Q2: synapses among the proofread neurons P (``query_table`` with ``filter_in_dict`` on pre
  and post, ``desired_resolution=[1,1,1]``, ``split_positions=True``): P = the axon-proofread
  cells of ``proofreading_status_and_strategy`` at v1181 (|P| = 1,436 on minnie65) and v1718
  (2,275). A scaled datastack has fewer proofread cells; P is topped up to the real sizes with
  the neurons of highest degree, then other roots of highest degree, so the ``IN`` lists are
  as long as the tutorials'.
- Q3: all synapses out of 2,000 neurons (random neurons, topped up by out-degree).
- Q4: ``aibs_metamodel_celltypes_v661`` joined to ``nucleus_detection_v0`` (caveclient's
  ``merge_reference``), ``cell_type = '23P'`` (the commonest type).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from opencave.instance import OpenCave

from .layout import DATASTACK, CaveTable, reference_join_query, simple_query

SYNAPSES = "synapses_pni_2"
NUCLEI = "nucleus_detection_v0"
CELL_TYPES = "aibs_metamodel_celltypes_v661"
PROOFREADING = "proofreading_status_and_strategy"
LATEST = 1718
P_SIZES = {1181: 1436, 1718: 2275}
Q3_NEURONS = 2000
Q1_NEURONS = 8
CELL_TYPE = "23P"
TARGET_PREDICTIONS = "synapse_target_predictions_ssa_v2"  # a reference table on synapses
PG_TABLES = (SYNAPSES, NUCLEI, CELL_TYPES, TARGET_PREDICTIONS)


@dataclass
class Picks:
    q1_neurons: list[int]
    proofread: dict[str, list[int]]  # version -> P
    proofread_composition: dict[str, dict[str, int]]
    q3_neurons: list[int]
    cell_type: str

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> Picks:
        return cls(**json.loads(path.read_text()))


def pick(cave: OpenCave, cache: Path, seed: int = 0, *, log=print) -> Picks:  # type: ignore[no-untyped-def]
    if cache.exists():
        return Picks.load(cache)
    log("picking neurons and id sets from the datastack …")
    svc = cave.materialization()
    rng = np.random.default_rng([seed, 6])
    con = duckdb.connect(":memory:")
    # At 3.4e8 synapses a version has ~8e7 distinct pre roots: its degree tables (~1.6 GB,
    # kept in memory) and the aggregation making them spilled more than the disk had at 2GB.
    con.execute("SET memory_limit = '8GB'")

    def table(version: int, name: str, body: dict[str, Any] | None = None) -> pa.Table:
        return svc.query_table(DATASTACK, version, name, body or {}).stream.read_all()

    def degrees(version: int) -> _Degrees:
        """Synapses per root out and in, aggregated by DuckDB as the rows stream by (one
        column at a time) and kept there: at 10^8 synapses most roots are small fragments,
        tens of millions of them — too many for Python dicts."""
        for column, name in (("pre_pt_root_id", "out"), ("post_pt_root_id", "inp")):
            stream = svc.query_table(DATASTACK, version, SYNAPSES,
                                     {"select_columns": [column]}).stream
            reader = pa.RecordBatchReader.from_batches(stream.schema, iter(stream))  # noqa: F841
            con.execute(f'CREATE OR REPLACE TABLE {name}_{version} AS SELECT "{column}" AS '
                        f'root, count(*) AS n FROM reader WHERE "{column}" <> 0 GROUP BY 1')
        return _Degrees(con, f"out_{version}", f"inp_{version}")

    def neurons(version: int) -> list[int]:
        types = table(version, CELL_TYPES).to_pandas()
        nuclei = table(version, NUCLEI).to_pandas()
        neuronal = types[types.classification_system.str.contains("neuron")
                         & ~types.classification_system.str.contains("non")]
        roots = nuclei[nuclei.id.isin(neuronal.target_id) & (nuclei.pt_root_id != 0)]
        return sorted(set(roots.pt_root_id.astype(np.int64).tolist()))

    def top_up(first: list[int], size: int, ranked_pools: list[list[int]]) -> tuple[
            list[int], list[int]]:
        chosen, seen, counts = [], set(), []
        for pool in [first, *ranked_pools]:
            taken = 0
            for r in pool:
                if len(chosen) >= size:
                    break
                if r not in seen:
                    seen.add(r)
                    chosen.append(int(r))
                    taken += 1
            counts.append(taken)
        return chosen, counts

    proofread, composition = {}, {}
    latest_neurons: list[int] = []
    for version, size in P_SIZES.items():
        degree = degrees(version)
        cells = neurons(version)
        status = table(version, PROOFREADING, {"filter_equal_dict": {PROOFREADING: {
            "status_axon": True}}}).to_pandas()
        axons = sorted({int(r) for r in status.pt_root_id if r != 0})
        total = degree.of(cells, "total")
        by_degree = sorted(cells, key=lambda r: -total.get(r, 0))
        chosen, counts = top_up(axons, size, [by_degree, degree.top(2 * size, "total")])
        proofread[str(version)] = chosen
        composition[str(version)] = {"proofread": counts[0], "neurons": counts[1],
                                     "other roots": counts[2]}
        if version == LATEST:
            latest_neurons, latest = cells, degree
    out_latest, in_latest = latest.of(latest_neurons, "out"), latest.of(latest_neurons, "inp")
    connected = [r for r in latest_neurons if out_latest.get(r) and in_latest.get(r)]
    q1 = sorted(int(r) for r in rng.choice(connected, size=min(Q1_NEURONS, len(connected)),
                                           replace=False))
    sample = [int(r) for r in rng.permutation([r for r in latest_neurons
                                               if out_latest.get(r)])]
    q3, _ = top_up(sample[:Q3_NEURONS], Q3_NEURONS, [latest.top(2 * Q3_NEURONS, "out")])
    con.close()
    picks = Picks(q1, proofread, composition, q3, CELL_TYPE)
    picks.save(cache)
    return picks


@dataclass(frozen=True)
class _Degrees:
    """Synapses per root of one version, out (``out``) and in (``inp``): DuckDB tables
    ``(root, n)``."""

    con: duckdb.DuckDBPyConnection
    out: str
    inp: str

    def _counts(self, which: str) -> str:
        if which == "total":
            return (f"(SELECT root, sum(n) AS n FROM (SELECT * FROM {self.out} UNION ALL "
                    f"SELECT * FROM {self.inp}) GROUP BY root)")
        return {"out": self.out, "inp": self.inp}[which]

    def of(self, roots: list[int], which: str) -> dict[int, int]:
        wanted = pa.table({"root": pa.array(roots, pa.int64())})  # noqa: F841 (read by SQL)
        found = self.con.sql(f"SELECT c.root, c.n FROM {self._counts(which)} AS c "
                             "SEMI JOIN wanted USING (root)").fetchnumpy()
        return dict(zip(found["root"].tolist(), found["n"].tolist(), strict=True))

    def top(self, k: int, which: str) -> list[int]:
        """The ``k`` roots with the most synapses (ties by root id)."""
        return [int(r) for r, in self.con.execute(
            f"SELECT root FROM {self._counts(which)} ORDER BY n DESC, root LIMIT ?",
            [k]).fetchall()]


# -- the calls -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """One request of a case: ``kind`` says what, ``ids`` which roots, at ``version``."""

    kind: str  # q1_out | q1_in | q2 | q3 | q4 | page | joined_page
    version: int
    ids: tuple[int, ...] = ()
    label: str = ""
    limit: int | None = None  # a page's
    offset: int = 0


def run_client(client: Any, call: Call) -> int:
    """Make the call through caveclient exactly as a user would; return the row count."""
    mat = client.materialize
    if call.kind == "q1_out":
        df = mat.synapse_query(pre_ids=call.ids[0], materialization_version=call.version)
    elif call.kind == "q1_in":
        df = mat.synapse_query(post_ids=call.ids[0], materialization_version=call.version)
    elif call.kind == "q2":
        ids = list(call.ids)
        df = mat.query_table(SYNAPSES, filter_in_dict={"pre_pt_root_id": ids,
                                                       "post_pt_root_id": ids},
                             desired_resolution=[1, 1, 1], split_positions=True,
                             materialization_version=call.version)
    elif call.kind == "q3":
        df = mat.synapse_query(pre_ids=list(call.ids), split_positions=True,
                               materialization_version=call.version)
    elif call.kind == "q4":
        df = mat.query_table(CELL_TYPES, filter_equal_dict={"cell_type": CELL_TYPE},
                             materialization_version=call.version)
    elif call.kind in ("page", "joined_page"):  # the tutorials' first look: limit=10
        # caveclient merges a reference table with its target (merge_reference=True)
        table = SYNAPSES if call.kind == "page" else TARGET_PREDICTIONS
        df = mat.query_table(table, limit=call.limit, offset=call.offset or None,
                             materialization_version=call.version, log_warning=False)
    else:
        raise ValueError(call.kind)
    return len(df)


def postgres_sql(tables: dict[str, CaveTable], call: Call) -> str:
    """The same query as the original server runs it against the version's database."""
    syn = tables[SYNAPSES]
    if call.kind == "q1_out":
        return simple_query(syn, equal={"pre_pt_root_id": call.ids[0]})
    if call.kind == "q1_in":
        return simple_query(syn, equal={"post_pt_root_id": call.ids[0]})
    if call.kind == "q2":
        return simple_query(syn, within={"pre_pt_root_id": call.ids,
                                         "post_pt_root_id": call.ids},
                            desired_resolution=(1, 1, 1))
    if call.kind == "q3":
        return simple_query(syn, within={"pre_pt_root_id": call.ids})
    if call.kind == "q4":
        return reference_join_query(tables[CELL_TYPES], tables[NUCLEI],
                                    equal={"cell_type": CELL_TYPE})
    page = f" LIMIT {int(call.limit or 0)} OFFSET {int(call.offset)}"
    if call.kind == "page":  # in id order, as opencave pages (PostgreSQL walks its id index)
        return simple_query(syn) + " ORDER BY a.id" + page
    if call.kind == "joined_page":
        return (reference_join_query(tables[TARGET_PREDICTIONS], syn, equal={})
                + " ORDER BY r.id, t.id" + page)
    raise ValueError(call.kind)
