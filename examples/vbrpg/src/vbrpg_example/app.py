"""The FastAPI application: health, rooms API and (with --chaos) the chaos controls, wired to one database."""

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

from vbrpg_example import rooms
from vbrpg_example.api import build_players_router, build_rooms_router
from vbrpg_example.app_dir import AppDir
from vbrpg_example.chaos import ChaosState, build_chaos_router
from vbrpg_example.database import Database
from vbrpg_example.health import check_health
from vbrpg_example.migration_scripts import MigrationScripts
from vbrpg_example.service_process import PID_HEADER
from vbrpg_example.sqlite_connection import DEFAULT_BUSY_TIMEOUT_SECONDS


@dataclass(frozen=True)
class ServiceSettings:
    database_path: Path
    app_dir: AppDir
    chaos: bool = False
    busy_timeout_seconds: float = DEFAULT_BUSY_TIMEOUT_SECONDS


def create_app(settings: ServiceSettings) -> FastAPI:
    database = Database(settings.database_path, settings.busy_timeout_seconds)
    scripts = MigrationScripts(settings.app_dir)
    chaos = ChaosState()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        database.dispose()

    app = FastAPI(title="VBRPG example", lifespan=lifespan)

    async def before_api_request() -> None:
        if settings.chaos:
            await chaos.delay_api()

    @app.get("/health")
    async def health() -> JSONResponse:
        headers = {PID_HEADER: str(os.getpid())}
        if settings.chaos:
            await chaos.delay_health()
            if chaos.take_health_503():
                body = {"status": "error", "reason": "chaos: injected 503"}
                return JSONResponse(body, status.HTTP_503_SERVICE_UNAVAILABLE, headers)
            if chaos.settings.health_degraded:
                # A service that still answers but knows it is not well: only a body expectation catches it.
                body = {"status": "degraded", "reason": "chaos: injected degraded"}
                return JSONResponse(body, status.HTTP_200_OK, headers)
        report = await run_in_threadpool(check_health, settings.database_path, scripts, settings.busy_timeout_seconds)
        code = status.HTTP_200_OK if report.ok else status.HTTP_503_SERVICE_UNAVAILABLE
        return JSONResponse(report.as_json(), code, headers)

    app.include_router(build_rooms_router(database, before_api_request))
    app.include_router(build_players_router(database, before_api_request))
    if settings.chaos:
        app.include_router(build_chaos_router(chaos))
    _add_error_handlers(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """404 for what does not exist, 409 for what the room's state forbids, 503 when the database fails."""

    def answer(code: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
        async def handler(_: Request, error: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(error)}, code)

        return handler

    app.add_exception_handler(rooms.RoomNotFound, answer(status.HTTP_404_NOT_FOUND))
    app.add_exception_handler(rooms.ParticipantNotFound, answer(status.HTTP_404_NOT_FOUND))
    app.add_exception_handler(rooms.PlayerNotFound, answer(status.HTTP_404_NOT_FOUND))
    app.add_exception_handler(rooms.RoomConflict, answer(status.HTTP_409_CONFLICT))

    async def database_failed(_: Request, error: Exception) -> JSONResponse:
        original = error.orig if isinstance(error, DBAPIError) else error
        body = {"detail": f"database unavailable: {original}"}
        return JSONResponse(body, status.HTTP_503_SERVICE_UNAVAILABLE)

    app.add_exception_handler(DBAPIError, database_failed)
