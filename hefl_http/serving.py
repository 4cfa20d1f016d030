"""What keyauth and fl_server do alike under uvicorn: version, settings, logging, ``app``."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import ValidationError

__all__ = ["HEFL_VERSION", "configure_logging", "lazy_app", "settings_reasons"]

try:
    HEFL_VERSION = version("hefl")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    HEFL_VERSION = "0.0.0"


def settings_reasons(exc: ValidationError) -> str:
    """Why settings were refused: each field and message, never the value (it may be a secret)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
        for e in exc.errors(include_input=False)
    )


def configure_logging(name: str, level: str) -> None:
    """Set logger ``name``'s level; give it a handler unless someone has.

    uvicorn configures only its own loggers, so a service's records would be lost.
    """
    service_logger = logging.getLogger(name)
    service_logger.setLevel(level)
    if not service_logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        service_logger.addHandler(handler)


def _warn_at_startup_without_deadlines(app: Any, service: str) -> None:
    """Say in the log, at startup, if uvicorn serves ``app`` without hefl's deadlines.

    uvicorn imports its ``--http`` protocol class after the app but before the lifespan
    starts: if ``hefl_http.protocol`` is not loaded by then, nothing cuts off slow clients.
    """
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        if "hefl_http.protocol" not in sys.modules:
            logging.getLogger(service).warning(
                "no request deadlines: a client can hold a connection open by sending "
                "slowly; start uvicorn with --http hefl_http.protocol:DeadlineH11Protocol"
            )
        async with inner(app) as state:
            yield state

    app.router.lifespan_context = lifespan


def lazy_app(module: str, build: Callable[[], Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that builds ``app`` with ``build`` when first looked up.

    ``uvicorn <module>:app`` looks ``app`` up: the settings are read then, not at import,
    and the app is built only once (it is stored in the module).
    """

    def __getattr__(name: str) -> Any:
        if name == "app":
            app = build()
            _warn_at_startup_without_deadlines(app, module.partition(".")[0])
            vars(sys.modules[module])["app"] = app
            return app
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
