"""Prototypes of engine changes, measured against the current engine on the same data:
``python -m bench.prototypes --synapses N``.

All in-process, synapse table at v1718 (P = the v1718 proofread set, 2,275 ids), each
variant reading files it derives once from the version (cached under ``bench/.cache``):

- ``engine``: opencave today (bulk segment + 11 delta segments, each minus its mask);
- ``compact``: the version's visible rows in ONE Parquet file sorted by (pre root, id), no
  masks — what a compacted snapshot would read;
- ``+post copy``: a second compacted file sorted by (post root, id), read when the filter is
  on the post root only;
- ``ranges``: a sidecar index of the pre-sorted file (distinct pre roots → row range) turns an
  ``IN`` list into row ranges; only the row groups holding them are decoded (pyarrow), the
  post filter applies to those rows. ``ranges/8k``: the same on a file with 8,192-row groups;
- ``keyed masks``: today's parts (bulk + deltas), but each mask also holds the masked rows'
  root ids and is sorted by pre root, so the query's own filter prunes the mask scan too
  (today every query reads every mask in full); ``keyed/8k``: the same with every part
  rewritten in 8,192-row groups, so that small delta segments are pruned as well.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from opencave.instance import OpenCave

from . import datastack
from .layout import DATASTACK
from .report import _table, fmt_time
from .workload import LATEST, SYNAPSES, Picks

PRE, POST = "pre_pt_root_id", "post_pt_root_id"


class RangeIndex:
    """Distinct values of a sorted column → [start, end) row ranges, and the row groups."""

    def __init__(self, path: Path, column: str) -> None:
        self.file = pq.ParquetFile(path)
        values = pq.read_table(path, columns=[column]).column(column).to_numpy()
        self.keys, self.starts, counts = np.unique(values, return_index=True,
                                                   return_counts=True)
        self.ends = self.starts + counts
        meta = self.file.metadata
        self.group_starts = np.cumsum([0] + [meta.row_group(i).num_rows
                                             for i in range(meta.num_row_groups)])

    def rows(self, ids: np.ndarray) -> pa.Table:
        ids = np.asarray(ids, dtype=np.int64)
        at = np.searchsorted(self.keys, ids)
        hit = (at < len(self.keys)) & (self.keys[np.minimum(at, len(self.keys) - 1)] == ids)
        starts, ends = self.starts[at[hit]], self.ends[at[hit]]
        if not len(starts):
            return self.file.schema_arrow.empty_table()
        first = np.searchsorted(self.group_starts, starts, "right") - 1
        last = np.searchsorted(self.group_starts, ends - 1, "right") - 1
        groups = np.unique(np.concatenate([np.arange(a, b + 1) for a, b in zip(first, last,
                                                                                strict=True)]))
        table = self.file.read_row_groups(groups.tolist(), use_threads=True)
        offset = np.zeros(len(self.group_starts), dtype=np.int64)
        sizes = np.diff(self.group_starts)[groups]
        offset[groups] = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        index = np.concatenate([
            np.arange(s, e) - self.group_starts[g] + offset[g]
            for s, e, g in zip(starts, ends, first, strict=True)
        ])  # a range may span groups: groups are contiguous in the table, so this holds
        return table.take(pa.array(index))


def derive(cave: OpenCave, out: Path) -> dict[str, Path]:
    """Compacted files of the v1718 synapse table (cached)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"pre": out / "pre.parquet", "post": out / "post.parquet",
             "pre8k": out / "pre-rg8k.parquet", "post8k": out / "post-rg8k.parquet"}
    if all(p.exists() for p in files.values()):
        return files
    raw = out / "rows.parquet"
    if not raw.exists():
        _dump(cave, raw)
    con = duckdb.connect(":memory:")
    con.execute("SET memory_limit = '4GB'")
    con.execute(f"SET temp_directory = '{out / 'spill'}'")
    for key, column, group in (("pre", PRE, 122_880), ("post", POST, 122_880),
                               ("pre8k", PRE, 8_192), ("post8k", POST, 8_192)):
        if not files[key].exists():
            con.execute(f"COPY (SELECT * FROM read_parquet('{raw}') ORDER BY {column}, id) "
                        f"TO '{files[key]}' (FORMAT parquet, COMPRESSION zstd, "
                        f"ROW_GROUP_SIZE {group})")
    con.close()
    raw.unlink()
    return files


def _dump(cave: OpenCave, raw: Path) -> None:
    svc = cave.materialization()
    stream = svc.query_table(DATASTACK, LATEST, SYNAPSES, {}).stream
    with pq.ParquetWriter(raw, stream.schema, compression="zstd") as writer:
        for batch in stream:
            writer.write_batch(batch)


def derive_parts(cave: OpenCave, out: Path) -> tuple[list[tuple[Path, Path | None, Path,
                                                                  Path | None]], object]:
    """Per part of the v1718 snapshot: (segment, keyed mask, segment in 8k row groups, keyed
    mask); and the snapshot's timestamp."""
    from opencave.timestamps import from_micros

    snapshot = cave.versions.snapshots(cave.versions.get(DATASTACK, LATEST))[SYNAPSES]
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    parts = []
    for i, part in enumerate(snapshot.parts):
        segment = cave.data.absolute(part.segment.path)
        seg8k = out / f"part{i}-rg8k.parquet"
        if not seg8k.exists():
            con.execute(f"COPY (SELECT * FROM read_parquet('{segment}') ORDER BY {PRE}, id) "
                        f"TO '{seg8k}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 8192)")
        keyed = None
        if part.masked:
            keyed = out / f"part{i}-mask-keyed.parquet"
            if not keyed.exists():
                mask = cave.data.absolute(part.masked)
                con.execute(
                    f"COPY (SELECT m.id, s.{PRE}, s.{POST} FROM read_parquet('{mask}') m "
                    f"JOIN read_parquet('{segment}') s USING (id) ORDER BY s.{PRE}, m.id) "
                    f"TO '{keyed}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 8192)")
        parts.append((segment, keyed, seg8k, keyed))
    con.close()
    return parts, from_micros(snapshot.timestamp)


def parts_query(con: duckdb.DuckDBPyConnection, parts: list, timestamp: object, *,
                small: bool, where: str, params: list) -> Callable[[], pa.Table]:
    """UNION ALL over the parts, each minus its keyed mask, the filter on both."""
    branches, values = [], []
    for segment, keyed, seg8k, _ in parts:
        source = seg8k if small else segment
        sql = f"SELECT s.* FROM read_parquet('{source}') s"
        if keyed is not None:
            sql += (f" ANTI JOIN (SELECT id FROM read_parquet('{keyed}') m WHERE "
                    f"{where.format(t='m')}) k ON s.id = k.id")
            values += params
        sql += f" WHERE {where.format(t='s')} AND s.created <= ? AND (s.deleted IS NULL OR " \
               "s.deleted > ?)"
        values += [*params, timestamp, timestamp]
        branches.append(sql)
    statement = " UNION ALL ".join(branches)
    return lambda: con.sql(statement, params=values).to_arrow_table()


def timed(func: Callable[[], pa.Table], repeat: int) -> tuple[float, int]:
    func()
    times, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = func().num_rows
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.prototypes")
    parser.add_argument("--synapses", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    data = datastack.directory(args.synapses, args.seed)
    picks = Picks.load(data.with_suffix(".picks.json"))
    cave = OpenCave(data)
    svc = cave.materialization()
    work = datastack.CACHE / f"proto-{args.synapses}-seed{args.seed}"
    files = derive(cave, work)
    parts, timestamp = derive_parts(cave, work)
    con = duckdb.connect(":memory:")
    con.execute("SET parquet_metadata_cache = true")
    pre_index = RangeIndex(files["pre"], PRE)
    pre8k_index = RangeIndex(files["pre8k"], PRE)
    neuron = picks.q1_neurons[0]
    proofread = np.array(picks.proofread[str(LATEST)], dtype=np.int64)
    q3 = np.array(picks.q3_neurons, dtype=np.int64)
    p_list = proofread.tolist()

    def engine(body: dict) -> Callable[[], pa.Table]:
        return lambda: svc.query_table(DATASTACK, LATEST, SYNAPSES, body).stream.read_all()

    def duck(file: Path, where: str, params: list) -> Callable[[], pa.Table]:
        return lambda: con.sql(f"SELECT * FROM read_parquet('{file}') WHERE {where}",
                               params=params).to_arrow_table()

    def in_both(index: RangeIndex) -> Callable[[], pa.Table]:
        def run() -> pa.Table:
            rows = index.rows(proofread)
            return rows.filter(pc.is_in(rows.column(POST), value_set=pa.array(proofread)))
        return run

    semi = "{c} IN (SELECT unnest(?::BIGINT[]))"

    def keyed(where: str, params: list, small: bool) -> Callable[[], pa.Table]:
        return parts_query(con, parts, timestamp, small=small, where=where, params=params)

    eq_pre, eq_post = "{t}." + PRE + " = ?", "{t}." + POST + " = ?"
    in_pre = "{t}." + PRE + " IN (SELECT unnest(?::BIGINT[]))"
    in_post = "{t}." + POST + " IN (SELECT unnest(?::BIGINT[]))"
    table = {
        "Q1 out (pre = r)": {
            "engine": engine({"filter_equal_dict": {SYNAPSES: {PRE: neuron}}}),
            "compact": duck(files["pre"], f"{PRE} = ?", [neuron]),
            "compact/8k": duck(files["pre8k"], f"{PRE} = ?", [neuron]),
            "ranges": lambda: pre_index.rows(np.array([neuron])),
            "ranges/8k": lambda: pre8k_index.rows(np.array([neuron])),
            "keyed masks": keyed(eq_pre, [neuron], False),
            "keyed/8k": keyed(eq_pre, [neuron], True),
        },
        "Q1 in (post = r)": {
            "engine": engine({"filter_equal_dict": {SYNAPSES: {POST: neuron}}}),
            "compact": duck(files["pre"], f"{POST} = ?", [neuron]),
            "compact/8k": duck(files["pre8k"], f"{POST} = ?", [neuron]),
            "+post copy": duck(files["post"], f"{POST} = ?", [neuron]),
            "+post copy/8k": duck(files["post8k"], f"{POST} = ?", [neuron]),
            "keyed masks": keyed(eq_post, [neuron], False),
            "keyed/8k": keyed(eq_post, [neuron], True),
        },
        f"Q2 pre∧post ∈ P (|P|={len(proofread):,})": {
            "engine": engine({"filter_in_dict": {SYNAPSES: {PRE: p_list, POST: p_list}}}),
            "compact": duck(files["pre"], semi.format(c=PRE) + " AND " + semi.format(c=POST),
                            [p_list, p_list]),
            "compact/8k": duck(files["pre8k"], semi.format(c=PRE) + " AND "
                               + semi.format(c=POST), [p_list, p_list]),
            "ranges": in_both(pre_index),
            "ranges/8k": in_both(pre8k_index),
            "keyed masks": keyed(in_pre + " AND " + in_post, [p_list, p_list], False),
            "keyed/8k": keyed(in_pre + " AND " + in_post, [p_list, p_list], True),
        },
        f"Q3 pre ∈ {len(q3):,} neurons": {
            "engine": engine({"filter_in_dict": {SYNAPSES: {PRE: q3.tolist()}}}),
            "compact": duck(files["pre"], semi.format(c=PRE), [q3.tolist()]),
            "compact/8k": duck(files["pre8k"], semi.format(c=PRE), [q3.tolist()]),
            "ranges": lambda: pre_index.rows(q3),
            "ranges/8k": lambda: pre8k_index.rows(q3),
            "keyed masks": keyed(in_pre, [q3.tolist()], False),
            "keyed/8k": keyed(in_pre, [q3.tolist()], True),
        },
    }
    variants = ["engine", "keyed masks", "keyed/8k", "compact", "compact/8k", "+post copy",
                "+post copy/8k", "ranges", "ranges/8k"]
    rows = [["case", *variants]]
    for case, runs in table.items():
        row = [case]
        for variant in variants:
            if variant not in runs:
                row.append("")
                continue
            seconds, n = timed(runs[variant], args.repeat)
            row.append(f"{fmt_time(seconds)} ({n:,})")
        rows.append(row)
        print("  " + " | ".join(row), flush=True)
    sizes = {k: p.stat().st_size for k, p in files.items()}
    print(f"\nprototypes at {args.synapses:,} synapses, v{LATEST}, median of {args.repeat} "
          f"(rows in parentheses); file sizes: "
          + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in sizes.items()))
    print("\n".join(_table(rows)))
    cave.close()


if __name__ == "__main__":
    main()
