"""The container image copies every package the wheel installs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_dockerfile_copies_every_installed_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    installed = {p.rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"]}
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE))

    assert installed, "no package list in pyproject.toml"
    assert copied == installed


def test_the_operator_page_ships_as_package_data() -> None:
    # Prepare: the files the page serves, and the globs that put them in the wheel
    from fnmatch import fnmatch

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["fl_server.ui"]
    static = ROOT / "fl_server" / "ui" / "static"
    files = [p.relative_to(static.parent).as_posix() for p in static.rglob("*") if p.is_file()]

    # Assert: every file is packaged, the page's own and uPlot with its licence
    assert {"static/index.html", "static/app.js", "static/vendor/uPlot.LICENSE"} <= set(files)
    assert [f for f in files if not any(fnmatch(f, g) for g in globs)] == []
