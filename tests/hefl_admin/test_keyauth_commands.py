"""``hefl-admin``'s keyauth commands against a mock keyauth: the requests, the output, the exits."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fl_server import ui
from hefl_admin import KeyauthAdmin, ServiceHttp, main
from hefl_admin.commands import build_parser
from hefl_wire import ProblemError

Handler = Callable[[httpx.Request], httpx.Response]
ENV = {"KEYAUTH_ADMIN_KEY": "the-admin-key-0123456789"}


def problem(status: int, code: str, detail: str) -> httpx.Response:
    body = {"type": "about:blank", "title": "t", "status": status, "detail": detail, "code": code}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"})


class Recorder:
    """A mock keyauth that records requests and answers with ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.requests: list[httpx.Request] = []
        self._handler = handler

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._handler(request)


def run(
    argv: list[str], handler: Handler, env: dict[str, str] | None = None
) -> tuple[int, str, str, Recorder]:
    recorder = Recorder(handler)
    out, err = io.StringIO(), io.StringIO()
    http = httpx.Client(transport=httpx.MockTransport(recorder), base_url="http://keyauth")
    with http:
        status = main(argv, http=http, env=ENV if env is None else env, out=out, err=err)
    return status, out.getvalue(), err.getvalue(), recorder


ISSUED = {"token": "tok-123", "client_name": "hospital-a", "expires_at": "2030-01-01T00:00:00Z"}


def test_token_create_sends_the_admin_key_and_prints_the_token() -> None:
    status, out, err, recorder = run(
        ["token", "create", "hospital-a", "--expires-in", "900"],
        lambda r: httpx.Response(201, json=ISSUED),
    )

    (request,) = recorder.requests
    assert status == 0, err
    assert (request.method, request.url.path) == ("POST", "/v1/enrollment-tokens")
    assert request.headers["X-Admin-Key"] == ENV["KEYAUTH_ADMIN_KEY"]
    assert json.loads(request.content) == {"client_name": "hospital-a", "expires_in": 900}
    assert "token:       tok-123" in out
    assert "expires_at:  2030-01-01T00:00:00Z" in out


def test_token_create_quiet_prints_only_the_token() -> None:
    status, out, _, recorder = run(
        ["token", "create", "hospital-a", "-q"], lambda r: httpx.Response(201, json=ISSUED)
    )

    assert status == 0
    assert out == "tok-123\n"
    assert json.loads(recorder.requests[0].content) == {"client_name": "hospital-a"}


def test_token_create_json() -> None:
    status, out, _, _ = run(
        ["token", "create", "hospital-a", "--json"], lambda r: httpx.Response(201, json=ISSUED)
    )

    assert status == 0
    assert json.loads(out) == ISSUED


VIEWER = {"access_token": "eyJ.viewer.sig", "token_type": "bearer", "expires_in": 43_200}


def test_token_viewer_prints_the_token_alone_on_stdout() -> None:
    status, out, err, recorder = run(
        ["token", "viewer"], lambda r: httpx.Response(200, json=VIEWER)
    )

    (request,) = recorder.requests
    assert (status, err) == (0, "")
    assert (request.method, request.url.path) == ("POST", "/v1/viewer/token")
    assert request.headers["X-Admin-Key"] == ENV["KEYAUTH_ADMIN_KEY"]
    assert request.content == b""  # keyauth's lifetime: KEYAUTH_VIEWER_TOKEN_TTL
    assert out == "eyJ.viewer.sig\n"  # nothing else: `> viewer.token` keeps just the token


def test_token_viewer_expires_in_and_json() -> None:
    status, out, _, recorder = run(
        ["token", "viewer", "--expires-in", "600", "--json"],
        lambda r: httpx.Response(200, json={**VIEWER, "expires_in": 600}),
    )

    assert status == 0
    assert json.loads(recorder.requests[0].content) == {"expires_in": 600}
    assert json.loads(out) == {**VIEWER, "expires_in": 600}


def test_token_viewer_refused_prints_nothing_on_stdout() -> None:
    status, out, err, _ = run(
        ["token", "viewer", "--expires-in", "999999"],
        lambda r: problem(422, "expires_in_out_of_range", "expires_in must be between 1 and 43200"),
    )

    assert (status, out) == (1, "")
    assert err.startswith("hefl-admin: expires_in_out_of_range: ")


def test_token_viewer_without_an_access_token_is_malformed() -> None:
    status, out, err, _ = run(["token", "viewer"], lambda r: httpx.Response(200, json={}))

    assert (status, out) == (1, "")
    assert "response_malformed" in err


def test_the_operator_pages_login_text_names_a_command_that_exists() -> None:
    page = (Path(ui.__file__).parent / "static" / "index.html").read_text()
    command = re.search(r"<code>hefl-admin ([a-z ]+)</code>", page)

    assert command is not None
    args = build_parser().parse_args(command.group(1).split())
    assert (args.command, args.action) == ("token", "viewer")


CLIENTS = [
    {
        "id": "c-1",
        "name": "hospital-a",
        "enrolled_at": "2030-01-01T00:00:00Z",
        "revoked": False,
        "revoked_at": None,
    },
    {
        "id": "c-2",
        "name": "hospital-bb",
        "enrolled_at": "2030-01-02T00:00:00Z",
        "revoked": True,
        "revoked_at": "2030-01-03T00:00:00Z",
        "confirmed": True,
    },
    {
        "id": "c-3",
        "name": "hospital-c",
        "enrolled_at": "2030-01-04T00:00:00Z",
        "revoked": False,
        "revoked_at": None,
        "confirmed": False,
    },
]


def test_clients_list_prints_a_table() -> None:
    status, out, _, recorder = run(["clients", "list"], lambda r: httpx.Response(200, json=CLIENTS))

    lines = out.splitlines()
    assert status == 0
    assert recorder.requests[0].url.path == "/v1/clients"
    assert lines[0].split() == ["ID", "NAME", "ENROLLED_AT", "STATUS"]
    assert lines[1].split() == ["c-1", "hospital-a", "2030-01-01T00:00:00Z", "active"]
    assert lines[2].split() == [
        "c-2",
        "hospital-bb",
        "2030-01-02T00:00:00Z",
        "revoked",
        "2030-01-03T00:00:00Z",
    ]
    assert lines[3].split()[3:] == ["active", "(no", "access", "token", "yet)"]
    assert lines[1].index("hospital-a") == lines[2].index("hospital-bb")


def test_clients_list_json() -> None:
    status, out, _, _ = run(["clients", "list", "--json"], lambda r: httpx.Response(200, json=[]))

    assert status == 0
    assert json.loads(out) == []


def test_clients_revoke_sends_delete_with_the_id_escaped() -> None:
    status, out, _, recorder = run(["clients", "revoke", "c 1/x"], lambda r: httpx.Response(204))

    request = recorder.requests[0]
    assert status == 0
    assert request.method == "DELETE"
    assert request.url.raw_path == b"/v1/clients/c%201%2Fx"
    assert out == "revoked c 1/x\n"


def test_epochs_rotate() -> None:
    status, out, _, recorder = run(
        ["epochs", "rotate"],
        lambda r: httpx.Response(201, json={"key_epoch": 2, "profile": "n4096-s40"}),
    )

    assert status == 0
    assert (recorder.requests[0].method, recorder.requests[0].url.path) == (
        "POST",
        "/v1/key-epochs",
    )
    assert out == "key epoch 2 (profile n4096-s40)\n"


def test_health_needs_no_admin_key() -> None:
    status, out, _, recorder = run(
        ["health"], lambda r: httpx.Response(200, json={"status": "ok", "key_epoch": 3}), env={}
    )

    assert status == 0
    assert "X-Admin-Key" not in recorder.requests[0].headers
    assert out == "ok: key epoch 3\n"


def test_refusal_is_printed_with_its_code_and_exits_1() -> None:
    status, out, err, _ = run(
        ["clients", "list"],
        lambda r: problem(401, "admin_key_invalid", "the admin key is not valid"),
    )

    assert status == 1
    assert out == ""
    assert "admin_key_invalid: the admin key is not valid" in err


def test_missing_admin_key_sends_nothing() -> None:
    status, _, err, recorder = run(["clients", "list"], lambda r: httpx.Response(200), env={})

    assert status == 1
    assert recorder.requests == []
    assert "KEYAUTH_ADMIN_KEY" in err


def test_admin_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "admin-key"
    key_file.write_text("from-a-file-0123456789\n")

    status, _, _, recorder = run(
        ["--admin-key-file", str(key_file), "clients", "list"],
        lambda r: httpx.Response(200, json=[]),
        env={},
    )

    assert status == 0
    assert recorder.requests[0].headers["X-Admin-Key"] == "from-a-file-0123456789"


def test_unreadable_admin_key_file_exits_2(tmp_path: Path) -> None:
    status, _, err, recorder = run(
        ["--admin-key-file", str(tmp_path / "missing"), "clients", "list"],
        lambda r: httpx.Response(200, json=[]),
    )

    assert status == 2
    assert recorder.requests == []
    assert "admin key file" in err


def test_unreachable_keyauth_exits_2() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    status, _, err, _ = run(["health"], refuse)

    assert status == 2
    assert "cannot reach keyauth" in err


@pytest.mark.parametrize(
    "response",
    [httpx.Response(502, text="<html>bad gateway</html>"), httpx.Response(200, text="not json")],
)
def test_non_json_answers_are_errors(response: httpx.Response) -> None:
    status, _, err, _ = run(["health"], lambda r: response)

    assert status == 1
    assert "hefl-admin:" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["token"], env=ENV)

    assert caught.value.code == 2
    assert "ACTION" in capsys.readouterr().err


def test_keyauth_admin_raises_the_problem_keyauth_answered() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return problem(404, "client_not_found", "no client with id 'x'")

    with httpx.Client(transport=httpx.MockTransport(answer), base_url="http://k") as http:
        admin = KeyauthAdmin(ServiceHttp(http, service="keyauth", url="http://k"), "key")
        with pytest.raises(ProblemError) as caught:
            admin.revoke_client("x")

    assert (caught.value.code, caught.value.http_status) == ("client_not_found", 404)
    assert str(caught.value) == "no client with id 'x'"


def test_keyauth_admin_without_key_raises_before_sending() -> None:
    sent: list[Any] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=[])

    with (
        httpx.Client(transport=httpx.MockTransport(answer), base_url="http://k") as http,
        pytest.raises(ProblemError) as caught,
    ):
        KeyauthAdmin(ServiceHttp(http, service="keyauth", url="http://k"), None).list_clients()

    assert sent == []
    assert caught.value.code == "admin_key_missing"


def test_closed_output_pipe_exits_quietly() -> None:
    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    http = httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json=CLIENTS)),
        base_url="http://keyauth",
    )
    err = io.StringIO()
    with http:
        status = main(["clients", "list", "--json"], http=http, env=ENV, out=ClosedPipe(), err=err)

    assert status == 1
    assert err.getvalue() == ""
