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
  post filter applies to those rows. ``ranges/8k``: the same on a file with 8,192-row groups.
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
             "pre8k": out / "pre-rg8k.parquet"}
    if all(p.exists() for p in files.values()):
        return files
    svc = cave.materialization()
    stream = svc.query_table(DATASTACK, LATEST, SYNAPSES, {}).stream
    raw = out / "rows.parquet"
    with pq.ParquetWriter(raw, stream.schema, compression="zstd") as writer:
        for batch in stream:
            writer.write_batch(batch)
    con = duckdb.connect(":memory:")
    con.execute("SET memory_limit = '4GB'")
    con.execute(f"SET temp_directory = '{out / 'spill'}'")
    for key, column, group in (("pre", PRE, 122_880), ("post", POST, 122_880),
                               ("pre8k", PRE, 8_192)):
        con.execute(f"COPY (SELECT * FROM read_parquet('{raw}') ORDER BY {column}, id) TO "
                    f"'{files[key]}' (FORMAT parquet, COMPRESSION zstd, "
                    f"ROW_GROUP_SIZE {group})")
    con.close()
    raw.unlink()
    return files


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
    files = derive(cave, datastack.CACHE / f"proto-{args.synapses}-seed{args.seed}")
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
    table = {
        "Q1 out (pre = r)": {
            "engine": engine({"filter_equal_dict": {SYNAPSES: {PRE: neuron}}}),
            "compact": duck(files["pre"], f"{PRE} = ?", [neuron]),
            "ranges": lambda: pre_index.rows(np.array([neuron])),
            "ranges/8k": lambda: pre8k_index.rows(np.array([neuron])),
        },
        "Q1 in (post = r)": {
            "engine": engine({"filter_equal_dict": {SYNAPSES: {POST: neuron}}}),
            "compact": duck(files["pre"], f"{POST} = ?", [neuron]),
            "+post copy": duck(files["post"], f"{POST} = ?", [neuron]),
        },
        f"Q2 pre∧post ∈ P (|P|={len(proofread):,})": {
            "engine": engine({"filter_in_dict": {SYNAPSES: {PRE: p_list, POST: p_list}}}),
            "compact": duck(files["pre"], semi.format(c=PRE) + " AND " + semi.format(c=POST),
                            [p_list, p_list]),
            "ranges": in_both(pre_index),
            "ranges/8k": in_both(pre8k_index),
        },
        f"Q3 pre ∈ {len(q3):,} neurons": {
            "engine": engine({"filter_in_dict": {SYNAPSES: {PRE: q3.tolist()}}}),
            "compact": duck(files["pre"], semi.format(c=PRE), [q3.tolist()]),
            "ranges": lambda: pre_index.rows(q3),
            "ranges/8k": lambda: pre8k_index.rows(q3),
        },
    }
    variants = ["engine", "compact", "+post copy", "ranges", "ranges/8k"]
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
