"""``hefl_admin`` as a package: its public surface, and a CLI that loads no service's code."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import hefl_admin


@pytest.mark.parametrize(
    "module",
    [
        "",
        ".cli",
        ".commands",
        ".errors",
        ".keyauth_client",
        ".output",
        ".server_client",
        ".transport",
    ],
)
def test_every_public_name_exists(module: str) -> None:
    imported = importlib.import_module(f"hefl_admin{module}")

    public = imported.__all__

    assert len(set(public)) == len(public)
    assert [name for name in public if not hasattr(imported, name)] == []


def test_the_package_surface_is_sorted() -> None:
    public = hefl_admin.__all__

    assert sorted(public, key=lambda n: (not n.isupper(), n)) == public


def test_python_m_hefl_admin_runs_the_cli_and_loads_no_service() -> None:
    code = (
        "import runpy, sys; sys.argv = ['hefl-admin', '--help']\n"
        "try:\n    runpy.run_module('hefl_admin', run_name='__main__')\n"
        "except SystemExit as exit:\n    assert exit.code == 0\n"
        "services = {'keyauth', 'fl_server', 'fl_client', 'fastapi', 'uvicorn'}\n"
        "print(sorted(services & set(sys.modules)))"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )

    assert "job" in result.stdout
    assert "--server-url" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"
