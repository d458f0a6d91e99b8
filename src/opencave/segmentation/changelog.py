"""Per-root edit histories for caveclient's ``get_change_log`` / ``get_tabular_change_log``
(PyChunkedGraph's ``SegmentHistory``).

The operations of a root's history are those that superseded one of its ancestors. Before
and after roots come from the operation log itself (exact), where PyChunkedGraph reads them
from the partial lineage graph. ``in_neuron`` / ``is_relevant`` follow PyChunkedGraph: a
merge is relevant when its supervoxels started in different roots and in the neuron when
they all end in it; a split is relevant when its supervoxels ended in different roots at the
root's creation and in the neuron when any of them is in it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable

import networkx as nx
import numpy as np
import pandas as pd

from .arrays import unique
from .lineage import lineage_graph
from .operation import Operation
from .view import GraphView

OperationsFn = Callable[[list[int]], dict[int, Operation]]
COLUMNS = ["operation_id", "timestamp", "user_id", "before_root_ids", "after_root_ids", "is_merge"]


def history_operations(graph: nx.DiGraph, root: int) -> list[int]:
    ops = {graph.nodes[a].get("operation_id", 0) for a in nx.ancestors(graph, root)}
    return sorted(op for op in ops if op)


def tabular_change_logs(
    view: GraphView, roots: np.ndarray, operations: OperationsFn, now: int, filtered: bool
) -> dict[int, pd.DataFrame]:
    roots = unique(np.asarray(roots, dtype=np.uint64))
    base_ts = view.base.meta.base_timestamp
    graph = lineage_graph(view, roots, base_ts - 1, now)
    _, created, _ = view.created(roots)
    out = {}
    for root, root_ts in zip(roots.tolist(), created.tolist(), strict=True):
        op_ids = history_operations(graph, root)
        ops = operations(op_ids)
        rows = [_row(view, ops[op], root, root_ts, base_ts) for op in op_ids]
        table = pd.DataFrame(rows, columns=[*COLUMNS, "in_neuron", "is_relevant"])
        if filtered:
            table = table[table["in_neuron"] & table["is_relevant"]]
            table = table.drop(columns=["in_neuron", "is_relevant"]).reset_index(drop=True)
        out[root] = table
    return out


def _row(view: GraphView, op: Operation, root: int, root_ts: int, base_ts: int) -> dict:
    svs = op.edited_supervoxels
    current = view.roots(svs, root_ts) if len(svs) else svs
    if op.is_merge:
        original = view.roots(svs, base_ts) if len(svs) else svs
        relevant = len(unique(original)) != 1
        in_neuron = bool(np.all(current == root))
    else:
        relevant = len(unique(current)) != 1
        in_neuron = bool(np.any(current == root))
    return {
        "operation_id": op.id,
        "timestamp": op.timestamp,
        "user_id": op.user_id,
        "before_root_ids": [int(r) for r in op.old_root_ids],
        "after_root_ids": [int(r) for r in op.new_root_ids],
        "is_merge": op.is_merge,
        "in_neuron": in_neuron,
        "is_relevant": relevant,
    }


def change_log_summary(table: pd.DataFrame) -> dict:
    """``n_splits``, ``n_mergers``, ``user_info``, ``operations_ids``, ``past_ids``."""
    user_info: dict[str, Counter] = defaultdict(Counter)
    for user, is_merge in zip(table["user_id"], table["is_merge"], strict=True):
        user_info[str(user)]["n_mergers" if is_merge else "n_splits"] += 1
    n_mergers = int(table["is_merge"].sum()) if len(table) else 0
    past = [r for ids in table["before_root_ids"] for r in ids]
    return {
        "n_splits": len(table) - n_mergers,
        "n_mergers": n_mergers,
        "user_info": {
            u: {"n_splits": c["n_splits"], "n_mergers": c["n_mergers"]}
            for u, c in user_info.items()
        },
        "operations_ids": [int(o) for o in table["operation_id"]],
        "past_ids": past,
    }
