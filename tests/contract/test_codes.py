"""Problem codes: every code either service can answer is registered and known to the client."""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

import crypto
from fl_client import errors as client_errors
from fl_server import errors as server_errors
from hefl_http.problems import HTTP_EXCEPTION_CODES
from hefl_wire import PROBLEMS, ProblemCodeError, ProblemError, TokenError
from keyauth import errors as keyauth_errors

ROOT = Path(__file__).parents[2]
# (code, status, where it is answered)
Answer = tuple[str, int, str]
E = TypeVar("E", bound=Exception)


def _tree(base: type[E]) -> Iterator[type[E]]:
    yield base
    for sub in base.__subclasses__():
        yield from _tree(sub)


def _error_trees() -> Iterator[Answer]:
    """Every class either service answers with its code and status."""
    for base in (keyauth_errors.KeyauthError, TokenError, server_errors.ServerError):
        for cls in _tree(base):
            if cls.__module__.startswith(("keyauth", "fl_server", "hefl_wire")):
                yield cls.code, cls.http_status, cls.__qualname__


def _called_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else ""


def _literal(node: ast.expr | None) -> str | int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int):
        return node.value
    return None


def _calls(package: str) -> Iterator[tuple[ast.Call, str]]:
    """Every call in ``package``'s modules, with where it is (``path:line``)."""
    module = importlib.import_module(package)
    for path in sorted(Path(str(module.__file__)).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                yield node, f"{path.relative_to(ROOT)}:{node.lineno}"


def _literal_codes(package: str) -> Iterator[Answer]:
    """The codes a service writes as literals: ``problem_response(status, "code", ...)``.

    Everywhere else a service answers with an error class, whose code is its own."""
    for node, where in _calls(package):
        if _called_name(node.func) == "problem_response" and len(node.args) >= 2:
            status, code = _literal(node.args[0]), _literal(node.args[1])
            if isinstance(code, str) and isinstance(status, int):
                yield code, status, where


def _answers() -> list[Answer]:
    found = list(_error_trees())
    for package in ("hefl_http", "keyauth", "fl_server"):
        found += _literal_codes(package)
    found += [
        (code, status, "HTTP_EXCEPTION_CODES") for status, code in HTTP_EXCEPTION_CODES.items()
    ]
    return found


ANSWERS = _answers()


@pytest.mark.parametrize(("code", "status", "where"), ANSWERS)
def test_every_code_a_service_answers_is_registered_with_its_status(
    code: str, status: int, where: str
) -> None:
    assert code in PROBLEMS, f"{where}: {code!r} is not in hefl_wire.PROBLEMS"
    assert status in PROBLEMS[code].statuses, f"{where}: {code!r} answered with {status}"


def test_the_registry_holds_only_codes_a_service_answers() -> None:
    answered = {code for code, _, _ in ANSWERS}

    assert sorted(set(PROBLEMS) - answered) == []


def test_the_walk_finds_the_literal_codes_and_the_edge_codes() -> None:
    # The AST walk must see what it is meant to: a walk finding nothing passes everything.
    wheres = {code: where for code, _, where in ANSWERS}

    assert wheres["body_malformed"].startswith("keyauth/app.py")
    assert wheres["request_invalid"].startswith("hefl_http/problems.py")
    assert wheres["http_400"] == "HTTP_EXCEPTION_CODES"


def _client_class_for(status: int) -> type[client_errors.ServiceError]:
    if status in (401, 403):
        return client_errors.AuthError
    if status == 404:
        return client_errors.NotFoundError
    if status == 409:
        return client_errors.ConflictError
    if status == 429:
        return client_errors.RateLimitedError
    return client_errors.ServerError if status >= 500 else client_errors.InvalidRequestError


@pytest.mark.parametrize(
    ("code", "status"),
    [(code, status) for code, problem in PROBLEMS.items() for status in sorted(problem.statuses)],
)
def test_every_registered_code_is_known_to_the_client(code: str, status: int) -> None:
    error = client_errors.error_from_problem(status, {"code": code, "detail": "d"})

    assert type(error) is not client_errors.ServiceError
    assert isinstance(error, _client_class_for(status)), f"{code} ({status}): {type(error)}"
    assert (error.code, error.status) == (code, status)


def test_the_client_maps_a_code_by_the_registry_not_by_the_status() -> None:
    error = client_errors.error_from_problem(400, {"code": "storage_failed"})

    assert type(error) is client_errors.ServerError


# (code, status or None, the error class called, where)
ClientLiteral = tuple[str, int | None, str, str]


def _client_literal_codes() -> list[ClientLiteral]:
    """The codes fl_client writes itself, as a service would have answered: each call that
    passes ``code="..."``, with its ``status=`` if that is a literal too."""
    found = []
    for node, where in _calls("fl_client"):
        keywords = {k.arg: k.value for k in node.keywords}
        code = _literal(keywords.get("code"))
        if isinstance(code, str):
            status = _literal(keywords.get("status"))
            found.append(
                (code, status if isinstance(status, int) else None, _called_name(node.func), where)
            )
    return found


CLIENT_LITERALS = _client_literal_codes()


@pytest.mark.parametrize(("code", "status", "cls", "where"), CLIENT_LITERALS)
def test_every_code_the_client_writes_is_registered_and_has_its_class(
    code: str, status: int | None, cls: str, where: str
) -> None:
    # The error the client raises itself is the one the service's answer would become.
    assert code in PROBLEMS, f"{where}: {code!r} is not in hefl_wire.PROBLEMS"
    statuses = PROBLEMS[code].statuses if status is None else {status}
    assert status is None or status in PROBLEMS[code].statuses, f"{where}: {code!r} as {status}"
    for answered in statuses:
        error = client_errors.error_from_problem(answered, {"code": code})
        assert type(error).__name__ == cls, f"{where}: {code!r} is a {type(error).__name__}"


def test_the_walk_finds_the_codes_the_client_writes() -> None:
    wheres = {code: where for code, _, _, where in CLIENT_LITERALS}

    assert wheres["layout_mismatch"].startswith("fl_client/rounds/job.py")
    assert wheres["job_paused"].startswith("fl_client/rounds/loop.py")


@pytest.mark.parametrize("cls", list(_tree(crypto.CryptoError)))
def test_every_crypto_error_has_its_class_at_fl_servers_edge(cls: type[crypto.CryptoError]) -> None:
    translated = server_errors.InvalidInputError.from_crypto(cls("why"))

    assert translated.code == cls.code
    assert translated.code in PROBLEMS
    assert str(translated) == "why"


@pytest.mark.parametrize("cls", list(_tree(TokenError)))
def test_every_token_error_has_its_class_at_fl_servers_edge(cls: type[TokenError]) -> None:
    translated = server_errors.AuthError.from_token(cls("why"))

    assert (translated.code, translated.http_status) == (cls.code, cls.http_status)
    assert translated.title == "Not authenticated"
    assert str(translated) == "why"


def test_an_unknown_code_is_refused_when_the_class_is_defined() -> None:
    with pytest.raises(ProblemCodeError, match="'no_such_code' is not in"):

        class NoSuchError(ProblemError):
            code = "no_such_code"
            http_status = 400


@pytest.mark.parametrize("base", [ProblemError, keyauth_errors.KeyauthError, TokenError])
def test_a_wrong_status_is_refused_when_the_class_is_defined(base: type[ProblemError]) -> None:
    with pytest.raises(ProblemCodeError, match="'too_stale' is answered with 409, not 400"):

        class WrongStatusError(base):  # type: ignore[valid-type,misc]
            code = "too_stale"
            http_status = 400


def test_an_inherited_code_is_checked_against_a_new_status() -> None:
    with pytest.raises(ProblemCodeError, match="'client_not_found' is answered with 404"):

        class GoneError(keyauth_errors.ClientNotFoundError):
            http_status = 410


@pytest.mark.parametrize("base", [server_errors.ServerError, keyauth_errors.KeyauthError])
def test_a_raise_site_cannot_answer_another_code_than_its_class(base: type[ProblemError]) -> None:
    # The code comes from the class, so a raise site names a class, never a string.
    with pytest.raises(TypeError):
        base("x", code="no_layout")  # type: ignore[call-arg]


def _protocol_table() -> dict[str, tuple[frozenset[int], str]]:
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = text.split("## Problem codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| ([0-9, ]+) \| (.+) \|$", section, re.MULTILINE)
    table = {
        code: (frozenset(int(s) for s in statuses.split(", ")), m) for code, statuses, m in rows
    }
    assert len(table) == len(rows), "a code is listed twice"
    return table


def test_protocol_md_lists_the_registry() -> None:
    registry = {code: (problem.statuses, problem.meaning) for code, problem in PROBLEMS.items()}

    assert _protocol_table() == registry
