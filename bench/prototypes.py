"""Prototypes of engine changes, measured against the current engine on the same rows:
``python -m bench.prototypes --synapses N [--replicate K]``.

In-process, the synapse table at v1718, each variant reading files derived once from the
version (cached under ``bench/.cache/proto-N-seedS``):

- ``engine``: opencave today — the bulk segment and 11 delta segments (Parquet, zstd,
  122,880-row groups), each minus its mask of ids (``ANTI JOIN``), 13 ``read_parquet``s;
- ``parts/native``: the same parts and masks, but stored as DuckDB tables (DuckDB's own
  columnar format, lightweight compression) instead of Parquet+zstd;
- ``compact/parquet``: the version's visible rows in ONE Parquet file sorted by (pre root,
  id), no masks — what a compacted snapshot would read;
- ``compact/native``: the same rows as one DuckDB table sorted by (pre root, id);
- ``+post/native``: plus a second copy sorted by (post root, id), read for post-only filters.

Q2 runs twice: with the benchmark's P (2,275 ids, topped up with the highest-degree neurons:
a result of ~28% of the table at 10^7) and with 1,436 random roots (a tiny result): the
second shows what a query costs when the result is small, as on minnie65 (132k of 3.4×10^8).

``--replicate K`` (2…10) appends the same measurements on the compacted native variants for
a table K times larger: the v1718 rows repeated K times with disjoint, interleaved root and
row ids (see :func:`replicate`), so every query returns the same rows while the table grows
— cost against table size, at sizes the synthetic generator cannot build yet.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from opencave.instance import OpenCave
from opencave.timestamps import from_micros

from . import datastack
from .layout import DATASTACK
from .report import _table, fmt_time
from .workload import CELL_TYPE, CELL_TYPES, LATEST, NUCLEI, SYNAPSES, Picks

PRE, POST = "pre_pt_root_id", "post_pt_root_id"
SEMI = "{c} IN (SELECT unnest(?::BIGINT[]))"
SHIFT = 1 << 44  # root and row ids of copy k are shifted by k·SHIFT (no overlap)


def derive(cave: OpenCave, out: Path) -> dict[str, Any]:
    """Compacted Parquet and a DuckDB file holding the compacted tables, today's parts and
    masks, and the two small tables of Q4 (cached)."""
    out.mkdir(parents=True, exist_ok=True)
    pre_parquet, native = out / "pre.parquet", out / "native.duckdb"
    snapshot = cave.versions.snapshots(cave.versions.get(DATASTACK, LATEST))[SYNAPSES]
    if not native.exists():
        svc = cave.materialization()
        raw = out / "rows.parquet"
        stream = svc.query_table(DATASTACK, LATEST, SYNAPSES, {}).stream
        with pq.ParquetWriter(raw, stream.schema, compression="zstd") as writer:
            for batch in stream:
                writer.write_batch(batch)
        tmp = native.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        con = duckdb.connect(str(tmp))
        con.execute("SET memory_limit = '4GB'")
        con.execute(f"SET temp_directory = '{out / 'spill'}'")
        if not pre_parquet.exists():
            con.execute(f"COPY (SELECT * FROM read_parquet('{raw}') ORDER BY {PRE}, id) TO "
                        f"'{pre_parquet}' (FORMAT parquet, COMPRESSION zstd, "
                        "ROW_GROUP_SIZE 122880)")
        con.execute(f"CREATE TABLE pre AS SELECT * FROM read_parquet('{raw}') "
                    f"ORDER BY {PRE}, id")
        con.execute(f"CREATE TABLE post AS SELECT * FROM read_parquet('{raw}') "
                    f"ORDER BY {POST}, id")
        for i, part in enumerate(snapshot.parts):
            segment = cave.data.absolute(part.segment.path)
            con.execute(f"CREATE TABLE part{i} AS SELECT * FROM read_parquet('{segment}')")
            if part.masks:
                masks = [str(cave.data.absolute(m.path)) for m in part.masks]
                con.execute(f"CREATE TABLE mask{i} AS SELECT id FROM read_parquet(?)", [masks])
        for table in (CELL_TYPES, NUCLEI):
            rows = svc.query_table(DATASTACK, LATEST, table, {}).stream.read_all()
            con.register("rows_arrow", rows)
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM rows_arrow")
            pq.write_table(rows, out / f"{table}.parquet")
            con.unregister("rows_arrow")
        con.close()
        tmp.rename(native)
        raw.unlink()
    return {"pre_parquet": pre_parquet, "native": native, "parts": len(snapshot.parts),
            "masked": [bool(p.masks) for p in snapshot.parts],
            "timestamp": from_micros(snapshot.timestamp), "dir": out}


def replicate(files: dict[str, Any], k: int) -> dict[str, Path]:
    """The compacted rows K times as DuckDB tables (cached). Copy c maps every root and row id
    x to x·K + c (0 stays 0): copies are disjoint yet interleave in sort order, so each row
    group spans the same id ranges as in the original table and zone maps prune no more than
    they would on a real table K times larger. Queries multiply their ids by K."""
    if not 1 < k <= 10:
        raise SystemExit("--replicate takes 2…10 (ids × K must fit in 64 bits)")
    out: Path = files["dir"]
    native = out / f"native-x{k}.duckdb"
    if native.exists():
        return {"native": native}
    tmp = native.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    con.execute("SET memory_limit = '6GB'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = '{out / 'spill'}'")
    src = f"read_parquet('{files['pre_parquet']}')"

    def mapped(column: str) -> str:
        return f"CASE WHEN {column} = 0 THEN 0 ELSE {column} * {k} + c.k END AS {column}"

    shifted = (f"SELECT * REPLACE (id * {k} + c.k AS id, {mapped(PRE)}, {mapped(POST)}) "
               f"FROM {src}, range({k}) c(k)")
    con.execute(f"CREATE TABLE pre AS {shifted} ORDER BY {PRE}, id")
    con.execute(f"CREATE TABLE post AS SELECT * FROM pre ORDER BY {POST}, id")
    con.close()
    tmp.rename(native)
    return {"native": native}


def timed(func: Callable[[], pa.Table], repeat: int) -> tuple[float, int]:
    func()
    times, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = func().num_rows
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


class Variants:
    """Each case's query on each variant."""

    def __init__(self, con: duckdb.DuckDBPyConnection, files: dict[str, Any]) -> None:
        self.con = con
        self.files = files

    def sql(self, statement: str, params: list) -> Callable[[], pa.Table]:
        return lambda: self.con.sql(statement, params=params).to_arrow_table()

    def compact_parquet(self, where: str, params: list) -> Callable[[], pa.Table]:
        return self.sql(f"SELECT * FROM read_parquet('{self.files['pre_parquet']}') t "
                        f"WHERE {where.format(t='t')}", params)

    def compact_native(self, where: str, params: list, *, table: str = "pre"
                       ) -> Callable[[], pa.Table]:
        return self.sql(f"SELECT * FROM db.{table} t WHERE {where.format(t='t')}", params)

    def parts_native(self, where: str, params: list) -> Callable[[], pa.Table]:
        branches, values = [], []
        timestamp = self.files["timestamp"]
        for i in range(self.files["parts"]):
            sql = f"SELECT s.* FROM db.part{i} s"
            if self.files["masked"][i]:
                sql += f" ANTI JOIN db.mask{i} m ON s.id = m.id"
            sql += (f" WHERE {where.format(t='s')} AND s.created <= ? AND "
                    "(s.deleted IS NULL OR s.deleted > ?)")
            values += [*params, timestamp, timestamp]
            branches.append(sql)
        return self.sql(" UNION ALL ".join(branches), values)


def run_cases(cases: dict[str, dict[str, Callable[[], pa.Table]]], variants: list[str],
              repeat: int) -> list[list[str]]:
    rows = [["case", *variants]]
    for case, runs in cases.items():
        row = [case]
        for variant in variants:
            if variant not in runs:
                row.append("")
                continue
            seconds, n = timed(runs[variant], repeat)
            row.append(f"{fmt_time(seconds)} ({n:,})")
        rows.append(row)
        print("  " + " | ".join(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.prototypes")
    parser.add_argument("--synapses", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--replicate", type=int, default=0,
                        help="also measure a table K times larger (compacted variants)")
    args = parser.parse_args(argv)
    data = datastack.directory(args.synapses, args.seed)
    picks = Picks.load(data.with_suffix(".picks.json"))
    cave = datastack.engine_instance(data)
    svc = cave.materialization()
    files = derive(cave, datastack.CACHE / f"proto-{args.synapses}-seed{args.seed}")
    con = duckdb.connect(":memory:")
    con.execute("SET parquet_metadata_cache = true")
    con.execute(f"ATTACH '{files['native']}' AS db (READ_ONLY)")
    v = Variants(con, files)
    neuron = picks.q1_neurons[0]
    proofread = [int(x) for x in picks.proofread[str(LATEST)]]
    q3 = [int(x) for x in picks.q3_neurons]
    keys = con.sql(f"SELECT DISTINCT {PRE} FROM db.pre WHERE {PRE} <> 0").fetchnumpy()[PRE]
    rng = np.random.default_rng([args.seed, 9])
    random_roots = sorted(int(x) for x in rng.choice(np.sort(keys), size=min(1436, len(keys)),
                                                     replace=False))
    eq_pre, eq_post = "{t}." + PRE + " = ?", "{t}." + POST + " = ?"
    in_pre = SEMI.format(c="{t}." + PRE)
    in_both = in_pre + " AND " + SEMI.format(c="{t}." + POST)

    def engine(body: dict) -> Callable[[], pa.Table]:
        return lambda: svc.query_table(DATASTACK, LATEST, SYNAPSES, body).stream.read_all()

    def case(where: str, params: list, body: dict | None, *, post: bool = False,
             variants: Variants = v) -> dict[str, Callable[[], pa.Table]]:
        out = {}
        if body is not None:
            out["engine"] = engine(body)
            out["parts/native"] = variants.parts_native(where, params)
        out["compact/parquet"] = variants.compact_parquet(where, params)
        out["compact/native"] = variants.compact_native(where, params)
        if post:
            out["+post/native"] = variants.compact_native(where, params, table="post")
        return out

    def cases(variants: Variants, with_engine: bool, k: int = 1) -> dict[str, dict]:
        body = (lambda b: b) if with_engine else (lambda b: None)
        neuron_k = neuron * k
        proofread_k = [x * k for x in proofread]
        random_k = [x * k for x in random_roots]
        q3_k = [x * k for x in q3]
        return {
            "Q1 out (pre = r)": case(eq_pre, [neuron_k], body(
                {"filter_equal_dict": {SYNAPSES: {PRE: neuron_k}}}), variants=variants),
            "Q1 in (post = r)": case(eq_post, [neuron_k], body(
                {"filter_equal_dict": {SYNAPSES: {POST: neuron_k}}}), post=True,
                variants=variants),
            f"Q2 bench P (|P|={len(proofread):,})": case(in_both, [proofread_k, proofread_k], body(
                {"filter_in_dict": {SYNAPSES: {PRE: proofread_k, POST: proofread_k}}}),
                variants=variants),
            f"Q2 {len(random_roots):,} random roots": case(
                in_both, [random_k, random_k], body(
                    {"filter_in_dict": {SYNAPSES: {PRE: random_k, POST: random_k}}}),
                variants=variants),
            f"Q3 pre ∈ {len(q3):,} neurons": case(in_pre, [q3_k], body(
                {"filter_in_dict": {SYNAPSES: {PRE: q3_k}}}), variants=variants),
        }

    variants = ["engine", "parts/native", "compact/parquet", "compact/native", "+post/native"]
    table = cases(v, True)
    q4_body = {"tables": [[CELL_TYPES, "target_id"], [NUCLEI, "id"]],
               "filter_equal_dict": {CELL_TYPES: {"cell_type": CELL_TYPE}}}
    q4_sql = "SELECT * FROM {r} r JOIN {t} t ON r.target_id = t.id WHERE r.cell_type = ?"
    out = files["dir"]
    table["Q4 23P ⋈ nuclei"] = {
        "engine": lambda: svc.join_query(DATASTACK, LATEST, q4_body).stream.read_all(),
        "compact/parquet": v.sql(q4_sql.format(r=f"read_parquet('{out / CELL_TYPES}.parquet')",
                                               t=f"read_parquet('{out / NUCLEI}.parquet')"),
                                 [CELL_TYPE]),
        "compact/native": v.sql(q4_sql.format(r=f"db.{CELL_TYPES}", t=f"db.{NUCLEI}"),
                                [CELL_TYPE]),
    }
    print(f"prototypes at {args.synapses:,} synapses, v{LATEST} (rows in parentheses)")
    rows = run_cases(table, variants, args.repeat)
    report = [f"prototypes at {args.synapses:,} synapses, v{LATEST}, median of "
              f"{args.repeat} (rows in parentheses)", *_table(rows)]
    if args.replicate > 1:
        big = replicate(files, args.replicate)
        con.execute(f"ATTACH '{big['native']}' AS big (READ_ONLY)")
        bv = Variants(con, {**files, **big})
        bv.compact_native = lambda where, params, table="pre": bv.sql(  # type: ignore[method-assign]
            f"SELECT * FROM big.{table} t WHERE {where.format(t='t')}", params)
        n_rows = con.sql("SELECT count(*) FROM big.pre").fetchall()[0][0]
        print(f"the same, table ×{args.replicate} ({n_rows:,} rows)")
        big_cases = cases(bv, False, args.replicate)
        for runs in big_cases.values():
            runs.pop("compact/parquet", None)
        big_rows = run_cases(big_cases, variants[3:], args.repeat)
        report += ["", f"the same on the table ×{args.replicate} ({n_rows:,} rows: the rows "
                   "repeated with disjoint, interleaved ids; same results)", *_table(big_rows)]
    sizes = {p.name: p.stat().st_size for p in out.glob("*") if p.is_file()}
    report.append("files: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in sizes.items()))
    print("\n" + "\n".join(report))
    (out / "report.txt").write_text("\n".join(report) + "\n")
    cave.close()


if __name__ == "__main__":
    main()
