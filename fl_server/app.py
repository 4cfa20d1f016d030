"""The fl_server ASGI app: ``create_app(settings)``; ``app`` is built from ``FLSERVER_*`` on use.

``uvicorn fl_server.app:app --port 8800`` (or ``uvicorn --factory fl_server.app:create_app``)
reads the settings when uvicorn looks the app up, not at import; keyauth is contacted and
the state directory opened only at startup (lifespan), so importing this module does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from fl_server.domain import ServerStatusView, StatusView
from fl_server.errors import ServerError, StartupError
from fl_server.keyauth_client import KeyauthClient, KeyauthMaterialSource
from fl_server.material import MaterialSource
from fl_server.routes import router
from fl_server.service import ServerService
from fl_server.settings import ServerSettings
from fl_server.telemetry import make_registry
from fl_server.ui import router as ui_router
from hefl_http.problems import PROBLEM_MEDIA_TYPE, add_problem_handlers, problem_response
from hefl_http.serving import HEFL_VERSION, configure_logging, lazy_app, settings_reasons

__all__ = ["PROBLEM_MEDIA_TYPE", "create_app", "problem_response", "settings_from_env"]

logger = logging.getLogger("fl_server")


async def _every(interval: float, action: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            action()
        except Exception:
            logger.exception("periodic task failed")


def create_app(
    settings: ServerSettings | None = None,
    *,
    keyauth_material: MaterialSource | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The aggregation server app.

    Parameters
    ----------
    settings
        ``None`` reads ``FLSERVER_*`` from the environment (what ``--factory`` does).
    keyauth_material
        The token key and each key epoch's keyless context (``KeyauthMaterial`` for one
        fixed epoch); ``None`` fetches them from keyauth, and keeps keyauth's revocation
        list current.
    clock
        Seconds since the epoch, for every job (wall-time budgets, slot leases).
    """
    if settings is None:
        settings = settings_from_env()
    config = settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        material = keyauth_material
        keyauth: KeyauthClient | None = None
        if material is None:
            keyauth = KeyauthClient(config)
            material = KeyauthMaterialSource(keyauth)
        try:
            service = await ServerService.start(config, material, clock=clock)
        except ServerError as exc:
            await material.aclose()
            logger.error("fl_server cannot start: %s", exc)
            raise
        app.state.service = service
        tasks = [asyncio.create_task(_every(config.stop_check_interval, service.tick))]
        if keyauth is not None and config.revocation_refresh > 0:
            tasks.append(
                asyncio.create_task(
                    keyauth.poll_revocations(service.set_revoked, config.revocation_refresh)
                )
            )
        _log_jobs(service, config)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await material.aclose()
            app.state.service = None
            await anyio.to_thread.run_sync(service.close)

    app = FastAPI(
        title="hefl fl_server",
        summary="Asynchronous federated learning on a CKKS-encrypted model, one job per study",
        version=HEFL_VERSION,
        lifespan=lifespan,
    )
    app.state.service = None
    app.state.settings = config
    app.include_router(router)
    app.include_router(ui_router)  # the operator page, /ui

    def server_status() -> ServerStatusView | None:
        service: ServerService | None = app.state.service
        return service.status() if service is not None else None

    def job_statuses() -> list[StatusView]:
        service: ServerService | None = app.state.service
        return service.job_statuses() if service is not None else []

    registry = make_registry(server_status, job_statuses)

    @app.get("/metrics", tags=["public"], include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    add_problem_handlers(app, ServerError, logger)
    return app


def _log_jobs(service: ServerService, settings: ServerSettings) -> None:
    status = service.status()
    logger.info(
        "serving %d job%s from %s%s",
        len(status.jobs),
        "" if len(status.jobs) == 1 else "s",
        settings.state_dir,
        f" ({len(status.failed_jobs)} left out: see GET /v1/status)" if status.failed_jobs else "",
    )
    for job in status.jobs:
        target = job.target_updates if job.target_updates is not None else "-"
        logger.info(
            "job %s: %s at version %d (%d of %s updates), key epoch %d (profile %s)",
            job.name,
            job.state.value,
            job.version,
            job.updates_applied,
            target,
            job.key_epoch,
            job.profile,
        )


# Job settings before jobs came from study specs: each is now its spec's [server] or [stop].
_JOB_VARIABLES = frozenset(
    f"FLSERVER_{name}"
    for name in (
        "TARGET_UPDATES",
        "STALENESS",
        "STALENESS_A",
        "STALENESS_B",
        "MIXING",
        "MAX_STALENESS",
        "BUFFER_SIZE",
        "MAX_TRAINING",
    )
)


def settings_from_env() -> ServerSettings:
    """``ServerSettings`` from ``FLSERVER_*``, with a readable error (never echoing values).

    A job setting of older servers is refused rather than silently ignored: its value
    would otherwise seem to apply.
    """
    stale = sorted(_JOB_VARIABLES & set(os.environ))
    if stale:
        raise StartupError(
            f"{', '.join(stale)}: each job takes these from its study spec ([server] and "
            "[stop]) now; remove them from the environment"
        )
    try:
        settings = ServerSettings()
    except ValidationError as exc:
        raise StartupError(f"invalid FLSERVER_* settings: {settings_reasons(exc)}") from None
    configure_logging("fl_server", settings.log_level)
    return settings


# ``uvicorn fl_server.app:app`` looks ``app`` up here: build it then, and only once.
__getattr__ = lazy_app(__name__, create_app)
