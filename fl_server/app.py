"""The fl_server ASGI app: ``create_app(settings)``; ``app`` is built from ``FLSERVER_*`` on use.

``uvicorn fl_server.app:app --port 8800`` (or ``uvicorn --factory fl_server.app:create_app``)
reads the settings when uvicorn looks the app up, not at import; keyauth is contacted and
the state directory opened only at startup (lifespan), so importing this module does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from fl_server.domain import StatusView
from fl_server.errors import ServerError, StartupError
from fl_server.keyauth_client import KeyauthClient
from fl_server.material import KeyauthMaterial
from fl_server.routes import router
from fl_server.service import ServerService
from fl_server.settings import ServerSettings
from fl_server.store import read_job_file
from fl_server.telemetry import make_registry
from hefl_http.problems import PROBLEM_MEDIA_TYPE, add_problem_handlers, problem_response
from hefl_http.serving import HEFL_VERSION, configure_logging, lazy_app, settings_reasons

__all__ = ["PROBLEM_MEDIA_TYPE", "create_app", "problem_response", "settings_from_env"]

logger = logging.getLogger("fl_server")


def create_app(
    settings: ServerSettings | None = None, *, keyauth_material: KeyauthMaterial | None = None
) -> FastAPI:
    """The aggregation server app.

    Parameters
    ----------
    settings
        ``None`` reads ``FLSERVER_*`` from the environment (what ``--factory`` does).
    keyauth_material
        The public context and token key; ``None`` fetches them from keyauth at startup
        (and then keeps keyauth's revocation list current).
    """
    if settings is None:
        settings = settings_from_env()
    config = settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        material = keyauth_material
        keyauth: KeyauthClient | None = None
        poller: asyncio.Task[None] | None = None
        try:
            if material is None:
                keyauth = KeyauthClient(config)
                stored = read_job_file(config.state_dir)
                material = await keyauth.fetch_material(stored.key_epoch if stored else None)
            loaded = material
            service = await anyio.to_thread.run_sync(lambda: ServerService(config, loaded))
        except ServerError as exc:
            if keyauth is not None:
                await keyauth.aclose()
            logger.error("fl_server cannot start: %s", exc)
            raise
        app.state.service = service
        if keyauth is not None and config.revocation_refresh > 0:
            poller = asyncio.create_task(
                keyauth.poll_revocations(service.set_revoked, config.revocation_refresh)
            )
        job = service.job()
        logger.info(
            "serving key epoch %d (profile %s) from %s: job %s at version %d of %d",
            job.key_epoch,
            job.profile,
            config.state_dir,
            job.state.value,
            job.version,
            job.target_updates,
        )
        try:
            yield
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            if keyauth is not None:
                await keyauth.aclose()
            app.state.service = None
            await anyio.to_thread.run_sync(service.close)

    app = FastAPI(
        title="hefl fl_server",
        summary="Asynchronous federated learning on a CKKS-encrypted model",
        version=HEFL_VERSION,
        lifespan=lifespan,
    )
    app.state.service = None
    app.state.settings = config
    app.include_router(router)

    def current_status() -> StatusView | None:
        service: ServerService | None = app.state.service
        return service.status() if service is not None else None

    registry = make_registry(current_status)

    @app.get("/metrics", tags=["public"], include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    add_problem_handlers(app, ServerError, logger)
    return app


def settings_from_env() -> ServerSettings:
    """``ServerSettings`` from ``FLSERVER_*``, with a readable error (never echoing values)."""
    try:
        settings = ServerSettings()
    except ValidationError as exc:
        raise StartupError(f"invalid FLSERVER_* settings: {settings_reasons(exc)}") from None
    configure_logging("fl_server", settings.log_level)
    return settings


# ``uvicorn fl_server.app:app`` looks ``app`` up here: build it then, and only once.
__getattr__ = lazy_app(__name__, create_app)
