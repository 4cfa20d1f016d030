"""Debian's chromium under Playwright: the operator page's tests, and its screenshot for the docs.

Playwright drives the browser the system installed (``scripts/install-browser``), never a
browser build of its own. ``python -m harness.browser URL OUT.png [--token-file F]`` saves a
screenshot of the page at ``URL`` once its job table shows.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["CHROMIUM_FLAGS", "browser_missing", "chromium_path", "open_page"]

# As root, in a machine without network: no sandbox (it needs user namespaces), and none of
# the browser's own background connections.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_path() -> str | None:
    """The chromium to drive: ``HEFL_CHROMIUM``, else Debian's (``chromium`` on PATH)."""
    configured = os.environ.get("HEFL_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_missing() -> str | None:
    """Why the page cannot be driven here, or ``None`` when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if chromium_path() is None:
        return "no chromium installed: run scripts/install-browser (Debian's chromium)"
    return None


@contextmanager
def open_page(width: int = 1400, height: int = 1000) -> Iterator[Page]:
    """A new page in a fresh headless chromium, closed on exit."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError(browser_missing() or "no chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(CHROMIUM_FLAGS)
        )
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            yield context.new_page()
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the page, e.g. http://127.0.0.1:8800/ui")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--token-file", type=Path, help="a viewer token to enter, if asked")
    parser.add_argument("--height", type=int, default=1500)
    args = parser.parse_args()
    with open_page(height=args.height) as page:
        page.goto(args.url)
        if args.token_file is not None:
            page.fill("#token-input", args.token_file.read_text().strip())
            page.click("#login-form button")
        page.wait_for_selector("#jobs tbody tr", timeout=30_000)
        page.wait_for_selector("#chart-version canvas", timeout=30_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(args.out), full_page=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
