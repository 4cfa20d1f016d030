"""``hefl-admin job ...`` against a fake keyauth and a fake fl_server: requests, output, exits."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hefl_admin import main
from hefl_study import load_spec, spec_to_json
from tests.hefl_admin.fakes import ENV, KEY_ID, FakeKeyauth, FakeServer, job_record, problem

SPEC = """
name = "icu-mortality"
description = "Who dies in the ICU?"

[model]
name = "logistic"

[data]
label = "died"
task = "binary"
classes = [0, 1]

[[data.features]]
name = "age"
type = "numeric"

[[data.features]]
name = "sex"
type = "categorical"
categories = ["F", "M"]

[stop]
target_updates = 40
"""


@dataclass
class Run:
    status: int
    out: str
    err: str
    keyauth: FakeKeyauth
    server: FakeServer


@pytest.fixture
def keyauth() -> FakeKeyauth:
    return FakeKeyauth()


@pytest.fixture
def server(keyauth: FakeKeyauth) -> FakeServer:
    return FakeServer(keyauth)


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "icu.toml"
    path.write_text(SPEC, encoding="utf-8")
    return path


Handler = Callable[[httpx.Request], httpx.Response]


def run(
    argv: list[str],
    keyauth: Handler,
    server: Handler,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with (
        httpx.Client(transport=httpx.MockTransport(keyauth), base_url="http://keyauth") as k,
        httpx.Client(transport=httpx.MockTransport(server), base_url="http://server") as s,
    ):
        status = main(
            argv, http=k, server_http=s, env=ENV if env is None else env, out=out, err=err
        )
    return status, out.getvalue(), err.getvalue()


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def fields(out: str) -> dict[str, str]:
    """``label: value`` lines as a dict."""
    found = {}
    for line in out.splitlines():
        label, sep, value = line.partition(":")
        if sep and " " not in label:
            found[label] = value.strip()
    return found


# job create


def test_create_gets_an_admin_token_then_posts_the_canonical_spec(
    keyauth: FakeKeyauth, server: FakeServer, spec_file: Path
) -> None:
    status, out, err = run(["job", "create", str(spec_file)], keyauth, server)

    spec = load_spec(spec_file)
    (token_request,) = keyauth.requests
    (create,) = server.requests
    assert status == 0, err
    assert (token_request.method, token_request.url.path) == ("POST", "/v1/admin/token")
    assert token_request.headers["X-Admin-Key"] == ENV["KEYAUTH_ADMIN_KEY"]
    assert (create.method, create.url.path) == ("POST", "/v1/jobs")
    assert create.headers["Authorization"] == "Bearer admin-token-1"
    assert create.headers["Content-Type"] == "application/json"
    assert create.content == spec_to_json(spec).encode()
    assert "X-Admin-Key" not in create.headers, "the admin key goes to keyauth only"
    assert out.splitlines()[0] == "created job icu-mortality"
    assert fields(out) == {
        "name": "icu-mortality",
        "state": "waiting_for_initial_model",
        "version": "0",
        "updates": "0/40",
        "spec_sha256": spec.sha256,
        "key_epoch": "1",
        "key_id": KEY_ID,
        "profile": "n4096-s40",
    }


def test_create_the_same_spec_again_says_it_exists_and_succeeds(
    keyauth: FakeKeyauth, server: FakeServer, spec_file: Path
) -> None:
    run(["job", "create", str(spec_file)], keyauth, server)
    # The same study written otherwise: comments and defaults spelt out change no hash.
    spec_file.write_text("# again\n" + SPEC.replace('task = "binary"', 'task = "binary"\n'))

    status, out, err = run(["job", "create", str(spec_file)], keyauth, server)

    assert status == 0, err
    assert out.splitlines()[0] == "job icu-mortality exists already with this spec: nothing changed"
    assert len(server.jobs) == 1


def test_create_json_prints_the_servers_answer(
    keyauth: FakeKeyauth, server: FakeServer, spec_file: Path
) -> None:
    status, out, _ = run(["job", "create", str(spec_file), "--json"], keyauth, server)

    assert status == 0
    assert json.loads(out) == server.jobs["icu-mortality"]


def test_a_name_taken_by_another_spec_is_a_clear_error(
    keyauth: FakeKeyauth, server: FakeServer, spec_file: Path
) -> None:
    server.jobs["icu-mortality"] = job_record("icu-mortality", "a" * 64, state="training")

    status, out, err = run(["job", "create", str(spec_file)], keyauth, server)

    assert status == 1
    assert out == ""
    assert err.startswith("hefl-admin: job_exists: a job named 'icu-mortality' exists with ")
    assert f"another spec (sha256 {'a' * 64})" in err
    assert load_spec(spec_file).sha256 in err
    assert "another name" in err
    assert server.jobs["icu-mortality"]["spec_sha256"] == "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            SPEC.replace('task = "binary"', 'task = "binaryy"').replace("40", "-1"),
            [
                "has 2 problems; nothing was sent:",
                "  data.task: ",
                "  stop.target_updates: ",
            ],
        ),
        ('name = "x"\n[model\n', ["has 1 problem; nothing was sent:", "  TOML: "]),
    ],
)
def test_an_invalid_spec_is_refused_here_and_nothing_is_sent(
    keyauth: FakeKeyauth, server: FakeServer, spec_file: Path, text: str, expected: list[str]
) -> None:
    spec_file.write_text(text, encoding="utf-8")

    status, out, err = run(["job", "create", str(spec_file)], keyauth, server)

    lines = err.splitlines()
    assert status == 2
    assert out == ""
    assert lines[0] == f"hefl-admin: {spec_file} {expected[0]}"
    for line, start in zip(lines[1:], expected[1:], strict=True):
        assert line.startswith(start), err
    assert keyauth.requests == server.requests == []
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: None, "cannot read it: No such file or directory"),
        (lambda p: p.mkdir(), "cannot read it: Is a directory"),
        (lambda p: p.write_bytes(b"name = '\xff'"), "is not UTF-8 text"),
    ],
)
def test_a_spec_file_that_cannot_be_read_is_refused_and_nothing_is_sent(
    keyauth: FakeKeyauth,
    server: FakeServer,
    tmp_path: Path,
    make: Callable[[Path], object],
    says: str,
) -> None:
    path = tmp_path / "study.toml"
    make(path)

    status, _, err = run(["job", "create", str(path)], keyauth, server)

    assert status == 2
    assert err == f"hefl-admin: {path}: {says}\n"
    assert keyauth.requests == server.requests == []


def test_a_spec_the_server_refuses_shows_each_of_its_problems(
    keyauth: FakeKeyauth, spec_file: Path
) -> None:
    detail = "profile: n4096-s40 is not the profile of key epoch 3 (n8192-s40)"

    status, _, err = run(
        ["job", "create", str(spec_file)],
        keyauth,
        lambda r: problem(422, "spec_invalid", detail),
    )

    assert status == 1
    assert err == f"hefl-admin: spec_invalid: {detail}\n"


# job list


def test_list_prints_a_table_of_jobs(keyauth: FakeKeyauth, server: FakeServer) -> None:
    server.jobs = {
        "icu-mortality": job_record(
            "icu-mortality", "a" * 64, state="training", version=12, updates_applied=12
        ),
        "heart": job_record(
            "heart",
            "b" * 64,
            state="done",
            stop_reason="target_metric",
            version=3,
            updates_applied=3,
            target_updates=None,
            created_at="2030-01-02T00:00:00Z",
        ),
    }

    status, out, err = run(["job", "list"], keyauth, server)

    lines = out.splitlines()
    assert status == 0, err
    assert [r.url.path for r in server.requests] == ["/v1/jobs", "/v1/status"]
    assert lines[0].split() == [
        "NAME", "STATE", "VERSION", "UPDATES", "STOP_REASON", "CREATED_AT"
    ]  # fmt: skip
    assert lines[1].split() == ["heart", "done", "3", "3", "target_metric", "2030-01-02T00:00:00Z"]
    assert lines[2].split() == [
        "icu-mortality",
        "training",
        "12",
        "12/10",
        "-",
        "2030-01-01T00:00:00Z",
    ]
    assert lines[1].index("done") == lines[2].index("training")


def test_list_names_the_jobs_the_server_could_not_open(
    keyauth: FakeKeyauth, server: FakeServer
) -> None:
    server.failed = [{"name": "heart", "error": "job.json: not JSON"}]

    status, out, _ = run(["job", "list"], keyauth, server)

    assert status == 0
    assert out.splitlines() == [
        "not opened at startup (each answers state_invalid; see its log):",
        "  heart: job.json: not JSON",
    ]


def test_list_refuses_a_status_whose_failed_jobs_are_not_a_list(keyauth: FakeKeyauth) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/status":
            return httpx.Response(200, json={"jobs": [], "failed_jobs": "heart"})
        return httpx.Response(200, json=[])

    status, out, err = run(["job", "list"], keyauth, answer)

    assert (status, out) == (1, "")
    assert err.startswith("hefl-admin: response_malformed: fl_server's GET /v1/status ")


def test_list_json_and_an_empty_list(keyauth: FakeKeyauth, server: FakeServer) -> None:
    status, out, _ = run(["job", "list"], keyauth, server)
    json_status, json_out, _ = run(["job", "list", "--json"], keyauth, server)

    assert (status, out) == (0, "no jobs\n")
    assert (json_status, json.loads(json_out)) == (0, [])


# job show

STATUS = {
    "updates_rejected": {"too_stale": 2},
    "clients": {
        "c-1": {
            "client_name": "hospital-b",
            "updates_applied": 5,
            "updates_rejected": 2,
            "metrics_reports": 3,
            "last_seen": "2030-01-01T00:05:00Z",
            "last_update_at": "2030-01-01T00:04:00Z",
            "latest_metrics": {
                "version": 11,
                "n_samples": 30,
                "values": {"auroc": 0.8125, "loss": 0.45, "accuracy": 0.8},
            },
        },
        "c-2": {
            "client_name": "hospital-a",
            "updates_applied": 7,
            "updates_rejected": 0,
            "metrics_reports": 0,
            "last_seen": None,
            "last_update_at": None,
            "latest_metrics": None,
        },
    },
    "pooled_metrics": {
        "loss": {"value": 0.45, "sites": 1, "n_samples": 30},
        "auroc": {"value": 0.8125, "sites": 1, "n_samples": 30},
    },
    "stop_rules": [
        {"rule": "target_updates", "target": 40, "progress": 12, "met": False},
        {"rule": "max_wall_seconds", "target": 3600, "progress": 95.5, "met": False},
        {
            "rule": "target_metric",
            "target": 0.9,
            "progress": 0.8125,
            "met": False,
            "metric": "auroc",
            "sites": 1,
            "min_sites": 2,
        },
    ],
}


def test_show_prints_the_epsilon_each_hospital_spent_in_a_private_study(
    keyauth: FakeKeyauth, server: FakeServer
) -> None:
    server.jobs["icu-mortality"] = job_record("icu-mortality", "a" * 64, state="training")
    clients = dict(STATUS["clients"])  # type: ignore[call-overload]
    first = next(iter(clients))
    spent = {"epsilon": 1.5, "delta": 1e-5, "target_epsilon": 3.0, "version": 9}
    clients[first] = {**clients[first], "privacy": spent}
    server.statuses["icu-mortality"] = {**STATUS, "clients": clients}

    status, out, err = run(["job", "show", "icu-mortality"], keyauth, server)

    lines = out.splitlines()
    hospitals = lines[lines.index("hospitals:") + 1 :][:3]
    assert status == 0, err
    assert hospitals[0].split()[-1] == "EPSILON"
    assert sorted(row.split()[-1] for row in hospitals[1:]) == ["-", "1.5"]
    assert "hospital-level" not in out


def test_show_says_a_hospital_level_epsilon_is_counted_by_the_server(
    keyauth: FakeKeyauth, server: FakeServer
) -> None:
    server.jobs["icu-mortality"] = job_record("icu-mortality", "a" * 64, state="training")
    clients = dict(STATUS["clients"])  # type: ignore[call-overload]
    counted = {"epsilon": 2.5, "delta": 1e-4, "target_epsilon": None, "version": 9}
    for cid in clients:
        clients[cid] = {**clients[cid], "privacy": {**counted, "level": "hospital", "updates": 4}}
    server.statuses["icu-mortality"] = {**STATUS, "clients": clients}

    status, out, err = run(["job", "show", "icu-mortality"], keyauth, server)

    assert status == 0, err
    assert "EPSILON: hospital-level DP at δ = 0.0001, counted by the server" in out


def test_show_prints_the_job_each_hospital_the_pooled_metrics_and_the_stop_rules(
    keyauth: FakeKeyauth, server: FakeServer
) -> None:
    server.jobs["icu-mortality"] = job_record(
        "icu-mortality", "a" * 64, state="training", version=12, updates_applied=12,
        target_updates=40, training_seconds=95.5, description="Who dies in the ICU?",
    )  # fmt: skip
    server.statuses["icu-mortality"] = STATUS

    status, out, err = run(["job", "show", "icu-mortality"], keyauth, server)

    lines = out.splitlines()
    assert status == 0, err
    assert server.requests[0].url.path == "/v1/jobs/icu-mortality/status"
    head = fields(out[: out.index("\nhospitals:")])
    assert head["state"] == "training"
    assert head["updates"] == "12/40"
    assert head["rejected"] == "too_stale 2"
    assert head["description"] == "Who dies in the ICU?"
    assert head["training_seconds"] == "96 s"
    hospitals = lines[lines.index("hospitals:") + 1 :][:3]
    assert hospitals[0].split() == [
        "NAME", "UPDATES", "LAST_SEEN", "EVAL_VERSION", "ROWS", "LOSS", "ACCURACY", "AUROC"
    ]  # fmt: skip
    assert hospitals[1].split() == ["hospital-a", "7", "-", "-", "-", "-", "-", "-"]
    assert hospitals[2].split() == [
        "hospital-b", "5", "2030-01-01T00:05:00Z", "11", "30", "0.45", "0.8", "0.8125"
    ]  # fmt: skip
    pooled = lines[lines.index(next(x for x in lines if x.startswith("pooled"))) + 1 :][:3]
    assert [row.split() for row in pooled] == [
        ["METRIC", "VALUE", "HOSPITALS", "ROWS"],
        ["loss", "0.45", "1", "30"],
        ["auroc", "0.8125", "1", "30"],
    ]
    rules = lines[lines.index(next(x for x in lines if x.startswith("stop rules"))) + 1 :]
    assert [row.split()[0] for row in rules] == [
        "RULE", "target_updates", "max_wall_seconds", "target_metric"
    ]  # fmt: skip
    assert rules[1].split() == ["target_updates", "12", "40", "no"]
    assert rules[2].split() == ["max_wall_seconds", "96", "s", "3600", "s", "no"]
    assert "0.8125 (1 hospital, 2 needed)" in rules[3]
    assert "auroc >= 0.9" in rules[3]


def test_show_a_job_nobody_has_joined(keyauth: FakeKeyauth, server: FakeServer) -> None:
    server.jobs["icu-mortality"] = job_record("icu-mortality", "a" * 64)

    status, out, _ = run(["job", "show", "icu-mortality"], keyauth, server)

    assert status == 0
    assert "  none has been seen yet" in out
    assert "  none reported yet" in out


def test_show_json_prints_the_status(keyauth: FakeKeyauth, server: FakeServer) -> None:
    server.jobs["icu-mortality"] = job_record("icu-mortality", "a" * 64)
    server.statuses["icu-mortality"] = STATUS

    status, out, _ = run(["job", "show", "icu-mortality", "--json"], keyauth, server)

    assert status == 0
    assert json.loads(out) == {**server.jobs["icu-mortality"], **STATUS}


def test_a_job_name_is_escaped_in_its_path(keyauth: FakeKeyauth, server: FakeServer) -> None:
    status, _, err = run(["job", "show", "a/b c"], keyauth, server)

    assert status == 1
    assert server.requests[0].url.raw_path == b"/v1/jobs/a%2Fb%20c/status"
    assert err == "hefl-admin: job_not_found: no job named 'a/b c'\n"


# job pause | resume | stop


def test_pause_resume_stop_print_the_new_state(keyauth: FakeKeyauth, server: FakeServer) -> None:
    server.jobs["icu-mortality"] = job_record("icu-mortality", "a" * 64, state="training")

    outs = [run(["job", a, "icu-mortality"], keyauth, server) for a in ("pause", "resume", "stop")]

    assert outs == [
        (0, "icu-mortality: paused\n", ""),
        (0, "icu-mortality: training\n", ""),
        (0, "icu-mortality: done (stopped)\n", ""),
    ]
    assert [(r.method, r.url.path) for r in server.requests] == [
        ("POST", "/v1/jobs/icu-mortality/pause"),
        ("POST", "/v1/jobs/icu-mortality/resume"),
        ("POST", "/v1/jobs/icu-mortality/stop"),
    ]


def test_state_changes_the_server_refuses(keyauth: FakeKeyauth, server: FakeServer) -> None:
    server.jobs["icu-mortality"] = job_record("icu-mortality", "a" * 64, state="training")

    resumed = run(["job", "resume", "icu-mortality"], keyauth, server)
    run(["job", "stop", "icu-mortality"], keyauth, server)
    paused = run(["job", "pause", "icu-mortality", "--json"], keyauth, server)

    assert resumed == (1, "", "hefl-admin: job_not_paused: the job is training\n")
    assert paused == (1, "", "hefl-admin: job_not_training: the job is done\n")


def test_stop_json(keyauth: FakeKeyauth, server: FakeServer) -> None:
    server.jobs["icu-mortality"] = job_record("icu-mortality", "a" * 64, state="training")

    status, out, _ = run(["job", "stop", "icu-mortality", "--json"], keyauth, server)

    assert status == 0
    assert json.loads(out)["stop_reason"] == "stopped"


# Credentials and connections


def test_every_job_command_gets_a_fresh_admin_token(
    keyauth: FakeKeyauth, server: FakeServer
) -> None:
    run(["job", "show", "icu-mortality"], keyauth, server)
    run(["job", "show", "icu-mortality"], keyauth, server)

    assert [r.headers["Authorization"] for r in server.requests] == [
        "Bearer admin-token-1",
        "Bearer admin-token-2",
    ]


@pytest.mark.parametrize(
    ("env", "code"),
    [
        ({"KEYAUTH_ADMIN_KEY": "wrong-admin-key-0123456789"}, "admin_key_invalid"),
        ({}, "admin_key_missing"),
    ],
)
def test_without_the_right_admin_key_the_server_is_never_called(
    keyauth: FakeKeyauth, server: FakeServer, env: dict[str, str], code: str
) -> None:
    status, out, err = run(["job", "list"], keyauth, server, env=env)

    assert status == 1
    assert out == ""
    assert err.startswith(f"hefl-admin: {code}: ")
    assert server.requests == []
    assert len(keyauth.requests) == (1 if env else 0)


def test_the_server_refusing_the_admin_token_is_reported(keyauth: FakeKeyauth) -> None:
    status, _, err = run(
        ["job", "list"],
        keyauth,
        lambda r: problem(403, "token_wrong_role", "this requires 'admin'"),
    )

    assert status == 1
    assert err == "hefl-admin: token_wrong_role: this requires 'admin'\n"


def test_unreachable_keyauth_exits_2(server: FakeServer) -> None:
    status, _, err = run(["--url", "http://10.9.9.9:8700", "job", "list"], refuse, server)

    assert status == 2
    assert err == "hefl-admin: cannot reach keyauth at http://10.9.9.9:8700: connection refused\n"
    assert server.requests == []


@pytest.mark.parametrize(
    ("argv", "env", "url"),
    [
        ([], {}, "http://127.0.0.1:8800"),
        ([], {"HEFL_SERVER_URL": "https://fl.example.org"}, "https://fl.example.org"),
        (
            ["--server-url", "http://10.0.0.2:8800"],
            {"HEFL_SERVER_URL": "x"},
            "http://10.0.0.2:8800",
        ),
    ],
)
def test_unreachable_server_exits_2_naming_its_url(
    keyauth: FakeKeyauth, argv: list[str], env: dict[str, str], url: str
) -> None:
    status, _, err = run([*argv, "job", "list"], keyauth, refuse, env={**ENV, **env})

    assert status == 2
    assert err == f"hefl-admin: cannot reach fl_server at {url}: connection refused\n"


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (httpx.Response(502, text="<html>bad gateway</html>"), "http_502: Bad Gateway"),
        (httpx.Response(200, text="not json"), "response_malformed: fl_server answered 200"),
        (httpx.Response(200, json={"jobs": []}), "response_malformed: fl_server answered 200"),
    ],
)
def test_answers_that_are_not_the_contract_are_errors(
    keyauth: FakeKeyauth, answer: httpx.Response, says: str
) -> None:
    status, _, err = run(["job", "list"], keyauth, lambda r: answer)

    assert status == 1
    assert err.startswith(f"hefl-admin: {says}")


def test_a_keyauth_without_admin_tokens_is_named(server: FakeServer) -> None:
    # An older keyauth, or --url naming another service: the path is unknown there.
    status, _, err = run(
        ["--url", "http://127.0.0.1:8800", "job", "list"],
        lambda r: problem(404, "not_found", "Not Found"),
        server,
    )

    assert status == 1
    assert err == (
        "hefl-admin: not_found: keyauth at http://127.0.0.1:8800 has no POST /v1/admin/token "
        "(Not Found): is that keyauth, and as recent as hefl-admin?\n"
    )
    assert server.requests == []


def test_a_server_without_jobs_is_named(keyauth: FakeKeyauth) -> None:
    status, _, err = run(
        ["--server-url", "http://127.0.0.1:8700", "job", "list"],
        keyauth,
        lambda r: httpx.Response(404, text="nothing here"),
    )

    assert status == 1
    assert err.startswith(
        "hefl-admin: http_404: fl_server at http://127.0.0.1:8700 has no GET /v1/jobs (Not Found)"
    )


def test_a_server_url_that_is_no_url_exits_2(keyauth: FakeKeyauth) -> None:
    out, err = io.StringIO(), io.StringIO()
    with httpx.Client(transport=httpx.MockTransport(keyauth), base_url="http://keyauth") as k:
        status = main(
            ["--server-url", "http://[::1", "job", "list"], http=k, env=ENV, out=out, err=err
        )

    assert status == 2
    assert err.getvalue().startswith("hefl-admin: --server-url 'http://[::1' is not a URL")


def test_job_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["job"], env=ENV)

    assert caught.value.code == 2
    assert "ACTION" in capsys.readouterr().err
