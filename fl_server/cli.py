"""``hefl-server``: run the aggregation server with uvicorn from ``FLSERVER_*`` settings."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from fl_server.app import create_app, settings_from_env
from fl_server.errors import StartupError
from hefl_http.protocol import DeadlineH11Protocol
from hefl_wire import is_loopback_host

__all__ = ["main"]

logger = logging.getLogger("fl_server")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hefl-server",
        description="Serve the hefl aggregation server. Configure it with FLSERVER_* "
        "environment variables (see docs/fl_server.md).",
    )
    parser.parse_args(argv)
    try:
        settings = settings_from_env()
    except StartupError as exc:
        print(f"hefl-server: {exc}", file=sys.stderr)
        return 2
    if not is_loopback_host(settings.host) and settings.tls_certfile is None:
        # Clients share one CKKS key: without TLS one client could read another's upload.
        logger.warning(
            "serving on %s without TLS: terminate TLS at a proxy or set FLSERVER_TLS_CERTFILE "
            "and FLSERVER_TLS_KEYFILE",
            settings.host,
        )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_certfile) if settings.tls_certfile else None,
        ssl_keyfile=str(settings.tls_keyfile) if settings.tls_keyfile else None,
        log_level=settings.log_level.lower(),
        http=DeadlineH11Protocol,  # request deadlines: slow clients cannot hold connections
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
