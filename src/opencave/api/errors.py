"""One JSON error shape for every failure: ``{"error": kind, "message": text}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import OpenCaveError

log = logging.getLogger("opencave.api")


def error_response(status: int, kind: str, message: str, **details: object) -> JSONResponse:
    return JSONResponse({"error": kind, "message": message, **details}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenCaveError)
    async def _ours(request: Request, exc: OpenCaveError) -> JSONResponse:
        retry = exc.retry_after
        headers = {"Retry-After": str(retry)} if retry is not None else None
        return JSONResponse(exc.to_json(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return error_response(400, "invalid_request", f"invalid request: {problems}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found" if exc.status_code == 404 else "http_error"
        message = (f"no route {request.method} {request.url.path}" if exc.status_code == 404
                   else str(exc.detail))
        return error_response(exc.status_code, kind, message)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error",
                              f"internal error ({type(exc).__name__}); this is a bug")
