"""An independent oracle: what a query *should* return, computed with plain pandas and scipy
from the synthetic generator's ground truth — the rows it wrote (read straight from its
Parquet files, no query engine) and its segmentation history (every edge and every edit,
from ``truth/``), with root ids as connected components of the edges alive at a time.

The oracle names each component by the root id the server reports for one of its
supervoxels, after checking that the server groups *every* supervoxel exactly as the
components do — so root ids are verified, not assumed.

Tests that write through the API are covered too: edits after the generator's are taken
from the operation log (the edges each added or removed), and annotations written or
deleted through the API from the rows stored in the live store.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from opencave.instance import OpenCave
from opencave.schemas import Role, get_schema_type
from opencave.synth import world


class Oracle:
    def __init__(self, cave: OpenCave) -> None:
        self.cave = cave
        self.truth = cave.data.root / "truth"
        self.graph = cave.segmentation(world.SEGMENTATION_TABLE)
        edges = pq.read_table(self.truth / "edges.parquet").to_pandas()
        self.base_edges = set(zip(edges.a.astype(np.uint64), edges.b.astype(np.uint64),
                                  strict=True))
        self.edits = pq.read_table(self.truth / "edits.parquet").to_pandas()

    def add_logged_edits(self) -> None:
        """Take edits made after the generator's from the operation log."""
        last = self.edits.timestamp.max()
        later = []
        for op in self.graph.operations():
            if pd.Timestamp(op.timestamp) <= last:
                continue
            for kind, edges in (("merge", op.added_edges), ("split", op.removed_edges)):
                for a, b in np.asarray(edges, dtype=np.uint64).reshape(-1, 2):
                    later.append({"timestamp": pd.Timestamp(op.timestamp), "kind": kind,
                                  "a": np.uint64(a), "b": np.uint64(b)})
        if later:
            self.edits = pd.concat([self.edits, pd.DataFrame(later)], ignore_index=True)
        self.root_map.cache_clear()

    # --- segmentation ----------------------------------------------------------------

    def edges_at(self, timestamp: datetime) -> np.ndarray:
        alive = {tuple(sorted(e)) for e in self.base_edges}
        for edit in self.edits.itertuples():
            if edit.timestamp > pd.Timestamp(timestamp):
                break
            pair = tuple(sorted((np.uint64(edit.a), np.uint64(edit.b))))
            if edit.kind == "merge":
                alive.add(pair)
            else:
                alive.discard(pair)
        return np.array(sorted(alive), dtype=np.uint64)

    @cache  # noqa: B019 (one oracle per session)
    def root_map(self, timestamp: datetime) -> pd.Series:
        """Supervoxel → root id at ``timestamp``, from connected components."""
        edges = self.edges_at(timestamp)
        svs = np.unique(np.concatenate([edges.ravel(), self._all_supervoxels()]))
        index = {int(s): i for i, s in enumerate(svs)}
        a = np.array([index[int(x)] for x in edges[:, 0]])
        b = np.array([index[int(x)] for x in edges[:, 1]])
        matrix = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(svs), len(svs)))
        _, labels = connected_components(matrix, directed=False)
        server_roots = self.graph.get_roots(svs, timestamp=timestamp)
        grouping = pd.DataFrame({"label": labels, "root": server_roots.astype(np.int64)})
        per_label = grouping.groupby("label").root.nunique()
        per_root = grouping.groupby("root").label.nunique()
        assert (per_label == 1).all() and (per_root == 1).all(), (
            f"the server's roots at {timestamp} do not match the connected components")
        return pd.Series(server_roots.astype(np.int64), index=svs.astype(np.int64))


    @cache  # noqa: B019
    def _all_supervoxels(self) -> np.ndarray:
        svs = []
        for name in self._table_names():
            frame = self._bulk(name)
            for column in frame.columns:
                if column.endswith("_supervoxel_id"):
                    svs.append(frame[column].dropna().to_numpy(np.uint64))
        values = np.unique(np.concatenate(svs))
        return values[values != 0]

    # --- annotations -----------------------------------------------------------------

    def _table_names(self) -> list[str]:
        return self.cave.tables.names(world.ALIGNED_VOLUME)

    @cache  # noqa: B019
    def _bulk(self, table: str) -> pd.DataFrame:
        meta = self.cave.tables.get(world.ALIGNED_VOLUME, table)
        paths = [self.cave.data.absolute(s.path) for s in self.cave.tables.segments(meta)]
        frames = [pq.read_table(p).to_pandas() for p in paths]
        if not frames:
            from opencave.storage.segments import arrow_schema

            return arrow_schema(meta.schema).empty_table().to_pandas()
        return pd.concat(frames, ignore_index=True)

    def _everything(self, table: str) -> pd.DataFrame:
        """Bulk rows plus rows written through the API, with API deletions applied."""
        meta = self.cave.tables.get(world.ALIGNED_VOLUME, table)
        bulk = self._bulk(table)
        rows, deletions = self.cave.rows.sql_tables(meta)
        with self.cave.live.connect() as conn:
            live = pd.read_sql(rows.select(), conn)
            gone = pd.read_sql(deletions.select(), conn)
        if not live.empty:
            live["created"] = pd.to_datetime(live.created, utc=True)
            live["deleted"] = pd.NaT
            live["superceded_id"] = pd.NA
            frame = pd.concat([bulk, live[bulk.columns]], ignore_index=True)
        else:
            frame = bulk.copy()
        if not gone.empty:
            when = pd.Series(pd.to_datetime(gone.deleted, utc=True).to_numpy(),
                             index=gone.id.to_numpy())
            hit = frame.id.isin(when.index)
            frame.loc[hit, "deleted"] = frame.loc[hit, "id"].map(when)
        return frame

    def rows(self, table: str, timestamp: datetime) -> pd.DataFrame:
        """Every row alive at ``timestamp`` with root ids as of then."""
        frame = self._everything(table)
        at = pd.Timestamp(timestamp)
        alive = (frame.created <= at) & (frame.deleted.isna() | (frame.deleted > at))
        frame = frame[alive].copy()
        roots = self.root_map(timestamp)
        for column in frame.columns:
            if column.endswith("_root_id"):
                svs = frame[column.removesuffix("root_id") + "supervoxel_id"].to_numpy(np.int64)
                inside = svs != 0
                values = np.zeros(len(svs), dtype=np.int64)
                values[inside] = roots.loc[svs[inside]].to_numpy(np.int64)
                frame[column] = values
        frame["valid"] = True
        frame["superceded_id"] = pd.NA
        return frame.drop(columns=["deleted"]).reset_index(drop=True)


def apply_filters(frame: pd.DataFrame, table: str, body: dict) -> pd.DataFrame:
    """CAVE filter semantics in pandas, for filters keyed by ``table``."""
    mask = pd.Series(True, index=frame.index)
    for key, op in (("filter_in_dict", "in"), ("filter_notin_dict", "not_in"),
                    ("filter_equal_dict", "eq"), ("filter_greater_dict", "gt"),
                    ("filter_less_dict", "lt"), ("filter_greater_equal_dict", "ge"),
                    ("filter_less_equal_dict", "le"), ("filter_regex_dict", "regex"),
                    ("filter_spatial_dict", "box")):
        for column, value in (body.get(key) or {}).get(table, {}).items():
            if op == "box":
                (lo, hi) = value
                for axis, a, b in zip("xyz", lo, hi, strict=True):
                    col = frame[f"{column}_{axis}"]
                    mask &= (col >= min(a, b)) & (col <= max(a, b))
                continue
            col = frame[column]
            if op == "in":
                mask &= col.isin(value)
            elif op == "not_in":
                mask &= ~col.isin(value) & col.notna()
            elif op == "eq":
                mask &= col == value
            elif op == "regex":
                mask &= col.fillna("").map(lambda s, r=re.compile(value): bool(r.search(s)))
            else:
                mask &= getattr(col, op)(value)
    return frame[mask]


def schema_of(cave: OpenCave, table: str):  # type: ignore[no-untyped-def]
    return get_schema_type(cave.tables.get(world.ALIGNED_VOLUME, table).schema_type)


def root_columns(cave: OpenCave, table: str) -> list[str]:
    return [c.name for c in schema_of(cave, table).columns() if c.role is Role.ROOT]


def truth_exists(data_dir: Path) -> bool:
    return (data_dir / "truth" / "edits.parquet").exists()
