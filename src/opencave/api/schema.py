"""Schema service routes: the annotation schema types and their JSON schemas."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from ..schemas import get_schema_type, json_schema, schema_names

router = APIRouter(prefix="/schema")


@router.get("/versions")
def api_versions() -> list[int]:
    return [1, 2]


@router.get("/type")
@router.get("/api/v2/type")
def types() -> list[str]:
    return schema_names()


@router.get("/type/{name}")
@router.get("/api/v2/type/{name}")
def schema_definition(name: str) -> dict[str, Any]:
    return json_schema(get_schema_type(name))


@router.post("/api/v2/types")
def schema_definitions(schema_names_: str = Query("", alias="schema_names")) -> dict[str, Any]:
    names = [n for n in schema_names_.split(",") if n]
    return {n: json_schema(get_schema_type(n)) for n in names}


@router.get("/api/v2/types_all")
def all_schema_definitions() -> dict[str, Any]:
    return {n: json_schema(get_schema_type(n)) for n in schema_names()}
