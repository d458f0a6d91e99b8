"""ChunkedGraph (PyChunkedGraph-compatible) routes over the segmentation graphs."""

from __future__ import annotations

from fastapi import APIRouter

#: caveclient gates some calls on [2.18, 3) or [3.0.5, 4).
SEGMENTATION_VERSION = "2.99.0"

router = APIRouter(prefix="/segmentation")


@router.get("/api/versions")
def api_versions() -> list[int]:
    return [0, 1]


@router.get("/api/version")
def version() -> str:
    return SEGMENTATION_VERSION
