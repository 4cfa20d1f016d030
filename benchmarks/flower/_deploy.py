"""One Flower run as Flower deploys it: a SuperLink, one SuperNode per hospital, ``flwr run``.

Every process comes from the Flower venv (``benchmarks/flower/setup.sh``), with this
repository on ``PYTHONPATH`` so the apps import hefl's data and training code. The
SuperLink and the SuperNodes start first and register (in a deployment they are
long-running); the run's strict clock starts when ``flwr run`` is invoked. Each
SuperNode reaches the SuperLink's Fleet API through its own ``ByteRelay``, which counts
the bytes of its traffic. The ServerApp writes every round's global model with its
wall-clock time; they are evaluated afterwards (``benchmarks.flower._compare``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.flower._relay import ByteRelay
from harness.services import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
APP = HERE / "app"
VENV = HERE / ".venv"
FLWR_VERSION = "1.42.0"
# Flower's own polling, read from flwr 1.42.0's source (none is a documented setting):
# the SuperNode asks the SuperLink for a message every 3 s while it has none
# (supernode/start_client_internal.py), the ServerApp's Grid pulls replies every 3 s
# (superlink/grid/http_grid.py), the SuperExec looks for a task to launch every 1 s
# (supercore/superexec/run_superexec.py), and every message to a SuperNode starts a
# fresh ``flwr-clientapp`` process that installs the FAB and imports the app.
POLLING = {
    "supernode_pull_interval_s": 3.0,
    "serverapp_grid_pull_interval_s": 3.0,
    "superexec_task_poll_interval_s": 1.0,
    "clientapp_process": "a fresh flwr-clientapp process per message (per round)",
}


class FlowerError(RuntimeError):
    """The Flower venv is missing, or a Flower process failed."""


@dataclass
class FlowerRun:
    """What one Flower run produced: round models with times, and the wire bytes."""

    rounds: list[tuple[int, float, Path]]  # (round, seconds since `flwr run`, model file)
    sites: list[str]
    bytes_up: list[int]
    bytes_down: list[int]
    submit_seconds: float  # how long `flwr run` itself took
    train_metrics: dict[str, Any] = field(default_factory=dict)


SETUP_HINT = (
    "create it with benchmarks/flower/setup.sh (a venv of its own at benchmarks/flower/.venv: "
    "flwr 1.42.0, torch 2.13.0 CPU and hefl's client side, from PyPI)"
)


def venv_problem() -> str | None:
    """Why the Flower venv cannot run the benchmark, or None when it can."""
    missing = [
        n
        for n in ("flower-superlink", "flower-supernode", "flwr")
        if not (VENV / "bin" / n).exists()
    ]
    if missing:
        return f"the Flower venv has no {', '.join(missing)} in {VENV / 'bin'}: {SETUP_HINT}"
    return None


def flower_bin(name: str) -> Path:
    path = VENV / "bin" / name
    if not path.exists():
        raise FlowerError(f"{path} not found: {SETUP_HINT}")
    return path


def _environ(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(home),
        PYTHONPATH=str(REPO),
        # no traffic beyond loopback: Flower's telemetry and update check are off
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        OMP_NUM_THREADS="1",
        # the SuperLink and SuperNodes start flower-superexec, flwr-serverapp and
        # flwr-clientapp by name
        PATH=os.pathsep.join([str(VENV / "bin"), os.environ.get("PATH", "")]),
    )
    env.pop("VIRTUAL_ENV", None)
    return env


def _start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        # its own session, so stopping it stops what it spawned (SuperExec, app processes)
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)


def _wait_for(what: str, ready: Callable[[], bool], timeout: float, procs: Sequence[Any]) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise FlowerError(f"a Flower process exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise FlowerError(f"Flower: {what} not ready in {timeout:.0f} s")
        time.sleep(0.2)


def run_flower(
    *,
    data: str,
    sites: Sequence[str],
    step_delays: Sequence[float],
    rounds: int,
    seed: int,
    lr: float,
    batch_size: int,
    local_steps: int,
    root: Path,
    progress: Callable[[str], None],
    timeout: float = 7200.0,
) -> FlowerRun:
    """Deploy SuperLink + one SuperNode per site, ``flwr run`` the app, wait for the end."""
    root.mkdir(parents=True, exist_ok=True)
    home, out, logs = root / "flwr-home", root / "rounds", root / "logs"
    for d in (home, logs):
        d.mkdir(parents=True, exist_ok=True)
    env = _environ(home)
    port = free_port()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "bench"\n\n'
        f'[superlink.bench]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    procs: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:
        stack.callback(_stop, procs)
        link_log = logs / "superlink.log"
        procs.append(
            _start(
                [
                    str(flower_bin("flower-superlink")),
                    "--insecure",
                    "--port",
                    str(port),
                    # the app's dependencies are the venv's: no `uv sync` at run time
                    "--disable-runtime-dependency-installation",
                ],
                link_log,
                env,
            )
        )
        _wait_for(
            "the SuperLink",
            lambda: "Uvicorn running" in link_log.read_text(errors="replace"),
            120,
            procs,
        )
        relays = [stack.enter_context(ByteRelay(port)) for _ in sites]
        for site, delay, relay in zip(sites, step_delays, relays, strict=True):
            procs.append(
                _start(
                    [
                        str(flower_bin("flower-supernode")),
                        "--insecure",
                        "--superlink",
                        relay.address,
                        "--port",
                        str(free_port()),
                        "--node-config",
                        f'site="{site}" step-delay={delay}',
                    ],
                    logs / f"supernode-{site}.log",
                    env,
                )
            )
        _wait_for(
            f"{len(sites)} SuperNodes",
            lambda: (
                link_log.read_text(errors="replace").count("[Fleet.ActivateNode] Activated")
                >= len(sites)
            ),
            180,
            procs,
        )
        progress(f"flower: SuperLink 127.0.0.1:{port} and {len(sites)} SuperNodes up")
        before = [r.counts() for r in relays]
        run_config = " ".join(
            [
                f"num-server-rounds={rounds}",
                f"num-nodes={len(sites)}",
                f"seed={seed}",
                f'data="{data}"',
                f"lr={lr}",
                f"batch-size={batch_size}",
                f"local-steps={local_steps}",
                f'out-dir="{out}"',
            ]
        )
        started = time.time()
        submit = subprocess.run(
            [
                str(flower_bin("flwr")),
                "run",
                str(APP),
                "bench",
                "--run-config",
                run_config,
                "--format",
                "json",
            ],
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        submit_seconds = time.time() - started
        if submit.returncode != 0:
            raise FlowerError(f"flwr run failed: {submit.stdout!r} {submit.stderr!r}")
        answer = json.loads(submit.stdout)
        progress(f"flower: run {answer.get('run-id')} submitted in {submit_seconds:.1f} s")
        deadline = time.monotonic() + timeout
        seen = -1
        while not (out / "done").exists():
            if any(p.poll() is not None for p in procs):
                raise FlowerError(f"a Flower process exited during the run; see {logs}")
            if time.monotonic() > deadline:
                raise FlowerError(f"the Flower run did not finish in {timeout:.0f} s")
            done = _journal(out)
            if done and done[-1][0] // 5 != seen // 5:
                seen = done[-1][0]
                progress(f"flower: round {seen}/{rounds} at {done[-1][1] - started:.1f} s")
            time.sleep(0.5)
        after = [r.counts() for r in relays]
    journal = _journal(out)
    metrics_file = out / "train_metrics.json"
    return FlowerRun(
        rounds=[(r, t - started, out / f"round-{r:04d}.safetensors") for r, t in journal],
        sites=list(sites),
        bytes_up=[a[0] - b[0] for a, b in zip(after, before, strict=True)],
        bytes_down=[a[1] - b[1] for a, b in zip(after, before, strict=True)],
        submit_seconds=submit_seconds,
        train_metrics=json.loads(metrics_file.read_text()) if metrics_file.exists() else {},
    )


def _journal(out: Path) -> list[tuple[int, float]]:
    path = out / "rounds.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            rows.append((int(entry["round"]), float(entry["time"])))
    return rows
