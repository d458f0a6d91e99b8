"""One error hierarchy for the whole engine.

Every error a user can cause is an :class:`OpenCaveError`: it carries an HTTP status, a short
machine-readable ``error`` kind and a message naming what was wrong and what is accepted. The
API turns each into the JSON body ``{"error": ..., "message": ...}``; anything else that
escapes is a bug (a 500).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class OpenCaveError(Exception):
    """Base class: an error the caller caused, with the HTTP status that reports it."""

    status: int = 400
    kind: str = "bad_request"
    #: Seconds after which a retry may succeed (sent as ``Retry-After``); None: not so.
    retry_after: int | None = None

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}

    def to_json(self) -> dict[str, Any]:
        return {"error": self.kind, "message": self.message, **self.details}


class InvalidRequest(OpenCaveError, ValueError):
    """The request is malformed or names something the schema does not accept."""

    status = 400
    kind = "invalid_request"


class NotFound(OpenCaveError, LookupError):
    status = 404
    kind = "not_found"


class DatastackNotFound(NotFound):
    kind = "datastack_not_found"


class AlignedVolumeNotFound(NotFound):
    kind = "aligned_volume_not_found"


class VersionNotFound(NotFound):
    kind = "version_not_found"


class TableNotFound(NotFound):
    kind = "table_not_found"


class ViewNotFound(NotFound):
    kind = "view_not_found"


class SchemaNotFound(NotFound):
    kind = "schema_not_found"


class NodeNotFound(NotFound):
    kind = "node_not_found"


class Unauthorized(OpenCaveError, PermissionError):
    status = 401
    kind = "unauthorized"


class Forbidden(OpenCaveError, PermissionError):
    status = 403
    kind = "forbidden"


class Conflict(OpenCaveError):
    status = 409
    kind = "conflict"


class Busy(OpenCaveError):
    """The server is at capacity; the client should retry after ``retry_after`` seconds
    (caveclient retries 503 by itself)."""

    status = 503
    kind = "busy"
    retry_after = 2


def describe_choices(choices: Iterable[Any], limit: int = 20) -> str:
    """A short human list of accepted values for error messages."""
    items = sorted(str(c) for c in choices)
    shown = ", ".join(repr(c) for c in items[:limit])
    if len(items) > limit:
        shown += f", … ({len(items) - limit} more)"
    return shown or "(none)"
