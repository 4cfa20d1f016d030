"""The one-command local demo: a study's job, trained by four hospitals on their own CSVs.

``python -m deploy.demo`` writes the four Fed-Heart-Disease hospitals' tables as CSV files
(``deploy.heart_disease_csv``), starts keyauth and fl_server with uvicorn on loopback,
creates the job of ``deploy/studies/heart-disease-demo.toml`` with ``hefl-admin job
create``, writes a viewer token for the operator page (``/ui``) to a 0600 file
(``hefl-admin token viewer``), enrolls one hospital client per table with a one-time
token, and runs ``hefl-client train --job ... --data <its csv>`` for each, at different
speeds, while it watches ``GET /v1/jobs/{job}/status`` with that token. It ends with a
summary against centralized and plaintext federated training on the same encoded rows.
Everything it writes stays in one directory (``--state-dir``, default ``./hefl-demo-state``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from deploy.demo_summary import build_summary, print_summary
from deploy.heart_disease_csv import write_hospital_csvs
from harness.enrollment import client_command, enroll_hospital
from harness.services import (
    ServiceError,
    ServiceProcess,
    keyauth_service,
    new_admin_key,
    server_service,
)
from hefl_study import SpecError, StudySpec, load_spec

__all__ = ["DEMO_SPEC", "Hospital", "main"]

_MARKER = ".hefl-demo"
DEMO_SPEC = Path(__file__).resolve().parent / "studies" / "heart-disease-demo.toml"
# Hospitals of different speeds: seconds slept per local optimizer step (a slower
# machine). A hospital's own resource, so a hefl-client option, not the spec's.
_STEP_DELAYS = {"cleveland": 0.0, "hungary": 0.004, "switzerland": 0.008, "va-long-beach": 0.02}


@dataclass
class Hospital:
    """One hospital of the demo: its table, its state directory, its client's log."""

    site: str
    table: Path
    state_dir: Path
    log: Path
    step_delay: float
    process: subprocess.Popen[bytes] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def read_events(self) -> None:
        """The JSON lines ``hefl-client train --json`` wrote (a torn last line is skipped)."""
        self.events = []
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and "event" in event:
                self.events.append(event)

    def of(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]


def _say(out: TextIO, message: str) -> None:
    out.write(message + "\n")
    out.flush()


def _prepare_state_dir(path: Path) -> None:
    if path.exists():
        if not (path / _MARKER).exists():
            raise SystemExit(
                f"{path} exists and was not made by the demo; choose another --state-dir"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / _MARKER).write_text("made by python -m deploy.demo; safe to delete\n")


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _stop_rules(spec: StudySpec) -> str:
    stop = spec.stop
    rules = []
    if stop.target_updates is not None:
        rules.append(f"{stop.target_updates} updates")
    if stop.max_wall_seconds is not None:
        rules.append(f"{stop.max_wall_seconds:g} s of training")
    if stop.metric is not None:
        rules.append(f"pooled {stop.metric} {stop.value:g}")
    return " or ".join(rules)


def _write_private(path: Path, text: str) -> None:
    """``text`` in a new file only its owner can read (0600 from its creation on)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)


def _admin(ka: str, server: str, key_file: Path, *args: str) -> bytes:
    """``hefl-admin ARGS`` as the administrator runs it (the key from its file): its stdout."""
    command = [sys.executable, "-m", "hefl_admin", "--url", ka, "--server-url", server]
    command += ["--admin-key-file", str(key_file), *args]
    answer = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        command, capture_output=True, timeout=120, check=False
    )
    if answer.returncode != 0:
        raise ServiceError(answer.stderr.decode(errors="replace").strip())
    return answer.stdout


def _create_job(ka: str, server: str, key_file: Path, spec_path: Path) -> dict[str, Any]:
    """``hefl-admin job create SPEC``."""
    job: dict[str, Any] = json.loads(
        _admin(ka, server, key_file, "job", "create", str(spec_path), "--json")
    )
    return job


def _viewer_token(ka: str, server: str, key_file: Path, path: Path) -> tuple[str, int]:
    """``hefl-admin token viewer``: a read-only token for the operator page, written to a
    0600 file (the status names the hospitals); the token, for the demo's own polling, and
    its lifetime in seconds."""
    issued = json.loads(_admin(ka, server, key_file, "token", "viewer", "--json"))
    token: str = issued["access_token"]
    _write_private(path, token + "\n")
    return token, int(issued["expires_in"])


def _start_training(hospital: Hospital, server: str, job: str) -> None:
    command = client_command(
        "train",
        "--server",
        server,
        "--job",
        job,
        "--data",
        str(hospital.table),
        "--state-dir",
        str(hospital.state_dir),
        "--step-delay",
        str(hospital.step_delay),
        "--json",
    )
    with hospital.log.open("ab") as out, hospital.log.with_suffix(".err").open("ab") as err:
        hospital.process = subprocess.Popen(  # noqa: S603 - our own CLI
            command, stdout=out, stderr=err
        )


def _status(server: str, job: str, viewer: str) -> dict[str, Any] | None:
    try:
        answer = httpx.get(
            f"{server}/v1/jobs/{job}/status",
            headers={"Authorization": f"Bearer {viewer}"},
            timeout=5,
        )
    except httpx.TransportError:
        return None
    if answer.status_code != 200:
        return None
    status: dict[str, Any] = answer.json()
    return status


def _progress_line(status: dict[str, Any], hospitals: Sequence[Hospital]) -> str:
    clients = status.get("clients", {})
    by_name = {c.get("client_name"): c.get("updates_applied", 0) for c in clients.values()}
    per = " ".join(f"{h.site}={by_name.get(h.site, 0)}" for h in hospitals)
    auroc = (status.get("pooled_metrics") or {}).get("auroc")
    pooled = f" auroc {auroc['value']:.3f}" if auroc else ""
    return f"{status['state']}{pooled}; updates: {per}"


def _watch(
    server: ServiceProcess,
    job: str,
    viewer: str,
    hospitals: Sequence[Hospital],
    timeout: float,
    out: TextIO,
) -> dict[str, Any]:
    """Poll the job's status until it is done and every client has exited."""
    from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs installed

    deadline = time.monotonic() + timeout
    status: dict[str, Any] | None = None
    with tqdm(total=None, desc="updates", unit="upd", file=out, dynamic_ncols=True) as bar:
        while True:
            if not server.alive():
                raise ServiceError(f"the aggregation server died:\n{server.tail()}")
            status = _status(server.url, job, viewer) or status
            if status is not None:
                bar.total = status["target_updates"]
                bar.n = status["updates_applied"]
                bar.set_postfix_str(_progress_line(status, hospitals), refresh=True)
            running = [h for h in hospitals if h.process is not None and h.process.poll() is None]
            done = status is not None and status["state"] == "done"
            if done and not running:
                break
            if not running:
                failed = ", ".join(
                    f"{h.site} (exit {h.process.returncode if h.process else '?'}, "
                    f"see {h.log.with_suffix('.err')})"
                    for h in hospitals
                )
                raise ServiceError(f"every client stopped before the job was done: {failed}")
            if time.monotonic() > deadline:
                raise ServiceError(f"the job was not done within {timeout:.0f} s")
            time.sleep(0.5)
    assert status is not None
    return status


def _hospitals(root: Path, spec: StudySpec, out: TextIO) -> list[Hospital]:
    tables = write_hospital_csvs(root / "data", list(_STEP_DELAYS))
    counts = {s: len(p.read_text(encoding="utf-8").splitlines()) - 1 for s, p in tables.items()}
    _say(out, f"hospital tables in {root / 'data'} (python -m deploy.heart_disease_csv):")
    _say(out, "  " + ", ".join(f"{p.name} {counts[s]} rows" for s, p in tables.items()))
    return [
        Hospital(
            site=site,
            table=table,
            state_dir=root / "hospitals" / site,
            log=root / "logs" / f"client-{site}.jsonl",
            step_delay=_STEP_DELAYS[site],
        )
        for site, table in tables.items()
    ]


def _run(
    root: Path, spec_path: Path, spec: StudySpec, timeout: float, out: TextIO
) -> tuple[dict[str, Any], list[Hospital]]:
    """Services up, job created, hospitals enrolled and trained to the job's end."""
    admin_key = new_admin_key()
    key_file = root / "admin-key"
    _write_private(key_file, admin_key + "\n")
    hospitals = _hospitals(root, spec, out)
    logs = root / "logs"
    try:
        with keyauth_service(root / "keyauth", admin_key, logs / "keyauth.log") as ka:
            _say(out, f"key authority up at {ka.url} (uvicorn keyauth.app:app)")
            # no per-hospital rate limit: the fastest hospital sends an update every second
            with server_service(
                ka.url, root / "server", logs / "fl_server.log", client_updates_per_minute="0"
            ) as server:
                _say(out, f"aggregation server up at {server.url} (uvicorn fl_server.app:app)")
                job = _create_job(ka.url, server.url, key_file, spec_path)
                _say(out, f"job {job['name']} created: hefl-admin job create {_shown(spec_path)}")
                _say(out, f"  spec_sha256 {job['spec_sha256']}, stop: {_stop_rules(spec)}")
                for h in hospitals:
                    enroll_hospital(ka.url, admin_key, h.site, h.state_dir)
                _say(out, "enrolled with one-time tokens: " + ", ".join(h.site for h in hospitals))
                for h in hospitals:
                    _start_training(h, server.url, spec.name)
                _say(
                    out,
                    f"training: hefl-client train --job {spec.name} --data data/<hospital>.csv "
                    "--step-delay <seconds>",
                )
                _say(
                    out,
                    "  "
                    + ", ".join(f"{h.site} {h.step_delay * 1e3:.0f} ms/step" for h in hospitals),
                )
                token_file = root / "viewer-token"
                viewer, lifetime = _viewer_token(ka.url, server.url, key_file, token_file)
                shown = _shown(token_file)
                _say(out, f"operator page: {server.url}/ui (open it in a browser)")
                _say(
                    out,
                    f"  it asks for a token: paste the read-only viewer token in {shown} "
                    f"(hefl-admin token viewer; valid {lifetime / 3600:g} h)",
                )
                _say(
                    out,
                    f'status: curl -H "Authorization: Bearer $(cat {shown})" '
                    f"{server.url}/v1/jobs/{spec.name}/status",
                )
                status = _watch(server, spec.name, viewer, hospitals, timeout, out)
                status = _status(server.url, spec.name, viewer) or status
                _say(
                    out,
                    f"job {spec.name} done ({status['stop_reason']}) at version "
                    f"{status['version']}; each hospital scored the final model on its "
                    "held-out rows",
                )
    finally:
        for h in hospitals:
            if h.process is not None and h.process.poll() is None:
                h.process.terminate()
                h.process.wait(timeout=15)
            h.read_events()
    return status, hospitals


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.demo", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--state-dir", type=Path, default=Path("hefl-demo-state"))
    parser.add_argument(
        "--spec",
        type=Path,
        default=DEMO_SPEC,
        help="the study spec (its data: the columns of deploy/studies/heart-disease.toml) "
        "[deploy/studies/heart-disease-demo.toml]",
    )
    parser.add_argument("--timeout", type=float, default=480.0, help="give up after N seconds")
    args = parser.parse_args(argv)

    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        _say(sys.stderr, f"deploy.demo: {exc}")
        return 2
    root: Path = args.state_dir.resolve()
    _prepare_state_dir(root)
    started = time.monotonic()
    _say(out, f"hefl demo: state and logs in {root}")
    try:
        status, hospitals = _run(root, args.spec, spec, args.timeout, out)
    except ServiceError as exc:
        _say(out, f"demo failed: {exc}\nlogs: {root / 'logs'}")
        return 1
    _say(out, "services stopped; computing the plaintext baselines on the same encoded rows …")
    summary = build_summary(spec, status, hospitals, time.monotonic() - started)
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary, out)
    _say(out, f"\nstate: {root}; logs: {root / 'logs'}; summary: {root / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
