"""Annotation engine routes (API v2): tables and annotations of an aligned volume."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ..annotation.service import AnnotationService
from ..auth import User
from ..errors import InvalidRequest
from .deps import current_user, json_body, json_object

router = APIRouter(prefix="/annotation/api/v2/aligned_volume/{volume}")


def service(request: Request) -> AnnotationService:
    return request.app.state.annotations


@router.get("/table")
def tables(volume: str, svc: AnnotationService = Depends(service),
           user: User = Depends(current_user)) -> list[str]:
    return svc.list_tables(user, volume)


@router.post("/table")
async def create_table(volume: str, request: Request,
                       svc: AnnotationService = Depends(service),
                       user: User = Depends(current_user)) -> JSONResponse:
    body = await json_object(request)
    table = await run_in_threadpool(svc.create_table, user, volume, body)
    return JSONResponse(table.metadata(), status_code=200)


@router.put("/table")
async def update_metadata(volume: str, request: Request,
                          svc: AnnotationService = Depends(service),
                          user: User = Depends(current_user)) -> dict[str, Any]:
    body = await json_object(request)
    name, changes = body.get("table_name"), body.get("metadata")
    if not isinstance(name, str) or not isinstance(changes, dict):
        raise InvalidRequest('update_metadata needs {"table_name": …, "metadata": {…}}')
    table = await run_in_threadpool(svc.update_metadata, user, volume, name, changes)
    return table.metadata()


@router.get("/table/{table}")
def table_metadata(volume: str, table: str, svc: AnnotationService = Depends(service),
                   user: User = Depends(current_user)) -> dict[str, Any]:
    return svc.table(user, volume, table).metadata()


@router.delete("/table/{table}")
def delete_table(volume: str, table: str, svc: AnnotationService = Depends(service),
                 user: User = Depends(current_user)) -> dict[str, Any]:
    svc.delete_table(user, volume, table)
    return {"table_name": table, "deleted": True}


@router.get("/table/{table}/count")
def count(volume: str, table: str, svc: AnnotationService = Depends(service),
          user: User = Depends(current_user)) -> int:
    return svc.count(user, volume, table)


@router.post("/table/{table}/annotations")
async def post_annotations(volume: str, table: str, request: Request,
                           svc: AnnotationService = Depends(service),
                           user: User = Depends(current_user)) -> list[int]:
    body = await json_object(request)
    return await run_in_threadpool(svc.post, user, volume, table, _annotations(body))


@router.put("/table/{table}/annotations")
async def update_annotations(volume: str, table: str, request: Request,
                             svc: AnnotationService = Depends(service),
                             user: User = Depends(current_user)) -> dict[str, int]:
    body = await json_object(request)
    mapping = await run_in_threadpool(svc.update, user, volume, table, _annotations(body))
    return {str(old): new for old, new in mapping.items()}


@router.delete("/table/{table}/annotations")
async def delete_annotations(volume: str, table: str, request: Request,
                             svc: AnnotationService = Depends(service),
                             user: User = Depends(current_user)) -> list[int]:
    body = await json_body(request)
    ids = body.get("annotation_ids") if isinstance(body, dict) else None
    if ids is None:
        raise InvalidRequest('delete needs {"annotation_ids": [id, …]}')
    return await run_in_threadpool(svc.delete, user, volume, table, ids)


@router.get("/table/{table}/annotations")
def get_annotations(volume: str, table: str, annotation_ids: str = "",
                    svc: AnnotationService = Depends(service),
                    user: User = Depends(current_user)) -> list[dict[str, Any]]:
    ids = [part for part in annotation_ids.split(",") if part.strip()]
    return svc.get(user, volume, table, ids)


def _annotations(body: dict[str, Any]) -> Any:
    if "annotations" not in body:
        raise InvalidRequest('the body must be {"annotations": [{…}, …]}')
    return body["annotations"]
