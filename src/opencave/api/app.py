"""The HTTP application: CAVE-compatible routes over one opencave instance."""

from __future__ import annotations

from fastapi import FastAPI

from .. import __version__
from ..instance import OpenCave
from . import annotation, info, materialize, schema, segmentation
from .errors import install_error_handlers


def create_app(cave: OpenCave) -> FastAPI:
    """Build the app. ``redirect_slashes`` is off: caveclient treats any redirect as an
    authentication failure, so every route answers exactly where it is asked."""
    app = FastAPI(title="opencave", version=__version__, redirect_slashes=False)
    app.state.cave = cave
    app.state.materialize = cave.materialization()
    app.state.annotations = cave.annotations()
    install_error_handlers(app)
    app.include_router(info.router)
    app.include_router(schema.router)
    app.include_router(materialize.router)
    app.include_router(segmentation.router)
    app.include_router(annotation.router)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
