"""The operator page: ``GET /ui``, a static page that reads the status and draws it.

The page is three files of this package and a vendored charting library (uPlot, MIT;
``static/vendor/VENDORED.md``), all served from here: no build step, nothing fetched from
the internet. It holds no data of its own; what it shows comes from ``GET /v1/status`` and
``GET /v1/jobs/{job}/status`` in the browser, with the access those routes enforce
(``FLSERVER_STATUS_ACCESS``).
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.responses import RedirectResponse

from fl_server.errors import NotFoundError

__all__ = ["UPLOT_VERSION", "router", "static_files"]

UPLOT_VERSION = "1.6.32"

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# Only this page's own files: a script may come from this server alone, and no other site
# may frame the page (it shows hospital names).
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def static_files() -> dict[str, bytes]:
    """The page's files by their path under ``/ui/static/`` (read once per call)."""
    root = resources.files(__name__) / "static"
    out: dict[str, bytes] = {}
    for entry in root.iterdir():
        if entry.is_file() and entry.name.endswith(tuple(_MEDIA_TYPES)):
            out[entry.name] = entry.read_bytes()
    vendor = root / "vendor"
    for entry in vendor.iterdir():
        if entry.is_file() and entry.name.endswith(tuple(_MEDIA_TYPES)):
            out[f"vendor/{entry.name}"] = entry.read_bytes()
    return out


_FILES = static_files()


def _file(name: str) -> Response:
    body = _FILES.get(name)
    if body is None:
        raise NotFoundError("no such file on the operator page")
    media_type = _MEDIA_TYPES["." + name.rsplit(".", 1)[-1]]
    return Response(body, media_type=media_type, headers=_HEADERS)


@router.get("/ui")
async def page() -> Response:
    return _file("index.html")


@router.get("/ui/")
async def page_slash() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=308)


@router.get("/ui/static/{name:path}")
async def static(name: Annotated[str, Path()]) -> Response:
    return _file(name)
