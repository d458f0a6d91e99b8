"""Request helpers shared by the routers: the instance, the parsed JSON body."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from ..auth import User
from ..errors import InvalidRequest
from ..instance import OpenCave


def cave(request: Request) -> OpenCave:
    return request.app.state.cave


async def json_body(request: Request, *, required: bool = True) -> Any:
    """The JSON body, whatever the method and content type (caveclient sends JSON bodies on
    GETs and without a content type). Integers are parsed exactly (root ids are 64-bit)."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise InvalidRequest("this request needs a JSON body")
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None


async def json_object(request: Request) -> dict[str, Any]:
    body = await json_body(request, required=False)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def server_url(request: Request) -> str:
    """How the client reached us, without a trailing slash (caveclient concatenates)."""
    return str(request.base_url).rstrip("/")


def token_of(request: Request) -> str | None:
    """The bearer token as caveclient sends it: ``Authorization: Bearer …``, or the
    ``middle_auth_token`` cookie or query parameter."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.cookies.get("middle_auth_token") or request.query_params.get(
        "middle_auth_token")


def current_user(request: Request) -> User:
    """Who is asking: anonymous without a token, a 401 for a token that is not valid."""
    return cave(request).auth.authenticate(token_of(request))
