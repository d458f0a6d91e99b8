"""Info service routes: aligned volumes and datastacks."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request

from ..auth import User
from ..instance import OpenCave
from .deps import cave, current_user, server_url

INFO_VERSION = "4.3.1"

router = APIRouter(prefix="/info")


@router.get("/version")
def version() -> str:
    return INFO_VERSION


@router.get("/api/v2/datastacks")
def datastacks(oc: OpenCave = Depends(cave)) -> list[str]:
    return oc.info.datastack_names()


@router.get("/api/v2/datastack/full/{datastack}")
def datastack_info(datastack: str, request: Request, oc: OpenCave = Depends(cave),
                   user: User = Depends(current_user)) -> dict[str, Any]:
    return oc.access.datastack(user, datastack).info(server_url(request))


@router.get("/api/v2/datastack/{datastack}/image_sources")
def image_sources(datastack: str, oc: OpenCave = Depends(cave)) -> list[dict[str, Any]]:
    volume = oc.info.datastack(datastack).aligned_volume
    return [{"name": volume.name, "image_source": volume.image_source}]


@router.get("/api/v2/aligned_volume")
def aligned_volumes(oc: OpenCave = Depends(cave)) -> list[str]:
    return oc.info.aligned_volume_names()


@router.get("/api/v2/aligned_volume/{name}")
def aligned_volume(name: str, oc: OpenCave = Depends(cave)) -> dict[str, Any]:
    return asdict(oc.info.aligned_volume(name))


@router.get("/api/v2/aligned_volume/{name}/datastacks")
def aligned_volume_datastacks(name: str, oc: OpenCave = Depends(cave)) -> list[str]:
    oc.info.aligned_volume(name)
    return [d.name for d in oc.info.datastacks_of_volume(name)]
