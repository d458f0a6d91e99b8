"""ChunkedGraph (PyChunkedGraph-compatible) routes over the segmentation graphs.

``B = /segmentation/api/v1/table/{table_id}``; the table id is a datastack's
``segmentation_table``. Timestamps in query strings are POSIX seconds (ISO accepted too);
missing means now. Ids travel as JSON integers, or raw little-endian uint64 for
``roots_binary``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from ..auth import Level
from ..errors import InvalidRequest, NotFound, TableNotFound, describe_choices
from ..segmentation import SegmentationGraph, pcg
from ..segmentation.points import is_node_id
from ..timestamps import parse_timestamp
from .deps import current_user, json_body, json_object

#: caveclient gates some calls on [2.18, 3) or [3.0.5, 4).
SEGMENTATION_VERSION = "2.99.0"

router = APIRouter(prefix="/segmentation")
B = "/api/v1/table/{table_id}"


@router.get("/api/versions")
def api_versions() -> list[int]:
    return [0, 1]


@router.get("/api/version")
def version() -> str:
    return SEGMENTATION_VERSION


# -- request parsing ---------------------------------------------------------------------------
def graph(table_id: str, request: Request) -> SegmentationGraph:
    """The graph of a datastack's segmentation table; 404 naming the known ones otherwise.
    The known table ids are cached on the app and re-read on a miss. Reading it needs a
    datastack on it that the user may read."""
    cave = request.app.state.cave
    known: frozenset[str] = getattr(request.app.state, "segmentation_tables", frozenset())
    if table_id not in known:
        known = frozenset(
            cave.info.datastack(name).segmentation_table for name in cave.info.datastack_names()
        )
        request.app.state.segmentation_tables = known
    if table_id not in known:
        raise TableNotFound(
            f"unknown segmentation table {table_id!r}; known: {describe_choices(known)}"
        )
    cave.access.require_segmentation(current_user(request), table_id, Level.VIEW)
    try:
        return cave.segmentation(table_id)
    except NotFound:
        raise NotFound(
            f"segmentation table {table_id!r} has no graph in this instance's data directory"
        ) from None


def editor(table_id: str, request: Request) -> str:
    """The user an edit is logged under (by id). Editing needs a token whose user may edit a
    datastack built on this segmentation: 401 without one, 403 without the right."""
    user = current_user(request)
    request.app.state.cave.access.require_segmentation(user, table_id, Level.EDIT)
    return user.user_id


def _when(value: str | None, field: str = "timestamp") -> datetime | None:
    return None if value is None else parse_timestamp(value, field=field)


def _id_list(body: dict[str, Any], key: str) -> np.ndarray:
    values = body.get(key)
    if not isinstance(values, list) or not all(is_node_id(v) for v in values):
        raise InvalidRequest(f'the body needs "{key}": a list of uint64 integer ids')
    return np.array(values, dtype=np.uint64)


def _bounds(text: str | None) -> tuple | None:
    """``x0-x1_y0-y1_z0-z1`` (base voxels) -> ((x0, x1), (y0, y1), (z0, z1))."""
    if text is None:
        return None
    try:
        axes = [tuple(float(v) for v in axis.split("-")) for axis in text.split("_")]
    except ValueError:
        axes = []
    if len(axes) != 3 or any(len(a) != 2 or a[0] > a[1] for a in axes):
        raise InvalidRequest(f"bounds {text!r} must read x0-x1_y0-y1_z0-z1 with x0 <= x1 …")
    return tuple(axes)


def _operation_ids(text: str) -> list[int]:
    """``[1, 2]`` (what caveclient sends) or ``1,2``."""
    try:
        ids = (json.loads(text) if text.strip().startswith("[")
               else [int(v) for v in text.split(",")])
    except ValueError:
        ids = None
    if not isinstance(ids, list) or not all(is_node_id(v) for v in ids):
        raise InvalidRequest(f"operation_ids {text!r} must be a list of integers")
    return ids


def _target_operation(body: dict[str, Any]) -> int:
    op = body.get("operation_id")
    if not isinstance(op, int) or isinstance(op, bool) or op < 1:
        raise InvalidRequest('the body needs "operation_id": a positive integer')
    return op


def _user_names(request: Request) -> Callable[[list[str]], dict[str, str]]:
    return request.app.state.cave.auth.names


def _json(data: Any) -> Response:
    # Direct json.dumps: FastAPI's encoder walks every element of large id lists.
    return Response(json.dumps(data, separators=(",", ":")), media_type="application/json")


# -- info and hierarchy -------------------------------------------------------------------------
@router.get("/table/{table_id}/info")
def info(g: SegmentationGraph = Depends(graph)) -> Response:
    return _json(pcg.dataset_info(g))


@router.get(B + "/oldest_timestamp")
def oldest_timestamp(delimiter: str = " ", g: SegmentationGraph = Depends(graph)) -> Response:
    return _json({"iso": g.oldest_timestamp().isoformat(delimiter[:1] or " ")})


@router.get(B + "/node/{node_id}/root")
def root(node_id: int, timestamp: str | None = None, stop_layer: int | None = None,
         g: SegmentationGraph = Depends(graph)) -> Response:
    return _json({"root_id": g.get_root(node_id, _when(timestamp), stop_layer)})


@router.post(B + "/roots_binary")
async def roots_binary(request: Request, timestamp: str | None = None,
                       stop_layer: int | None = None,
                       g: SegmentationGraph = Depends(graph)) -> Response:
    raw = await request.body()
    if len(raw) % 8:
        raise InvalidRequest(f"the body must be little-endian uint64 ids; got {len(raw)} bytes")
    ids = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
    roots = await run_in_threadpool(g.get_roots, ids, _when(timestamp), stop_layer)
    return Response(roots.astype("<u8").tobytes(), media_type="application/octet-stream")


@router.post(B + "/roots")
async def roots(request: Request, timestamp: str | None = None, stop_layer: int | None = None,
                g: SegmentationGraph = Depends(graph)) -> Response:
    ids = _id_list(await json_object(request), "node_ids")
    found = await run_in_threadpool(g.get_roots, ids, _when(timestamp), stop_layer)
    return _json({"root_ids": found.tolist()})


@router.get(B + "/node/{node_id}/children")
def children(node_id: int, g: SegmentationGraph = Depends(graph)) -> Response:
    return _json({"children_ids": g.get_children(node_id).tolist()})


@router.get(B + "/node/{node_id}/leaves")
def leaves(node_id: int, stop_layer: int = 1, bounds: str | None = None,
           g: SegmentationGraph = Depends(graph)) -> Response:
    return _json({"leaf_ids": g.get_leaves(node_id, stop_layer, _bounds(bounds)).tolist()})


@router.get(B + "/node/{node_id}/subgraph")
def subgraph(node_id: int, bounds: str | None = None,
             g: SegmentationGraph = Depends(graph)) -> Response:
    """The node's internal atomic edges now; opencave keeps no contact areas (all 0)."""
    edges, affinities = g.subgraph(node_id, _bounds(bounds))
    return _json({"nodes": edges.tolist(), "affinities": affinities.tolist(),
                  "areas": [0] * len(edges)})


@router.post(B + "/node/leaves_many")
@router.post(B + "/leaves_many")
async def leaves_many(request: Request, stop_layer: int = 1, bounds: str | None = None,
                      g: SegmentationGraph = Depends(graph)) -> Response:
    ids = _id_list(await json_object(request), "node_ids")
    box = _bounds(bounds)

    def run() -> dict[str, list[int]]:
        return {str(n): g.get_leaves(n, stop_layer, box).tolist() for n in ids.tolist()}

    return _json(await run_in_threadpool(run))


@router.get(B + "/valid_nodes")
async def valid_nodes(request: Request, end_timestamp: str | None = None,
                      start_timestamp: str | None = None,
                      g: SegmentationGraph = Depends(graph)) -> Response:
    """Nodes are never deleted: valid = created at or before ``end_timestamp``
    (``start_timestamp`` is accepted and has nothing left to restrict)."""
    _when(start_timestamp, "start_timestamp")
    ids = _id_list(await json_object(request), "node_ids")
    valid = await run_in_threadpool(g.valid_nodes, ids, _when(end_timestamp, "end_timestamp"))
    return _json({"valid_roots": valid.tolist()})


# -- root status and history --------------------------------------------------------------------
@router.post(B + "/is_latest_roots")
async def is_latest_roots(request: Request, timestamp: str | None = None,
                          g: SegmentationGraph = Depends(graph)) -> Response:
    ids = _id_list(await json_object(request), "node_ids")
    latest = await run_in_threadpool(g.is_latest_roots, ids, _when(timestamp))
    return _json({"is_latest": latest.tolist()})


@router.post(B + "/root_timestamps")
async def root_timestamps(request: Request, latest: bool = False, timestamp: str | None = None,
                          g: SegmentationGraph = Depends(graph)) -> Response:
    ids = _id_list(await json_object(request), "node_ids")
    times = await run_in_threadpool(g.root_timestamps, ids, latest, _when(timestamp))
    return _json({"timestamp": [t.timestamp() for t in times]})


@router.get(B + "/past_id_mapping")
async def past_id_mapping(request: Request, timestamp_past: str | None = None,
                          timestamp_future: str | None = None,
                          g: SegmentationGraph = Depends(graph)) -> Response:
    ids = _id_list(await json_object(request), "root_ids")
    past = _when(timestamp_past, "timestamp_past")
    future = _when(timestamp_future, "timestamp_future")
    return _json(await run_in_threadpool(pcg.past_id_mapping, g, ids, past, future))


@router.post(B + "/lineage_graph_multiple")
async def lineage_graph_multiple(request: Request, timestamp_past: str | None = None,
                                 timestamp_future: str | None = None,
                                 timestamp: str | None = None,
                                 g: SegmentationGraph = Depends(graph)) -> Response:
    """caveclient sends ``timestamp=…&name=timestamp_future`` when it means
    ``timestamp_future``; ``timestamp`` is read as that."""
    ids = _id_list(await json_object(request), "root_ids")
    future_text = timestamp_future if timestamp_future is not None else timestamp
    past = _when(timestamp_past, "timestamp_past")
    future = _when(future_text, "timestamp_future")
    lineage = await run_in_threadpool(g.lineage_graph, ids, past, future)
    return _json(pcg.node_link(lineage))


@router.get(B + "/root/{root_id}/lineage_graph")
def lineage_graph(root_id: int, timestamp_past: str | None = None,
                  timestamp_future: str | None = None,
                  g: SegmentationGraph = Depends(graph)) -> Response:
    past = _when(timestamp_past, "timestamp_past")
    future = _when(timestamp_future, "timestamp_future")
    return _json(pcg.node_link(g.lineage_graph([root_id], past, future)))


@router.get(B + "/delta_roots")
def delta_roots(timestamp_past: str | None = None, timestamp_future: str | None = None,
                g: SegmentationGraph = Depends(graph)) -> Response:
    old, new = g.delta_roots(_when(timestamp_past, "timestamp_past"),
                             _when(timestamp_future, "timestamp_future"))
    return _json({"old_roots": old.tolist(), "new_roots": new.tolist()})


@router.get(B + "/root/{root_id}/change_log")
def change_log(root_id: int, filtered: bool = False,
               g: SegmentationGraph = Depends(graph)) -> Response:
    return _json(g.change_log(root_id, filtered=filtered))


@router.get(B + "/root/{root_id}/tabular_change_log")
def tabular_change_log(root_id: int, request: Request, filtered: bool = True,
                       g: SegmentationGraph = Depends(graph)) -> Response:
    logs = pcg.tabular_change_logs(g, np.array([root_id], dtype=np.uint64), filtered,
                                   _user_names(request))
    return Response(logs[str(root_id)], media_type="application/json")


@router.get(B + "/tabular_change_log_many")
async def tabular_change_log_many(request: Request, filtered: bool = True,
                                  g: SegmentationGraph = Depends(graph)) -> Response:
    ids = _id_list(await json_object(request), "root_ids")
    logs = await run_in_threadpool(pcg.tabular_change_logs, g, ids, filtered,
                                   _user_names(request))
    return _json(logs)


@router.get(B + "/operation_details")
def operation_details(operation_ids: str = "[]",
                      g: SegmentationGraph = Depends(graph)) -> Response:
    return _json(pcg.operation_details(g, _operation_ids(operation_ids)))


# -- edits ----------------------------------------------------------------------------------------
@router.post(B + "/merge")
async def merge(request: Request, g: SegmentationGraph = Depends(graph),
                user: str = Depends(editor)) -> Response:
    body = await json_body(request)
    op = await run_in_threadpool(pcg.merge_at_points, g, body, user)
    return _json(pcg.edit_result(op))


@router.post(B + "/split")
async def split(request: Request, g: SegmentationGraph = Depends(graph),
                user: str = Depends(editor)) -> Response:
    body = await json_body(request)
    op = await run_in_threadpool(pcg.split_at_points, g, body, user)
    return _json(pcg.edit_result(op))


@router.post(B + "/undo")
async def undo(request: Request, g: SegmentationGraph = Depends(graph),
               user: str = Depends(editor)) -> Response:
    target = _target_operation(await json_object(request))
    op = await run_in_threadpool(lambda: g.undo(target, user_id=user))
    return _json(pcg.edit_result(op))


@router.post(B + "/redo")
async def redo(request: Request, g: SegmentationGraph = Depends(graph),
               user: str = Depends(editor)) -> Response:
    target = _target_operation(await json_object(request))
    op = await run_in_threadpool(lambda: g.redo(target, user_id=user))
    return _json(pcg.edit_result(op))
