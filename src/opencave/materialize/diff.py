"""What changed in a table between two versions or timestamps: rows added, rows removed,
and rows whose root ids changed — as one Arrow table.

Candidates come from the snapshots' structure, so the cost follows the changes: rows of
segments only one side has, ids masked on one side only, rows created or deleted between the
two instants, and live changes. Only those rows are read from both sides and compared.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..schemas import Role
from ..segmentation.arrays import unique
from ..storage.files import DataDir
from ..storage.segments import read_id_set
from ..timestamps import from_micros
from .engine import QueryEngine
from .query import Query, compile_query
from .relations import Relation
from .snapshots import SnapshotPart


def diff(engine: QueryEngine, data: DataDir, before: Relation, after: Relation) -> pa.Table:
    """``id, change ('added' | 'removed' | 'roots_changed')`` and, per root column,
    ``<column>_before`` and ``<column>_after``."""
    candidates = _candidates(engine, data, before, after)
    roots = [c.name for c in after.columns if c.role is Role.ROOT]
    empty = pa.table({"id": pa.array([], pa.int64()), "change": pa.array([], pa.string()),
                      **{f"{r}_{side}": pa.array([], pa.int64())
                         for r in roots for side in ("before", "after")}})
    if len(candidates) == 0:
        return empty
    sides = [_rows(engine, data, r, candidates, roots) for r in (before, after)]
    joined = _compare(engine, sides[0], sides[1], roots)
    return joined if joined.num_rows else empty


def _rows(engine: QueryEngine, data: DataDir, relation: Relation, ids: np.ndarray,
          roots: list[str]) -> pa.Table:
    wanted = ["id", *roots]
    columns = tuple(c for c in relation.columns if c.name in wanted)
    query = Query((relation,), select={relation.name: columns})
    compiled = compile_query(query, data)
    sql = f"SELECT * FROM ({compiled.sql}) WHERE id IN (SELECT id FROM candidates)"
    tables = {**compiled.tables, "candidates": pa.table({"id": ids})}
    return engine.run(sql, compiled.params, tables=tables, attachments=compiled.attachments)


def _compare(engine: QueryEngine, before: pa.Table, after: pa.Table,
             roots: list[str]) -> pa.Table:
    changed = " OR ".join(f'b."{r}" IS DISTINCT FROM a."{r}"' for r in roots) or "FALSE"
    outputs = ", ".join(f'b."{r}" AS "{r}_before", a."{r}" AS "{r}_after"' for r in roots)
    sql = (
        "SELECT coalesce(b.id, a.id) AS id, CASE WHEN b.id IS NULL THEN 'added' "
        "WHEN a.id IS NULL THEN 'removed' ELSE 'roots_changed' END AS change"
        + (f", {outputs}" if outputs else "")
        + f" FROM before_rows b FULL OUTER JOIN after_rows a ON b.id = a.id "
        f"WHERE b.id IS NULL OR a.id IS NULL OR {changed} ORDER BY id"
    )
    return engine.run(sql, [], tables={"before_rows": before, "after_rows": after})


def _candidates(engine: QueryEngine, data: DataDir, before: Relation,
                after: Relation) -> np.ndarray:
    found: list[np.ndarray] = []
    parts_before = _by_segment(before)
    parts_after = _by_segment(after)
    for path in set(parts_before) ^ set(parts_after):
        found.append(_ids_of(engine, data, path))
    for path in set(parts_before) & set(parts_after):
        a, b = parts_before[path], parts_after[path]
        if a.masks != b.masks:
            found.append(np.setxor1d(_mask(data, a), _mask(data, b)))
    for relation in (before, after):
        if relation.live is not None:
            found += [mask.column("id").to_numpy() for mask in relation.live.masks.values()]
            if relation.live.rows is not None:
                found.append(relation.live.rows.column("id").to_numpy())
    shared = sorted(set(parts_before) & set(parts_after))
    if shared:
        found.append(_created_or_deleted_between(engine, data, shared, before, after))
    if not found:
        return np.empty(0, dtype=np.int64)
    return unique(np.concatenate([np.asarray(f, dtype=np.int64) for f in found]))


def _by_segment(relation: Relation) -> dict[str, SnapshotPart]:
    assert relation.snapshot is not None
    return {p.segment.path: p for p in relation.snapshot.parts}


def _mask(data: DataDir, part: SnapshotPart) -> np.ndarray:
    ids = [read_id_set(data.absolute(m.path)) for m in part.masks]
    return np.concatenate(ids) if ids else np.empty(0, np.int64)


def _ids_of(engine: QueryEngine, data: DataDir, path: str) -> np.ndarray:
    return engine.run("SELECT id FROM read_parquet(?)", [str(data.absolute(path))]
                      ).column("id").to_numpy()


def _created_or_deleted_between(engine: QueryEngine, data: DataDir, paths: list[str],
                                before: Relation, after: Relation) -> np.ndarray:
    assert before.snapshot is not None and after.snapshot is not None
    times = sorted((before.snapshot.timestamp, after.snapshot.timestamp))
    lo, hi = from_micros(times[0]), from_micros(times[1])
    params: list[Any] = [[str(data.absolute(p)) for p in paths], lo, hi, lo, hi]
    return engine.run(
        "SELECT id FROM read_parquet(?) WHERE (created > ? AND created <= ?) "
        "OR (deleted > ? AND deleted <= ?)", params).column("id").to_numpy()
