"""Outbound transport: security of URLs, retries, problem mapping, tokens, streaming pulls."""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time

import httpx
import pytest

from fl_client import (
    AccessTokenError,
    ClientOptions,
    ClientQuarantinedError,
    ConfigError,
    EnrollmentTokenError,
    InsecureTransportError,
    JobExistsError,
    JobNotFoundError,
    JobNotPausedError,
    JobPausedError,
    KeyauthClient,
    ProbeNotOfferedError,
    ProtocolError,
    RateLimitedError,
    RepairWindowExceededError,
    RetryPolicy,
    ServerClient,
    ServerError,
    SpecInvalidError,
    TokenManager,
    TooStaleError,
    TransportError,
    UpdateNotFoundError,
    require_secure_url,
)
from fl_client.rounds.port import IntegrityReport, Probe
from fl_client.transport import JobClient, TokenSource
from tests.fl_client.conftest import Sleeps
from tests.fl_client.fakes import problem


@pytest.mark.parametrize(
    "url",
    [
        "https://fl.example.org",
        "http://127.0.0.1:8800",
        "http://127.5.6.7",
        "http://[::1]:8800",
        "http://localhost:8800",
        "http://localhost.:8800",
    ],
)
def test_https_and_loopback_http_are_allowed(url: str) -> None:
    assert require_secure_url(url, allow_insecure_http=False) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:8800",
        "http://fl.example.org",
        "http://localhost.example.org",
        # Not loopback under hefl_wire's rule (not every resolver honours RFC 6761).
        "http://app.localhost:8800",
    ],
)
def test_plain_http_off_loopback_is_refused_unless_allowed(url: str) -> None:
    with pytest.raises(InsecureTransportError, match="allow-insecure-http"):
        require_secure_url(url, allow_insecure_http=False)
    assert require_secure_url(url, allow_insecure_http=True) == url


def test_clients_refuse_insecure_urls_at_construction() -> None:
    with pytest.raises(InsecureTransportError):
        ServerClient(ClientOptions("http://192.168.1.20:8800"))
    with pytest.raises(InsecureTransportError):
        KeyauthClient(ClientOptions("http://keyauth.hospital.net"))
    with pytest.raises(ConfigError):
        ServerClient(ClientOptions("ftp://127.0.0.1"))


def _client(
    handler: httpx.MockTransport, sleeps: Sleeps, tokens: TokenSource | None = None
) -> ServerClient:
    options = ClientOptions(
        "http://127.0.0.1:8800",
        transport=handler,
        sleep=sleeps,
        rng=random.Random(0),
        retry=RetryPolicy(max_attempts=4, backoff_base=0.5, backoff_max=4.0),
    )
    return ServerClient(options, tokens=tokens or _StaticTokens())


def _server(
    handler: httpx.MockTransport, sleeps: Sleeps, tokens: TokenSource | None = None
) -> JobClient:
    """The port onto job "icu"."""
    return _client(handler, sleeps, tokens).for_job("icu")


def _job() -> dict[str, object]:
    return {
        "name": "icu",
        "description": "ICU mortality",
        "stop_reason": None,
        "updates_applied": 3,
        "spec_sha256": "cd" * 32,
        "created_at": "2026-11-30T00:00:00Z",
        "training_seconds": 1.5,
        "state": "training",
        "version": 3,
        "target_updates": 10,
        "layout_fingerprint": "ab" * 32,
        "key_epoch": 1,
        "profile": "n4096-s40",
    }


def test_connection_errors_and_5xx_are_retried_with_growing_backoff(sleeps: Sleeps) -> None:
    answers: list[object] = [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        problem(502, "bad_gateway"),
        httpx.Response(200, json=_job()),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    job = _server(httpx.MockTransport(handler), sleeps).job()

    assert job.version == 3
    assert job.layout_fingerprint == bytes.fromhex("ab" * 32)
    assert len(sleeps) == 3
    for attempt, delay in enumerate(sleeps, start=1):
        assert (
            0.5 * min(4.0, 0.5 * 2 ** (attempt - 1)) <= delay <= min(4.0, 0.5 * 2 ** (attempt - 1))
        )


def test_retry_after_is_honoured_in_seconds_and_as_a_date(sleeps: Sleeps) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    answers = [
        problem(503, "server_busy", headers={"Retry-After": "12"}),
        problem(429, "rate_limited", headers={"Retry-After": when}),
        httpx.Response(200, json=_job()),
    ]
    client = _server(httpx.MockTransport(lambda r: answers.pop(0)), sleeps)

    client.job()

    assert sleeps[0] == 12.0
    assert 25 <= sleeps[1] <= 30


def test_retries_give_up_with_the_typed_error(sleeps: Sleeps) -> None:
    client = _server(httpx.MockTransport(lambda r: problem(500, "internal_error")), sleeps)
    with pytest.raises(ServerError) as info:
        client.job()
    assert info.value.status == 500
    assert len(sleeps) == 3

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(TransportError, match="4 attempt"):
        _server(httpx.MockTransport(refuse), sleeps).job()


def test_4xx_problems_are_not_retried_and_keep_their_extra_fields(sleeps: Sleeps) -> None:
    tokens = _StaticTokens()
    client = _server(
        httpx.MockTransport(lambda r: problem(409, "too_stale", current_version=42)),
        sleeps,
        tokens=tokens,
    )
    with pytest.raises(TooStaleError) as info:
        client.push_update(b"envelope")
    assert info.value.current_version == 42
    assert sleeps == []


_ENROLLMENT = {
    "client_id": "c-1",
    "client_name": "hospital-a",
    "client_secret": "the-secret",
    "key_epoch": 1,
    "profile": "test-n2048",
}


def _sequence(answers: list[object], calls: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, httpx.Response)
        return answer

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    "lost",
    [
        httpx.ReadError("connection reset"),
        httpx.ReadTimeout("timed out"),
        httpx.ConnectError("refused"),
        problem(500, "internal_error"),
        problem(502, "bad_gateway"),
        problem(503, "unavailable"),
    ],
)
def test_enrollment_is_retried_and_gets_the_redelivered_answer(
    sleeps: Sleeps, lost: object
) -> None:
    # keyauth re-delivers an unconfirmed enrollment to its token (200): resending is safe.
    calls: list[httpx.Request] = []
    answers = [lost, httpx.Response(200, json=_ENROLLMENT)]
    client = KeyauthClient(
        ClientOptions("http://127.0.0.1:8700", transport=_sequence(answers, calls), sleep=sleeps)
    )

    enrollment = client.enroll("the-token")

    assert enrollment.client_id == "c-1"
    assert enrollment.client_secret == "the-secret"
    assert [json.loads(c.content) for c in calls] == [{"token": "the-token"}] * 2
    assert len(sleeps) == 1


def test_a_used_enrollment_token_is_not_retried(sleeps: Sleeps) -> None:
    calls: list[httpx.Request] = []
    answers: list[object] = [httpx.ConnectError("refused"), problem(403, "enrollment_token_used")]
    client = KeyauthClient(
        ClientOptions("http://127.0.0.1:8700", transport=_sequence(answers, calls), sleep=sleeps)
    )

    with pytest.raises(EnrollmentTokenError):
        client.enroll("the-token")

    assert len(calls) == 2  # the 403 is final: the token is dead


def test_enrollment_retries_give_up_with_a_transport_error(sleeps: Sleeps) -> None:
    calls: list[httpx.Request] = []

    def reset(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ReadError("connection reset")

    client = KeyauthClient(
        ClientOptions(
            "http://127.0.0.1:8700",
            transport=httpx.MockTransport(reset),
            sleep=sleeps,
            retry=RetryPolicy(max_attempts=3),
        )
    )

    with pytest.raises(TransportError, match="3 attempt"):
        client.enroll("the-token")
    assert len(calls) == 3


class _StaticTokens:
    def __init__(self) -> None:
        self.n = 0

    def get(self) -> str:
        return f"token-{self.n}"

    def invalidate(self) -> None:
        self.n += 1


def test_a_refused_token_is_replaced_once_then_the_error_surfaces(sleeps: Sleeps) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return problem(401, "token_expired")

    tokens = _StaticTokens()
    with pytest.raises(AccessTokenError):
        _server(httpx.MockTransport(handler), sleeps, tokens=tokens).request_slot()
    assert seen == ["Bearer token-0", "Bearer token-1"]


def test_the_status_is_read_with_the_clients_token_and_without_one_only_if_public(
    sleeps: Sleeps,
) -> None:
    # the server's default: the status is for token holders (FLSERVER_STATUS_ACCESS=token)
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        if "Authorization" not in request.headers:
            return problem(401, "token_missing")
        return httpx.Response(200, json=_job())

    transport = httpx.MockTransport(handler)
    status = _client(transport, sleeps).status("icu")
    options = ClientOptions("http://127.0.0.1:8800", transport=transport, sleep=sleeps)
    with pytest.raises(AccessTokenError) as refused:
        ServerClient(options).status("icu")

    assert status["name"] == "icu"
    assert refused.value.code == "token_missing"
    assert seen == ["Bearer token-0", None]


def test_the_token_manager_refreshes_before_expiry() -> None:
    issued: list[int] = []

    def keyauth(request: httpx.Request) -> httpx.Response:
        issued.append(1)
        return httpx.Response(
            200,
            json={
                "access_token": f"t{len(issued)}",
                "token_type": "bearer",
                "expires_in": 300,
                "key_epoch": 1,
            },
        )

    now = [1000.0]
    manager = TokenManager(
        KeyauthClient(
            ClientOptions("http://127.0.0.1:8700", transport=httpx.MockTransport(keyauth))
        ),
        "c1",
        "s3cret",
        refresh_margin=30,
        clock=lambda: now[0],
    )
    assert manager.get() == "t1"
    now[0] += 269
    assert manager.get() == "t1"
    now[0] += 2  # 29 s before expiry: inside the margin
    assert manager.get() == "t2"
    assert "s3cret" not in repr(manager)
    assert "t2" not in repr(manager.current)


def test_slots_answer_busy_without_retrying_so_the_runner_can_wait(sleeps: Sleeps) -> None:
    client = _server(
        httpx.MockTransport(lambda r: problem(429, "slots_full", headers={"Retry-After": "5"})),
        sleeps,
        tokens=_StaticTokens(),
    )
    with pytest.raises(RateLimitedError) as info:
        client.request_slot()
    assert info.value.retry_after == 5.0
    assert sleeps == []


def test_model_pull_streams_with_progress_and_handles_304(sleeps: Sleeps) -> None:
    body = bytes(range(256)) * 100

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("If-None-Match") == '"v7"':
            return httpx.Response(304)
        assert request.url.params["since"] == "5"
        return httpx.Response(
            200, content=body, headers={"X-Hefl-Model-Version": "7", "ETag": '"v7"'}
        )

    client = _server(httpx.MockTransport(handler), sleeps)
    chunks: list[int] = []
    download = client.get_model(since=5, on_chunk=lambda n, total: chunks.append(n))
    assert download is not None
    assert download.data == body
    assert download.version == 7
    assert download.etag == '"v7"'
    assert sum(chunks) == len(body)
    assert client.get_model(since=5, etag='"v7"') is None


def test_answers_that_break_the_protocol_are_protocol_errors(sleeps: Sleeps) -> None:
    client = _server(httpx.MockTransport(lambda r: httpx.Response(200, content=b"x")), sleeps)
    with pytest.raises(ProtocolError, match="X-Hefl-Model-Version"):
        client.get_model()
    with pytest.raises(ProtocolError, match="not JSON"):
        client.job()
    bad = _job() | {"version": "3"}
    client = _server(httpx.MockTransport(lambda r: httpx.Response(200, json=bad)), sleeps)
    with pytest.raises(ProtocolError, match="version"):
        client.job()


def test_no_token_in_logs_even_at_debug(sleeps: Sleeps, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answers = [problem(503, "server_busy"), httpx.Response(200, json={"expires_at": "x"})]
    client = _server(httpx.MockTransport(lambda r: answers.pop(0)), sleeps, tokens=_StaticTokens())

    client.request_slot()

    assert "retry" in caplog.text
    assert "token-0" not in caplog.text


def test_metrics_are_posted_as_the_protocol_says(sleeps: Sleeps) -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(202, json={"version": 4})

    _server(httpx.MockTransport(handler), sleeps, tokens=_StaticTokens()).post_metrics(
        4, {"loss": 0.5, "accuracy": 0.75, "n_samples": 80}
    )
    assert bodies == [{"version": 4, "metrics": {"loss": 0.5, "accuracy": 0.75, "n_samples": 80}}]


def test_a_job_port_speaks_the_job_paths_and_sends_the_token_on_every_request(
    sleeps: Sleeps,
) -> None:
    # Prepare
    seen: list[tuple[str, str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.headers.get("Authorization")))
        path = request.url.path
        if path.endswith("/model"):
            return httpx.Response(200, content=b"m", headers={"X-Hefl-Model-Version": "3"})
        if path.endswith(("/layout", "/spec")):
            return httpx.Response(200, content=b"{}")
        if path.endswith("/updates"):
            ack = {"update_id": "u", "version": 4, "staleness": 0, "weight": 1.0}
            return httpx.Response(202, json=ack)
        if path.endswith("/slots") and request.method == "POST":
            return httpx.Response(200, json={"expires_at": "x"})
        if path == "/v1/jobs":
            return httpx.Response(200, json=[_job()])
        return httpx.Response(200, json=_job())

    port = _server(httpx.MockTransport(handler), sleeps)

    # Execute
    port.job()
    port.spec()
    port.get_layout()
    port.get_model()
    port.request_slot()
    port.push_update(b"u")
    port.release_slot()
    port.post_metrics(3, {"n_samples": 1, "loss": 0.5})
    jobs = _client(httpx.MockTransport(handler), sleeps).jobs()

    # Assert
    assert [(m, p) for m, p, _ in seen] == [
        ("GET", "/v1/jobs/icu"),
        ("GET", "/v1/jobs/icu/spec"),
        ("GET", "/v1/jobs/icu/layout"),
        ("GET", "/v1/jobs/icu/model"),
        ("POST", "/v1/jobs/icu/slots"),
        ("POST", "/v1/jobs/icu/updates"),
        ("DELETE", "/v1/jobs/icu/slots"),
        ("POST", "/v1/jobs/icu/metrics"),
        ("GET", "/v1/jobs"),
    ]
    assert {auth for _, _, auth in seen} == {"Bearer token-0"}
    assert [(j.name, j.description, j.spec_sha256) for j in jobs] == [
        ("icu", "ICU mortality", "cd" * 32)
    ]


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (404, "job_not_found", JobNotFoundError),
        (409, "job_paused", JobPausedError),
        (409, "job_not_paused", JobNotPausedError),
        (409, "job_exists", JobExistsError),
        (422, "spec_invalid", SpecInvalidError),
    ],
)
def test_the_jobs_problem_codes_have_their_classes(
    sleeps: Sleeps, status: int, code: str, cls: type[Exception]
) -> None:
    port = _server(httpx.MockTransport(lambda r: problem(status, code)), sleeps)

    with pytest.raises(cls) as info:
        port.push_update(b"u")

    assert info.value.code == code  # type: ignore[attr-defined]
    assert sleeps == []


def test_a_job_says_its_key_id_and_integrity_and_an_older_server_says_neither(
    sleeps: Sleeps,
) -> None:
    # Prepare
    locating = {
        **_job(),
        "key_id": "ef" * 32,
        "integrity": {
            "state": "locating",
            "probe": {"version": 2, "update_id": "u-1", "client_id": "c-7"},
        },
    }
    answers = iter([locating, _job()])
    port = _server(httpx.MockTransport(lambda r: httpx.Response(200, json=next(answers))), sleeps)

    # Execute
    new, old = port.job(), port.job()

    # Assert
    assert new.key_id == "ef" * 32
    assert (new.integrity.state, new.integrity.probe) == ("locating", Probe(2, "u-1", "c-7"))
    assert (old.key_id, old.integrity.state, old.integrity.probe) == (None, "healthy", None)


@pytest.mark.parametrize(
    "integrity",
    [[], {"state": 3}, {"state": "locating", "probe": 2}, {"state": "x", "probe": {}}],
    ids=["a list", "a number state", "a number probe", "a probe without version"],
)
def test_a_malformed_integrity_is_a_protocol_error(sleeps: Sleeps, integrity: object) -> None:
    body = {**_job(), "integrity": integrity}
    port = _server(httpx.MockTransport(lambda r: httpx.Response(200, json=body)), sleeps)

    with pytest.raises(ProtocolError, match="integrity"):
        port.job()


def test_a_probe_and_an_integrity_report_speak_the_protocols_paths(sleeps: Sleeps) -> None:
    # Prepare
    seen: list[tuple[str, str, dict[str, str], object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, dict(request.url.params), body))
        if request.url.path.endswith("/integrity"):
            return httpx.Response(202, json={"state": "locating"})
        return httpx.Response(200, content=b"m", headers={"X-Hefl-Model-Version": "4"})

    port = _server(httpx.MockTransport(handler), sleeps)
    report = IntegrityReport(4, False, "canary", (0, 2), None)

    # Execute
    plain = port.get_probe_model(4)
    own = port.get_probe_model(3, "u-9")
    state = port.post_integrity(report)

    # Assert
    assert (plain.version, plain.data, own.version) == (4, b"m", 4)
    assert state == "locating"
    assert seen == [
        ("GET", "/v1/jobs/icu/model", {"version": "4"}, None),
        ("GET", "/v1/jobs/icu/model", {"version": "3", "update": "u-9"}, None),
        (
            "POST",
            "/v1/jobs/icu/integrity",
            {},
            {
                "version": 4,
                "ok": False,
                "check": "canary",
                "blocks": [0, 2],
                "update_id": None,
            },
        ),
    ]


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (403, "client_quarantined", ClientQuarantinedError),
        (409, "probe_not_offered", ProbeNotOfferedError),
        (409, "repair_window_exceeded", RepairWindowExceededError),
        (404, "update_not_found", UpdateNotFoundError),
    ],
)
def test_the_integrity_problem_codes_have_their_classes(
    sleeps: Sleeps, status: int, code: str, cls: type[Exception]
) -> None:
    port = _server(httpx.MockTransport(lambda r: problem(status, code)), sleeps)

    with pytest.raises(cls) as info:
        port.get_probe_model(1)

    assert info.value.code == code  # type: ignore[attr-defined]
    assert sleeps == []
