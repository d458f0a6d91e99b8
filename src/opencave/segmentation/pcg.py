"""PyChunkedGraph's API on top of :class:`SegmentationGraph`: edits given as (node id,
point in nm) as its server receives them, and the JSON shapes its server answers (dataset
info, operation details, node-link lineage graphs, tabular change logs).

Everything here returns plain Python values; the HTTP layer only serializes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import networkx as nx
import numpy as np

from ..errors import InvalidRequest
from .arrays import unique
from .graph import SegmentationGraph
from .operation import SUCCESS, Operation
from .points import parse_points

#: PyChunkedGraph's operation status codes (``OperationLogs.StatusCodes``).
_STATUS_CODES = {SUCCESS: 0}
#: Bits of the layer field in a node id (PyChunkedGraph's ``n_bits_for_layer_id``).
_LAYER_ID_BITS = 8


# -- edits --------------------------------------------------------------------------------------
def merge_at_points(graph: SegmentationGraph, body: object, user_id: str) -> Operation:
    """A merge as ``POST …/merge`` sends it: ``[[id, x, y, z], [id, x, y, z]]`` (nm)."""
    ids, points = parse_points(body, "the merge body")
    if len(ids) != 2:
        raise InvalidRequest(f"a merge takes exactly two [id, x, y, z] entries, got {len(ids)}")
    svs, within = graph.supervoxels_at(ids, points)
    return graph.merge(
        int(svs[0]), int(svs[1]), user_id=user_id,
        coordinates=_voxels(graph, points), within=within,
    )


def split_at_points(graph: SegmentationGraph, body: object, user_id: str) -> Operation:
    """A split as ``POST …/split`` sends it: ``{"sources": [[id, x, y, z], …], "sinks": …}``
    (positions in nm; an id may be a supervoxel or a root / any node above it)."""
    if not isinstance(body, dict) or not {"sources", "sinks"} <= set(body):
        raise InvalidRequest('a split body is {"sources": [[id, x, y, z], …], "sinks": [...]}')
    src_ids, src_pts = parse_points(body["sources"], "sources")
    snk_ids, snk_pts = parse_points(body["sinks"], "sinks")
    svs, within = graph.supervoxels_at(
        np.concatenate([src_ids, snk_ids]), np.concatenate([src_pts, snk_pts])
    )
    src, snk = svs[: len(src_ids)], svs[len(src_ids):]
    both = np.intersect1d(src, snk)
    if len(both) and any(int(s) in within for s in both):
        raise InvalidRequest(
            f"a source and a sink point resolve to the same supervoxel {int(both[0])} (they "
            "fall in the same chunk of the segment); give supervoxel ids for them instead"
        )
    src, src_pts = _first_per_supervoxel(src, src_pts)
    snk, snk_pts = _first_per_supervoxel(snk, snk_pts)
    return graph.split(
        src, snk, user_id=user_id, within=within,
        source_coords=_voxels(graph, src_pts), sink_coords=_voxels(graph, snk_pts),
    )


def _first_per_supervoxel(svs: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique supervoxels with the first point given for each (the graph's order)."""
    uniq, first = np.unique(svs, return_index=True)
    return uniq, points[first]


def _voxels(graph: SegmentationGraph, points_nm: np.ndarray) -> np.ndarray:
    """Positions in base voxels, as PyChunkedGraph logs them."""
    return np.asarray(points_nm, dtype=np.float64) / np.asarray(graph.geometry.resolution)


def edit_result(op: Operation) -> dict[str, Any]:
    return {"operation_id": op.id, "new_root_ids": op.new_root_ids.tolist()}


# -- reads --------------------------------------------------------------------------------------
def dataset_info(graph: SegmentationGraph) -> dict[str, Any]:
    """``GET /segmentation/table/{id}/info``: a precomputed-style segmentation info plus the
    ``graph`` block. opencave serves no watershed volume and no meshes, so ``data_dir`` is
    empty and the mesh flags are off."""
    geo, layout = graph.geometry, graph.layout
    _, hi = graph.supervoxel_chunk_range()
    resolution = [_number(r) for r in geo.resolution]
    return {
        "@type": "neuroglancer_multiscale_volume",
        "type": "segmentation",
        "data_type": "uint64",
        "num_channels": 1,
        "data_dir": "",
        "chunks_start_at_voxel_offset": True,
        "graph": {
            "chunk_size": list(geo.chunk_size),
            "n_layers": layout.n_layers,
            "n_bits_for_layer_id": _LAYER_ID_BITS,
            "cv_mip": 0,
            "spatial_bit_masks": {
                str(layer): layout.bits(layer) for layer in range(1, layout.n_layers + 1)
            },
        },
        "scales": [{
            "key": "_".join(str(r) for r in resolution),
            "resolution": resolution,
            "voxel_offset": list(geo.voxel_offset),
            "size": [(h + 1) * c for h, c in zip(hi, geo.chunk_size, strict=True)],
            "chunk_sizes": [list(geo.chunk_size)],
            "encoding": "raw",
        }],
        "app": {"supported_api_versions": [0, 1]},
        "sharded_mesh": False,
        "verify_mesh": False,
    }


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def node_link(lineage: nx.DiGraph) -> dict[str, Any]:
    """networkx's node-link form (``links``), nodes and links sorted for stable output."""
    return {
        "directed": True,
        "multigraph": False,
        "graph": {},
        "nodes": [{"id": n, **lineage.nodes[n]} for n in sorted(lineage.nodes)],
        "links": [{"source": a, "target": b} for a, b in sorted(lineage.edges)],
    }


def past_id_mapping(graph: SegmentationGraph, roots: np.ndarray, past: Any, future: Any) -> dict:
    past_map, future_map = graph.past_ids(roots, past, future)
    return {
        "past_id_map": {str(k): v for k, v in past_map.items()},
        "future_id_map": {str(k): v for k, v in future_map.items()},
    }


def tabular_change_logs(
    graph: SegmentationGraph,
    roots: np.ndarray,
    filtered: bool,
    user_names: Callable[[list[str]], dict[str, str]] | None = None,
) -> dict[str, str]:
    """``{root: DataFrame.to_json()}`` (timestamps in epoch ms, as PyChunkedGraph), with
    ``user_name`` from ``user_names`` (user id -> name; the id itself when unknown) and an
    empty ``user_affiliation`` (opencave keeps none)."""
    tables = graph.tabular_change_log(unique(roots), filtered=filtered)
    users = sorted({str(u) for t in tables.values() for u in t["user_id"]})
    names = user_names(users) if user_names and users else {}
    return {
        str(root): table.assign(
            user_name=[names.get(str(u), str(u)) for u in table["user_id"]],
            user_affiliation="",
        ).to_json()
        for root, table in tables.items()
    }


def operation_details(graph: SegmentationGraph, operation_ids: list[int]) -> dict[str, dict]:
    """PyChunkedGraph's operation log entries, keyed by operation id (as strings)."""
    return {str(op_id): _log_entry(graph.operation(op_id)) for op_id in operation_ids}


def _log_entry(op: Operation) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "user": op.user_id,
        "timestamp": str(op.timestamp),
        "operation_status": _STATUS_CODES.get(op.status, 2),
        "roots": op.new_root_ids.tolist(),
        "old_root_ids": op.old_root_ids.tolist(),
    }
    if op.is_merge:
        entry["added_edges"] = op.added_edges.tolist()
        entry["affinities"] = op.added_affinities.tolist()
    else:
        entry["removed_edges"] = op.removed_edges.tolist()
        entry["affinities"] = op.removed_affinities.tolist()
    if len(op.source_ids) or len(op.sink_ids):
        entry["source_ids"] = op.source_ids.tolist()
        entry["sink_ids"] = op.sink_ids.tolist()
    if op.source_coords is not None:
        entry["source_coords"] = op.source_coords
    if op.sink_coords is not None:
        entry["sink_coords"] = op.sink_coords
    if op.undo_of is not None:
        entry["undo_operation_id"] = op.undo_of
    if op.redo_of is not None:
        entry["redo_operation_id"] = op.redo_of
    return entry
