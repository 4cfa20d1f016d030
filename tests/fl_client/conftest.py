"""Fixtures of the client tests: small keys, fake services, enrolled clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import crypto
import fl_client.cli
import fl_client.session
from fl_client import ClientSettings, Runner, enroll, load_client_data
from fl_client.cli import main
from fl_client.data import ClientData
from fl_client.events import EventSink
from fl_client.output import Reporter
from fl_client.rounds.context import RoundContext
from fl_client.rounds.port import SecretContext
from fl_client.session import round_context
from hefl_study import StudySpec
from tests.fl_client.fakes import FakeKeyauth, FakeServer
from tests.fl_client.memory_port import MemoryPort, RecordingSink


@pytest.fixture(autouse=True)
def _no_flclient_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FLCLIENT_"):
            monkeypatch.delenv(name)


@pytest.fixture
def fake_keyauth(small_keys: crypto.KeyMaterial) -> FakeKeyauth:
    return FakeKeyauth(keys=small_keys)


@pytest.fixture
def fake_server(small_keys: crypto.KeyMaterial, fake_keyauth: FakeKeyauth) -> FakeServer:
    return FakeServer(keys=small_keys, keyauth=fake_keyauth)


@pytest.fixture(scope="session")
def cancer_sites() -> list[ClientData]:
    return [load_client_data("breast-cancer", str(i), n_sites=3) for i in range(3)]


@pytest.fixture(scope="session")
def digits_site() -> ClientData:
    return load_client_data("digits", "0", n_sites=3)


class Script:
    """A ``sleep`` that acts as the server's integrity machinery would between two looks
    of the client: each call runs the next step, if any."""

    def __init__(self, *steps: Callable[[], object]) -> None:
        self.steps = list(steps)
        self.calls = 0

    def __call__(self, _seconds: float) -> None:
        self.calls += 1
        if self.steps:
            self.steps.pop(0)()


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


MakeRunner = Callable[..., Runner]


@pytest.fixture
def make_runner(
    tmp_path: Path,
    fake_keyauth: FakeKeyauth,
    fake_server: FakeServer,
    cancer_sites: list[ClientData],
    sleeps: Sleeps,
) -> Iterator[MakeRunner]:
    runners: list[Runner] = []

    def make(
        name: str = "a",
        *,
        data: ClientData | None = None,
        spec: StudySpec | None = None,
        enrolled: bool = True,
        reporter: EventSink | None = None,
        **overrides: Any,
    ) -> Runner:
        if spec is not None:  # the job's study (every runner of a test shares it)
            fake_server.spec = spec
        values: dict[str, Any] = {
            "state_dir": tmp_path / f"state-{name}",
            "job": fake_server.name,
            "output": "quiet",
            "backoff_base": 0.0,
        }
        values.update(overrides)
        settings = ClientSettings(**values)
        if enrolled and not (settings.state_dir / "credential.json").exists():
            enroll(
                settings,
                fake_keyauth.issue_enrollment_token(),
                transport=httpx.MockTransport(fake_keyauth),
            )
        runner = Runner(
            settings,
            data=data or cancer_sites[0],
            keyauth_transport=httpx.MockTransport(fake_keyauth),
            server_transport=httpx.MockTransport(fake_server),
            reporter=reporter or Reporter("quiet"),
            sleep=sleeps,
        )
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.close()


MakeContext = Callable[..., tuple[RoundContext, RecordingSink]]


@pytest.fixture
def server(small_keys: crypto.KeyMaterial) -> FakeServer:
    """The fake server of the rounds' tests (``MemoryPort``); its ``keyauth`` serves the
    secret contexts ``make_context``'s clients fetch."""
    return FakeServer(keys=small_keys, keyauth=FakeKeyauth(keys=small_keys))


@pytest.fixture
def port(server: FakeServer) -> MemoryPort:
    return MemoryPort(server)


@pytest.fixture
def fetched() -> list[int]:
    return []


@pytest.fixture
def make_context(
    tmp_path: Path,
    port: MemoryPort,
    cancer_sites: list[ClientData],
    sleeps: Sleeps,
    fetched: list[int],
) -> MakeContext:
    """A client's rounds on ``port``: ``make_context(name, **settings)``; its client id is
    ``client-<name>``."""

    def secret_context(key_epoch: int) -> SecretContext:
        fetched.append(key_epoch)
        keys = port.server.keyauth.keys_of(key_epoch)
        return SecretContext(keys.secret_context, key_epoch, keys.profile_name)

    def make(name: str = "a", **overrides: Any) -> tuple[RoundContext, RecordingSink]:
        values: dict[str, Any] = {"state_dir": tmp_path / name, "job": port.server.name}
        settings = ClientSettings(**(values | overrides))
        sink = RecordingSink()
        context = round_context(
            settings,
            port.server.spec,
            port,
            secret_context,
            events=sink,
            data=cancer_sites[0],
            sleep=sleeps,
        )
        context.client_id = f"client-{name}"
        return context, sink

    return make


# ``hefl-client ARGS`` in this process: its code, stdout and stderr
Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def state(tmp_path: Path, fake_keyauth: FakeKeyauth) -> Path:
    settings = ClientSettings(state_dir=tmp_path / "state", output="quiet")
    enroll(
        settings, fake_keyauth.issue_enrollment_token(), transport=httpx.MockTransport(fake_keyauth)
    )
    return settings.state_dir


@pytest.fixture
def cli(
    state: Path,
    fake_keyauth: FakeKeyauth,
    fake_server: FakeServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """``hefl-client ARGS`` in this process, its services the fakes."""
    real = fl_client.session.connect

    def connect(settings: ClientSettings, **_: Any) -> fl_client.session.Connection:
        return real(
            settings,
            keyauth_transport=httpx.MockTransport(fake_keyauth),
            server_transport=httpx.MockTransport(fake_server),
            sleep=lambda _: None,
        )

    monkeypatch.setattr(fl_client.session, "connect", connect)
    monkeypatch.setattr(fl_client.cli, "connect", connect)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        local = [] if args[0] == "predict" else ["--state-dir", str(state)]
        code = main([*args, *local])
        out, err = capsys.readouterr()
        return code, out, err

    return run
