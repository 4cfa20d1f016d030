"""hefl_wire's surface: the loopback rule, the claims of an access token, the import graph."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import hefl_wire
from hefl_wire import CLAIMS, AccessClaims, claims_from_payload, claims_to_payload
from hefl_wire import is_loopback_host as is_loopback


def test_the_public_surface_is_complete_and_sorted() -> None:
    public = hefl_wire.__all__

    assert [name for name in public if not hasattr(hefl_wire, name)] == []
    assert sorted(public, key=lambda n: (not n.isupper(), n)) == public
    assert len(set(public)) == len(public)


def test_the_contract_imports_no_web_framework_nor_a_role() -> None:
    # Everything it imports is here, the standard library, PyJWT or cryptography.
    imported = set()
    for path in Path(str(hefl_wire.__file__)).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])

    assert imported - set(sys.stdlib_module_names) == {"hefl_wire", "jwt", "cryptography"}


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost", "LOCALHOST", "localhost."],
)
def test_loopback_addresses_and_localhost_are_loopback(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    [
        "app.localhost",  # RFC 6761 says loopback; not every resolver agrees (docs/protocol.md)
        "localhost.example.org",
        "0.0.0.0",
        "::",
        "10.0.0.5",
        "fl.example.org",
        "",
    ],
)
def test_every_other_host_is_exposed(host: str) -> None:
    assert not is_loopback(host)


def test_claims_round_trip_through_a_payload() -> None:
    claims = AccessClaims("c-1", "hospital-a", "client", 2, 1_700_000_300.0, "j")

    payload = claims_to_payload(claims, issued_at=1_700_000_000)

    assert tuple(payload) == CLAIMS
    assert (payload["iss"], payload["aud"], payload["exp"]) == (
        "hefl-keyauth",
        "hefl",
        1_700_000_300,
    )
    assert claims_from_payload(payload) == claims


# Which of hefl's packages each package may import: the three roles share only the
# contract and the pure layers, never each other.
ALLOWED_IMPORTS = {
    "crypto": set(),
    "hefl_wire": set(),
    "hefl_durable": set(),
    "hefl_study": {"crypto"},
    "hefl_http": {"hefl_wire"},
    "keyauth": {"crypto", "hefl_wire", "hefl_http", "hefl_durable"},
    "fl_server": {"crypto", "hefl_wire", "hefl_http", "hefl_durable", "hefl_study"},
    "fl_client": {"crypto", "hefl_wire", "hefl_durable", "hefl_study"},
    # The administrator's CLI talks to both services over HTTP and imports neither.
    "hefl_admin": {"hefl_wire", "hefl_study"},
}


@pytest.mark.parametrize("package", sorted(ALLOWED_IMPORTS))
def test_no_role_imports_another(package: str) -> None:
    root = Path(__file__).resolve().parents[2] / package
    imported = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])

    ours = (imported & set(ALLOWED_IMPORTS)) - {package}
    assert ours <= ALLOWED_IMPORTS[package], f"{package} imports {ours - ALLOWED_IMPORTS[package]}"
