import ast
import importlib
from pathlib import Path

import pytest

import fl_server


def test_every_public_name_exists_once() -> None:
    for name in fl_server.__all__:
        assert hasattr(fl_server, name), name
    assert len(set(fl_server.__all__)) == len(fl_server.__all__)
    assert sorted(fl_server.__all__) == fl_server.__all__


@pytest.mark.parametrize(
    "module",
    [
        "service",
        "job_service",
        "registry",
        "jobspec",
        "control",
        "stoprules",
        "job",
        "recovery",
        "updates",
        "admission",
        "publishing",
        "worker",
        "auth",
        "reports",
        "downloads",
        "status",
        "traffic",
        "domain",
        "material",
        "state",
        "receipts",
        "snapshot",
        "tally",
        "store",
        "journal",
        "staleness",
        "schemas",
    ],
)
def test_transport_free_modules_import_no_web_framework(module: str) -> None:
    path = Path(importlib.import_module(f"fl_server.{module}").__file__ or "")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"fastapi", "starlette", "httpx", "uvicorn", "tenseal"}
