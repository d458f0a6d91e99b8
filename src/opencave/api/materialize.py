"""Materialization routes (API v2 and v3): versions, table metadata and queries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from ..auth import Level, User
from ..errors import InvalidRequest
from ..instance import OpenCave
from ..materialize.engine import ResultStream
from ..materialize.service import MaterializationService, QueryResult
from ..timestamps import now, parse_timestamp
from .arrow import arrow_response, stream_response, write_options
from .deps import cave, current_user, json_object

MATERIALIZE_VERSION = "5.26.4"

router = APIRouter(prefix="/materialize")


def service(request: Request) -> MaterializationService:
    return request.app.state.materialize


@router.get("/api/versions")
def api_versions() -> list[int]:
    return [2, 3]


@router.get("/version")
def version() -> str:
    return MATERIALIZE_VERSION


def _route(method: str, path: str, *, apis: tuple[str, ...] = ("v2", "v3")):  # type: ignore[no-untyped-def]
    def register(func):  # type: ignore[no-untyped-def]
        for api in apis:
            router.add_api_route(f"/api/{api}{path}", func, methods=[method])
        return func
    return register


@_route("GET", "/datastack/{datastack}/versions")
def versions(datastack: str, expired: bool = False,
             svc: MaterializationService = Depends(service),
             user: User = Depends(current_user)) -> list[int]:
    return svc.version_numbers(datastack, expired=expired, user=user)


@_route("GET", "/datastack/{datastack}/version/{version}")
def version_metadata(datastack: str, version: int,
                     svc: MaterializationService = Depends(service),
             user: User = Depends(current_user)) -> dict[str, Any]:
    return svc.version(datastack, version, user=user).to_json()


@_route("GET", "/datastack/{datastack}/metadata")
def versions_metadata(datastack: str, expired: bool = False,
                      svc: MaterializationService = Depends(service),
             user: User = Depends(current_user)) -> list[dict[str, Any]]:
    return svc.versions_metadata(datastack, expired=expired, user=user)


@_route("GET", "/datastack/{datastack}/version/{version}/tables")
def tables(datastack: str, version: int,
           svc: MaterializationService = Depends(service),
             user: User = Depends(current_user)) -> list[str]:
    return svc.table_names(datastack, version, user=user)


@_route("GET", "/datastack/{datastack}/version/{version}/tables/metadata")
def tables_metadata(datastack: str, version: int,
                    svc: MaterializationService = Depends(service),
             user: User = Depends(current_user)) -> list[dict[str, Any]]:
    return svc.tables_metadata(datastack, version, user=user)


@_route("GET", "/datastack/{datastack}/version/{version}/table/{table}/metadata")
def table_metadata(datastack: str, version: int, table: str,
                   svc: MaterializationService = Depends(service),
             user: User = Depends(current_user)) -> dict[str, Any]:
    return svc.table_metadata(datastack, version, table, user=user)


@_route("GET", "/datastack/{datastack}/version/{version}/table/{table}/count")
def table_count(datastack: str, version: int, table: str,
                svc: MaterializationService = Depends(service),
             user: User = Depends(current_user)) -> int:
    return svc.row_count(datastack, version, table, user=user)


@_route("GET", "/datastack/{datastack}/table/{table}/unique_string_values", apis=("v3",))
def unique_string_values(datastack: str, table: str,
                         svc: MaterializationService = Depends(service),
             user: User = Depends(current_user)) -> dict[str, list[str]]:
    return svc.unique_string_values(datastack, table, user=user)


@_route("GET", "/datastack/{datastack}/version/{version}/views", apis=("v3",))
def views(datastack: str, version: int, svc: MaterializationService = Depends(service),
          user: User = Depends(current_user)) -> dict[str, Any]:
    return svc.views(datastack, version, user=user)


@_route("GET", "/datastack/{datastack}/version/{version}/views/schemas", apis=("v3",))
def view_schemas(datastack: str, version: int, svc: MaterializationService = Depends(service),
                 user: User = Depends(current_user)) -> dict[str, Any]:
    """``{}`` when there are none (the original answered 404, which crashes caveclient)."""
    return svc.view_schemas(datastack, version, user=user)


@_route("GET", "/datastack/{datastack}/version/{version}/views/{view}/metadata", apis=("v3",))
def view_metadata(datastack: str, version: int, view: str,
                  svc: MaterializationService = Depends(service),
                  user: User = Depends(current_user)) -> dict[str, Any]:
    return svc.view_metadata(datastack, version, view, user=user)


@_route("GET", "/datastack/{datastack}/version/{version}/views/{view}/schema", apis=("v3",))
def view_schema(datastack: str, version: int, view: str,
                svc: MaterializationService = Depends(service),
                user: User = Depends(current_user)) -> dict[str, Any]:
    return svc.view_schema(datastack, version, view, user=user)


@_route("POST", "/datastack/{datastack}/version/{version}/views/{view}/query", apis=("v3",))
async def view_query(datastack: str, version: int, view: str, request: Request,
                     random_sample: int | None = None, count: bool = False,
                     return_pyarrow: bool = True,
                     svc: MaterializationService = Depends(service),
                     user: User = Depends(current_user)) -> Response:
    body = await json_object(request)
    result = await run_in_threadpool(svc.query_view, datastack, version, view, body,
                                     random_sample=random_sample, count=count, user=user)
    return _respond(result, return_pyarrow, request)


@_route("POST", "/datastack/{datastack}/version/{version}/table/{table}/query")
async def simple_query(datastack: str, version: int, table: str, request: Request,
                       random_sample: int | None = None, count: bool = False,
                       return_pyarrow: bool = True,
                       svc: MaterializationService = Depends(service),
             user: User = Depends(current_user)) -> Response:
    body = await json_object(request)
    result = await run_in_threadpool(svc.query_table, datastack, version, table, body,
                                     random_sample=random_sample, count=count, user=user)
    return _respond(result, return_pyarrow, request)


@_route("POST", "/datastack/{datastack}/version/{version}/query")
async def join_query(datastack: str, version: int, request: Request,
                     random_sample: int | None = None, count: bool = False,
                     return_pyarrow: bool = True,
                     svc: MaterializationService = Depends(service),
             user: User = Depends(current_user)) -> Response:
    body = await json_object(request)
    result = await run_in_threadpool(svc.join_query, datastack, version, body,
                                     random_sample=random_sample, count=count, user=user)
    return _respond(result, return_pyarrow, request)


@_route("POST", "/datastack/{datastack}/query", apis=("v3",))
async def live_query(datastack: str, request: Request, random_sample: int | None = None,
                     return_pyarrow: bool = True, allow_invalid_root_ids: bool = False,
                     svc: MaterializationService = Depends(service),
                     user: User = Depends(current_user)) -> Response:
    """``live_live_query``: a table (optionally joined) as of any timestamp."""
    body = await json_object(request)
    result = await run_in_threadpool(svc.live_query, datastack, body,
                                     random_sample=random_sample,
                                     allow_invalid_root_ids=allow_invalid_root_ids, user=user)
    return _respond(result, return_pyarrow, request)


@_route("GET", "/datastack/{datastack}/table/{table}/diff", apis=("v3",))
def table_diff(datastack: str, table: str, request: Request,
               from_version: int | None = None,
               to_version: int | None = None, from_timestamp: str | None = None,
               to_timestamp: str | None = None, svc: MaterializationService = Depends(service),
               user: User = Depends(current_user)) -> Response:
    """What changed in a table between two versions or timestamps (Arrow): ``id``,
    ``change`` (added / removed / roots_changed) and each root id before and after."""
    before = _instant(from_version, from_timestamp, "from")
    after = _instant(to_version, to_timestamp, "to")
    rows = svc.diff(datastack, table, before, after, user=user)
    return arrow_response(QueryResult(ResultStream.of(rows)), _arrow_options(request))


def _instant(version: int | None, timestamp: str | None, side: str) -> int | datetime:
    if (version is None) == (timestamp is None):
        raise InvalidRequest(f"give exactly one of {side}_version and {side}_timestamp")
    return version if version is not None else parse_timestamp(timestamp,
                                                               field=f"{side}_timestamp")


@_route("POST", "/datastack/{datastack}/versions", apis=("v3",))
async def create_version(datastack: str, request: Request, oc: OpenCave = Depends(cave),
                         user: User = Depends(current_user)) -> dict[str, Any]:
    """Materialize a new version now (or at ``{"timestamp": …}``, optionally numbered
    ``{"version": N}``). Needs the right to edit the datastack."""
    body = await json_object(request)
    oc.access.datastack(user, datastack, Level.EDIT)
    timestamp = parse_timestamp(body["timestamp"]) if body.get("timestamp") else now()
    number = body.get("version")
    if number is not None and (isinstance(number, bool) or not isinstance(number, int)
                               or number < 1):
        raise InvalidRequest("version must be a positive integer")
    report = await run_in_threadpool(oc.new_version, datastack, timestamp, number)
    return {**report.version.to_json(), "rows_rewritten": report.rows_rewritten,
            "bytes_written": report.bytes_written}


def _respond(result: QueryResult, arrow: bool, request: Request) -> Response:
    if arrow:
        return arrow_response(result, _arrow_options(request))
    return stream_response(result, _json_records(result.stream), "application/json")


def _arrow_options(request: Request) -> pa.ipc.IpcWriteOptions:
    host = request.client.host if request.client else None
    return write_options(host, cave(request).settings.arrow_compression)


def _json_records(rows: ResultStream) -> Iterator[bytes]:
    """A JSON array of row objects, written batch by batch (``return_df=False``)."""
    yield b"["
    first = True
    for batch in rows:
        for record in batch.to_pylist():
            yield (b"" if first else b",") + json.dumps(record, default=str).encode()
            first = False
    yield b"]"
