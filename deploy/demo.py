"""The one-command local demo: key authority, aggregation server and one client per hospital.

``python -m deploy.demo`` starts keyauth and fl_server with uvicorn on loopback, issues
enrollment tokens, enrolls one ``hefl-client`` per hospital of UCI Heart Disease (the
four sites of Fed-Heart-Disease), trains asynchronously to the job's end with hospitals
of different speeds while it polls ``GET /v1/status``, and ends with a summary against
centralized and plaintext federated training on the same split. Everything it writes
stays in one directory (``--state-dir``, default ``./hefl-demo-state``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import numpy as np

import crypto
from harness.enrollment import client_command, enroll_hospital
from harness.services import (
    ServiceError,
    ServiceProcess,
    keyauth_service,
    new_admin_key,
    server_service,
)

__all__ = ["main"]

_MARKER = ".hefl-demo"
DATASET = "heart-disease"
MODEL = "logistic"
# Hospitals of different speeds: seconds slept per local optimizer step (a slower machine).
_STEP_DELAYS = (0.0, 0.004, 0.008, 0.02)


@dataclass
class Hospital:
    site: str
    state_dir: Path
    log: Path
    step_delay: float
    seed: int
    process: subprocess.Popen[bytes] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def read_events(self) -> None:
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

    def updates(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "update"]


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


def _start_training(hospital: Hospital, server: str, args: argparse.Namespace) -> None:
    command = client_command(
        "train",
        "--server",
        server,
        "--data",
        DATASET,
        "--site",
        hospital.site,
        "--model",
        MODEL,
        "--seed",
        str(hospital.seed),
        "--state-dir",
        str(hospital.state_dir),
        "--local-epochs",
        str(args.local_epochs),
        "--lr",
        str(args.lr),
        "--step-delay",
        str(hospital.step_delay),
        "--json",
    )
    with hospital.log.open("ab") as out:
        hospital.process = subprocess.Popen(  # noqa: S603 - our own CLI
            command, stdout=out, stderr=(hospital.log.with_suffix(".err")).open("ab")
        )


def _status(server: str) -> dict[str, Any] | None:
    try:
        answer = httpx.get(f"{server}/v1/status", timeout=5)
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
    return (
        f"version {status['version']:>3}/{status['target_updates']}  "
        f"state {status['state']:<10} applied: {per}"
    )


def _watch(
    server: ServiceProcess, hospitals: Sequence[Hospital], timeout: float, out: TextIO
) -> dict[str, Any]:
    """Poll the status endpoint until the job is done and every client has exited."""
    from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs installed

    deadline = time.monotonic() + timeout
    status: dict[str, Any] | None = None
    with tqdm(total=None, desc="training", unit="upd", file=out, dynamic_ncols=True) as bar:
        while True:
            if not server.alive():
                raise ServiceError(f"the aggregation server died:\n{server.tail()}")
            status = _status(server.url) or status
            if status is not None:
                bar.total = status["target_updates"]
                bar.n = min(status["version"], status["target_updates"])
                bar.set_postfix_str(_progress_line(status, hospitals), refresh=True)
            running = [h for h in hospitals if h.process is not None and h.process.poll() is None]
            if status is not None and status["state"] == "done" and not running:
                break
            if not running and (status is None or status["state"] != "done"):
                failed = ", ".join(
                    f"{h.site} (exit {h.process.returncode if h.process else '?'})"
                    for h in hospitals
                )
                raise ServiceError(f"every client stopped before the job was done: {failed}")
            if time.monotonic() > deadline:
                raise ServiceError(f"the job did not finish within {timeout:.0f} s")
            time.sleep(0.5)
    assert status is not None
    return status


def _final_evaluation(
    hospitals: Sequence[Hospital], server: str, out: TextIO
) -> tuple[dict[str, Any], float]:
    """Each hospital pulls and decrypts the final model and evaluates it on its own test
    split (decryption needs a hospital's key: the demo borrows each one's state dir)."""
    from fl_client import ClientSettings, Runner
    from fl_client.output import Reporter
    from fl_client.reference import pooled_eval

    results = []
    per_site: dict[str, Any] = {}
    for h in hospitals:
        settings = ClientSettings(
            state_dir=h.state_dir,
            server_url=server,
            data=DATASET,
            site=h.site,
            model=MODEL,
            seed=h.seed,
            output="quiet",
        )
        with Runner(settings, reporter=Reporter("quiet")) as runner:
            version, result = runner.evaluate_global()
        results.append(result)
        per_site[h.site] = {"accuracy": result.accuracy, "n_test": result.n_samples}
    pooled = pooled_eval(results)
    _say(out, f"final model v{version}: decrypted by each hospital and evaluated on its test split")
    return per_site, pooled.accuracy


def _baselines(
    hospitals: Sequence[Hospital], updates_per_site: Sequence[int], args: argparse.Namespace
) -> dict[str, Any]:
    """Centralized and plaintext federated training on the same split, seeds and model."""
    from fl_client.data import load_client_data, pool_sites, site_arrays, to_client_data
    from fl_client.models import resolve_model
    from fl_client.reference import centralized, plaintext_federated
    from fl_client.training import TrainConfig
    from fl_client.updates import CompressionConfig

    factory = resolve_model(MODEL)
    sites = [h.site for h in hospitals]
    datas = [load_client_data(DATASET, s) for s in sites]
    config = TrainConfig(epochs=args.local_epochs, lr=args.lr)
    # the same number of updates per hospital as the encrypted run, in turns
    remaining = list(updates_per_site)
    schedule: list[int] = []
    while any(remaining):
        for i, left in enumerate(remaining):
            if left:
                schedule.append(i)
                remaining[i] -= 1
    federated = plaintext_federated(
        datas,
        schedule,
        factory=factory,
        seeds=[h.seed for h in hospitals],
        init_client=0,
        train_config=config,
        compression=CompressionConfig(),
        block_size=4096,
    )
    pooled = to_client_data(pool_sites([site_arrays(DATASET, s) for s in sites]))
    epochs = max(1, round(len(schedule) / len(sites))) * args.local_epochs
    central = centralized(
        pooled, factory=factory, seed=0, train_config=TrainConfig(epochs=epochs, lr=args.lr)
    )
    return {
        "plaintext_federated_accuracy": federated.pooled.accuracy,
        "centralized_accuracy": central.accuracy,
        "centralized_epochs": epochs,
        "schedule_length": len(schedule),
    }


def _he_cost(shared_params: int) -> dict[str, float]:
    """Time of one update's encryption and one model's decryption for this model size."""
    profile = crypto.DEFAULT_PROFILE
    keys = crypto.generate_key_material(profile)
    client = crypto.ClientCipher(keys.secret_context, profile)
    server = crypto.ServerCipher(keys.public_context, profile)
    values = np.zeros(profile.block_size)
    values[:shared_params] = 0.01
    n_blocks = -(-shared_params // profile.block_size)
    start = time.perf_counter()
    for _ in range(20):
        blobs = [client.encrypt_update_block(values) for _ in range(n_blocks)]
    encrypt = (time.perf_counter() - start) / 20
    model = [server.load_model_block(client.encrypt_model_block(values)) for _ in range(n_blocks)]
    for m, b in zip(model, blobs, strict=True):
        server.add_weighted(m, server.load_update_block(b), 1.0)
    model_bytes = [server.block_to_bytes(m) for m in model]
    start = time.perf_counter()
    for _ in range(20):
        for b in model_bytes:
            client.decrypt_block(b)
    decrypt = (time.perf_counter() - start) / 20
    return {"encrypt_ms": encrypt * 1e3, "decrypt_ms": decrypt * 1e3}


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _summary(
    status: dict[str, Any],
    hospitals: Sequence[Hospital],
    per_site: dict[str, Any],
    hefl_accuracy: float,
    baselines: dict[str, Any],
    he_cost: dict[str, float],
    elapsed: float,
) -> dict[str, Any]:
    histogram = {int(k): v for k, v in status.get("staleness_histogram", {}).items()}
    applied = sum(histogram.values())
    mean_staleness = sum(k * v for k, v in histogram.items()) / applied if applied else 0.0
    clients = []
    for h in hospitals:
        ups = h.updates()
        initial = [e for e in h.events if e["event"] == "initial_model"]
        update_bytes = sum(int(e["envelope_bytes"]) for e in ups)
        up_bytes = update_bytes + sum(e["bytes"] for e in initial)
        down_bytes = sum(int(e.get("pull_bytes", 0)) for e in ups)
        shared = int(ups[0]["shared_params"]) if ups else 0
        clients.append(
            {
                "site": h.site,
                "step_delay_s": h.step_delay,
                "updates": len(ups),
                "mean_staleness": float(np.mean([e["staleness"] for e in ups])) if ups else 0.0,
                "bytes_up": up_bytes,
                "bytes_down": down_bytes,
                # The initial model upload is in bytes_up, not in the per-update figure.
                "bytes_per_update": update_bytes / len(ups) if ups else 0,
                "shared_params": shared,
                "test_accuracy": per_site[h.site]["accuracy"],
            }
        )
    return {
        "dataset": DATASET,
        "model": MODEL,
        "profile": status.get("profile"),
        "elapsed_s": elapsed,
        "updates_applied": status.get("updates_applied"),
        "updates_rejected": status.get("updates_rejected"),
        "mean_staleness": mean_staleness,
        "staleness_histogram": histogram,
        "hefl_accuracy": hefl_accuracy,
        **baselines,
        "he_cost": he_cost,
        "clients": clients,
        "server_bytes_in": status.get("bytes_in"),
        "server_bytes_out": status.get("bytes_out"),
    }


def _print_summary(summary: dict[str, Any], out: TextIO) -> None:
    _say(out, "")
    _say(
        out,
        f"== hefl demo: {summary['dataset']}, {summary['model']} model, "
        f"CKKS profile {summary['profile']} ==",
    )
    _say(
        out,
        _table(
            ["training", "accuracy on the 4 hospitals' test sets"],
            [
                ["centralized (pooled data, plaintext)", f"{summary['centralized_accuracy']:.4f}"],
                [
                    "plaintext federated (hospitals in turns)",
                    f"{summary['plaintext_federated_accuracy']:.4f}",
                ],
                ["hefl (encrypted, asynchronous)", f"{summary['hefl_accuracy']:.4f}"],
            ],
        ),
    )
    _say(out, "")
    rows = [
        [
            c["site"],
            f"{c['step_delay_s'] * 1e3:.0f} ms",
            c["updates"],
            f"{c['mean_staleness']:.2f}",
            f"{c['bytes_up'] / 1e3:,.1f} kB",
            f"{c['bytes_down'] / 1e3:,.1f} kB",
            f"{c['bytes_per_update'] / 1e3:,.1f} kB",
            f"{c['test_accuracy']:.3f}",
        ]
        for c in summary["clients"]
    ]
    _say(
        out,
        _table(
            [
                "hospital",
                "delay/step",
                "updates",
                "staleness",
                "up",
                "down",
                "per update",
                "accuracy",
            ],
            rows,
        ),
    )
    rejected = summary["updates_rejected"] or {}
    _say(out, "")
    _say(
        out,
        f"updates applied: {summary['updates_applied']}, rejected: "
        f"{sum(rejected.values()) if rejected else 0} {rejected or ''}, "
        f"mean staleness {summary['mean_staleness']:.2f} versions, "
        f"wall clock {summary['elapsed_s']:.0f} s",
    )
    shared = summary["clients"][0]["shared_params"] if summary["clients"] else 0
    he = summary["he_cost"]
    per_update = summary["clients"][0]["bytes_per_update"] if summary["clients"] else 0
    _say(
        out,
        f"HE cost per update: encrypt {he['encrypt_ms']:.1f} ms, decrypt the model "
        f"{he['decrypt_ms']:.1f} ms; {per_update / 1e3:.1f} kB on the wire for "
        f"{shared} shared parameters ({4 * shared} bytes as float32): a CKKS block "
        f"holds 4096 values, so a model this small pays for a whole block.",
    )


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.demo", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--state-dir", type=Path, default=Path("hefl-demo-state"))
    parser.add_argument("--target-updates", type=int, default=60)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=480.0, help="give up after N seconds")
    args = parser.parse_args(argv)

    from fl_client.data import dataset_sites

    root: Path = args.state_dir.resolve()
    _prepare_state_dir(root)
    started = time.monotonic()
    admin_key = new_admin_key()
    (root / "admin-key").write_text(admin_key + "\n")
    (root / "admin-key").chmod(0o600)
    hospitals = [
        Hospital(
            site=site,
            state_dir=root / "hospitals" / site,
            log=root / "logs" / f"client-{site}.jsonl",
            step_delay=delay,
            seed=i,
        )
        for i, (site, delay) in enumerate(zip(dataset_sites(DATASET), _STEP_DELAYS, strict=True))
    ]
    _say(out, f"hefl demo: state and logs in {root}")
    try:
        with keyauth_service(root / "keyauth", admin_key, root / "logs" / "keyauth.log") as ka:
            _say(out, f"key authority up at {ka.url} (uvicorn keyauth.app:app)")
            with server_service(
                ka.url,
                root / "server",
                root / "logs" / "fl_server.log",
                target_updates=str(args.target_updates),
                client_updates_per_minute="0",
            ) as server:
                _say(
                    out,
                    f"aggregation server up at {server.url} (uvicorn fl_server.app:app), "
                    f"job: {args.target_updates} updates",
                )
                for h in hospitals:
                    enroll_hospital(ka.url, admin_key, h.site, h.state_dir)
                _say(out, "enrolled with one-time tokens: " + ", ".join(h.site for h in hospitals))
                for h in hospitals:
                    _start_training(h, server.url, args)
                _say(
                    out,
                    "training: "
                    + ", ".join(f"{h.site} ({h.step_delay * 1e3:.0f} ms/step)" for h in hospitals),
                )
                status = _watch(server, hospitals, args.timeout, out)
                for h in hospitals:
                    h.read_events()
                per_site, hefl_accuracy = _final_evaluation(hospitals, server.url, out)
                status = _status(server.url) or status
    except ServiceError as exc:
        _say(out, f"demo failed: {exc}")
        return 1
    finally:
        for h in hospitals:
            if h.process is not None and h.process.poll() is None:
                h.process.terminate()
                h.process.wait(timeout=15)
    _say(out, "services stopped; computing the plaintext baselines on the same split …")
    baselines = _baselines(hospitals, [len(h.updates()) for h in hospitals], args)
    shared = int(hospitals[0].updates()[0]["shared_params"]) if hospitals[0].updates() else 1
    summary = _summary(
        status,
        hospitals,
        per_site,
        hefl_accuracy,
        baselines,
        _he_cost(shared),
        time.monotonic() - started,
    )
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary, out)
    _say(out, f"\nsummary: {root / 'summary.json'}; logs: {root / 'logs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
