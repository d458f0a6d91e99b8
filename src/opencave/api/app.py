"""The HTTP application: CAVE-compatible routes over one opencave instance."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..instance import OpenCave
from ..materialize.schedule import DailyMaterialization, parse_daily_time
from . import annotation, info, materialize, schema, segmentation
from .errors import install_error_handlers


def create_app(cave: OpenCave) -> FastAPI:
    """Build the app. ``redirect_slashes`` is off: caveclient treats any redirect as an
    authentication failure, so every route answers exactly where it is asked."""
    app = FastAPI(title="opencave", version=__version__, redirect_slashes=False,
                  lifespan=_lifespan(cave))
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


def _lifespan(cave: OpenCave):  # type: ignore[no-untyped-def]
    """Start the daily materialization when the settings ask for one."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        schedule = None
        if cave.settings.materialize_at:
            schedule = DailyMaterialization(
                parse_daily_time(cave.settings.materialize_at), cave.info.datastack_names,
                lambda name: cave.new_version(name))
            schedule.start()
        yield
        if schedule is not None:
            schedule.stop()

    return lifespan
