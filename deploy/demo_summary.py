"""The demo's summary: hefl against plaintext baselines on the same rows; each hospital's costs."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

import crypto
from fl_client.reference import pooled_eval
from fl_client.study_reference import study_baselines
from fl_client.training import EvalResult
from hefl_study import TASK_METRICS, StudySpec, Task

if TYPE_CHECKING:
    from deploy.demo import Hospital

__all__ = [
    "BASELINE_TURNS",
    "baseline_counts",
    "build_summary",
    "he_cost",
    "print_summary",
    "shown_metrics",
]

# Turns per hospital of the plaintext federated baseline when the spec's stop rule gives no
# update count (a wall-clock or metric rule only).
BASELINE_TURNS = 15

# The metrics the printed tables show (summary.json holds every one the task reports).
_SHOWN: dict[Task, tuple[str, ...]] = {"binary": ("accuracy", "auroc")}


def shown_metrics(task: Task) -> tuple[str, ...]:
    """The metrics of ``task`` the printed tables show."""
    return _SHOWN.get(task, tuple(m for m in TASK_METRICS[task] if m != "loss"))


def he_cost(shared_params: int, profile_name: str) -> dict[str, float]:
    """Time of one update's encryption and one model's decryption for this model size."""
    profile = crypto.get_profile(profile_name)
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


def baseline_counts(spec: StudySpec, n_hospitals: int) -> list[int]:
    """Updates of each hospital in the plaintext federated baseline: a fixed schedule.

    The hospitals take turns in the demo's order until the spec's ``stop.target_updates``
    updates are made (the first ``target % n`` get one more), or ``BASELINE_TURNS`` turns
    each without that rule. It depends on the spec only, never on the live run's arrival
    order, so the baseline is the same in every run of the same command.
    """
    total = spec.stop.target_updates or BASELINE_TURNS * n_hospitals
    return [
        total // n_hospitals + (1 if i < total % n_hospitals else 0) for i in range(n_hospitals)
    ]


def _hospital(h: Hospital) -> dict[str, Any]:
    ups = h.of("update")
    update_bytes = sum(int(e["envelope_bytes"]) for e in ups)
    stopped = h.of("stopped")
    return {
        "site": h.site,
        "table": str(h.table),
        "step_delay_s": h.step_delay,
        "updates": len(ups),
        "mean_staleness": float(np.mean([e["staleness"] for e in ups])) if ups else 0.0,
        # the initial model, if this hospital put it, counts in bytes_up, not per update
        "bytes_up": update_bytes + sum(int(e["bytes"]) for e in h.of("initial_model")),
        "bytes_down": sum(int(e.get("pull_bytes", 0)) for e in ups),
        "bytes_per_update": update_bytes / len(ups) if ups else 0,
        "shared_params": int(ups[0]["shared_params"]) if ups else 0,
        "stop": stopped[-1]["reason"] if stopped else None,
        # the final model on this hospital's held-out rows (the client's last report)
        "final_metrics": (stopped[-1].get("final_metrics") if stopped else None),
    }


def _metrics(result: EvalResult) -> dict[str, float | int]:
    return dict(result.metrics)


def build_summary(
    spec: StudySpec, status: Mapping[str, Any], hospitals: Sequence[Hospital], elapsed: float
) -> dict[str, Any]:
    """Everything the demo reports, as JSON-ready values (``summary.json``)."""
    clients = [_hospital(h) for h in hospitals]
    finals = [EvalResult(spec.data.task, c["final_metrics"]) for c in clients if c["final_metrics"]]
    counts = baseline_counts(spec, len(hospitals))
    baselines = study_baselines(spec, {h.site: h.table for h in hospitals}, counts)
    histogram = {int(k): v for k, v in status.get("staleness_histogram", {}).items()}
    applied = sum(histogram.values())
    shared = max((c["shared_params"] for c in clients), default=0)
    return {
        "job": spec.name,
        "spec_sha256": spec.sha256,
        "model": spec.model.name or spec.model.factory,
        "task": spec.data.task,
        "inputs": spec.data.input_width,
        "profile": spec.profile,
        "stop_reason": status.get("stop_reason"),
        "version": status.get("version"),
        "elapsed_s": elapsed,
        "updates_applied": status.get("updates_applied"),
        "updates_rejected": status.get("updates_rejected") or {},
        "mean_staleness": sum(k * v for k, v in histogram.items()) / applied if applied else 0.0,
        "staleness_histogram": histogram,
        "hefl": _metrics(pooled_eval(finals)) if finals else {},
        "hospitals_scored": len(finals),
        "plaintext_federated": _metrics(baselines.federated),
        "plaintext_federated_schedule": {
            "kind": "hospitals in turns, a fixed schedule (deploy.demo_summary.baseline_counts)",
            "updates": baselines.updates,
            "per_hospital": {h.site: n for h, n in zip(hospitals, counts, strict=True)},
        },
        "centralized": _metrics(baselines.centralized),
        "centralized_training": baselines.centralized_training,
        "baselines_per_hospital": {
            site: {
                "plaintext_federated": _metrics(baselines.federated_sites[site]),
                "centralized": _metrics(baselines.centralized_sites[site]),
            }
            for site in baselines.federated_sites
        },
        "he_cost": he_cost(shared, spec.profile) if shared else {},
        "clients": clients,
        "server_bytes_in": status.get("bytes_in"),
        "server_bytes_out": status.get("bytes_out"),
    }


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _value(metrics: Mapping[str, Any] | None, name: str) -> str:
    value = (metrics or {}).get(name)
    return "-" if value is None else f"{value:.4f}"


def _baseline_name(summary: Mapping[str, Any]) -> str:
    counts = set(summary["plaintext_federated_schedule"]["per_hospital"].values())
    each = f"{counts.pop()} each" if len(counts) == 1 else f"{min(counts)}-{max(counts)} each"
    return f"plaintext federated (fixed: hospitals in turns, {each})"


def _results_table(summary: Mapping[str, Any], shown: Sequence[str], names: list[str]) -> str:
    rows = summary["hefl"].get("n_samples", summary["centralized"]["n_samples"])
    trained = summary["centralized_training"]
    runs = [
        (f"centralized (every hospital's rows, {trained})", summary["centralized"]),
        (_baseline_name(summary), summary["plaintext_federated"]),
        ("hefl (encrypted, asynchronous)", summary["hefl"]),
    ]
    title = f"training (pooled over {len(summary['clients'])} hospitals' {rows} held-out rows)"
    return _table([title, *names], [[run, *(_value(m, n) for n in shown)] for run, m in runs])


def _hospital_table(summary: Mapping[str, Any], shown: Sequence[str], names: list[str]) -> str:
    headers = ["hospital", "delay/step", "updates", "staleness", "up", "down", "per update"]
    return _table(
        [*headers, "held out", *names],
        [
            [
                c["site"],
                f"{c['step_delay_s'] * 1e3:.0f} ms",
                c["updates"],
                f"{c['mean_staleness']:.2f}",
                f"{c['bytes_up'] / 1e3:,.1f} kB",
                f"{c['bytes_down'] / 1e3:,.1f} kB",
                f"{c['bytes_per_update'] / 1e3:,.1f} kB",
                (c["final_metrics"] or {}).get("n_samples", "-"),
                *(_value(c["final_metrics"], m) for m in shown),
            ]
            for c in summary["clients"]
        ],
    )


def print_summary(summary: Mapping[str, Any], out: TextIO) -> None:
    """The summary as the demo prints it."""

    def say(text: str = "") -> None:
        out.write(text + "\n")

    shown = shown_metrics(summary["task"])
    names = ["AUROC" if m == "auroc" else m.replace("_", " ") for m in shown]
    say()
    say(
        f"== hefl demo: job {summary['job']}, {summary['model']} model on {summary['inputs']} "
        f"inputs, CKKS profile {summary['profile']} =="
    )
    say(_results_table(summary, shown, names))
    schedule = summary["plaintext_federated_schedule"]
    say(
        f"plaintext federated: the hospitals in turns, {schedule['updates']} updates in all "
        "(the job's stop rule), each pulling its predecessor's model: a fixed schedule, not "
        "this run's arrival order, so it is the same in every run"
    )
    say()
    say(_hospital_table(summary, shown, names))
    rejected = summary["updates_rejected"]
    say()
    say(
        f"updates applied: {summary['updates_applied']}, rejected: {sum(rejected.values())}"
        + (f" {rejected}" if rejected else "")
        + f", mean staleness {summary['mean_staleness']:.2f} versions, "
        f"wall clock {summary['elapsed_s']:.0f} s"
    )
    clients = summary["clients"]
    shared = max((c["shared_params"] for c in clients), default=0)
    he = summary["he_cost"]
    if shared and he:
        per_update = next(c["bytes_per_update"] for c in clients if c["updates"])
        say(
            f"HE cost per update: encrypt {he['encrypt_ms']:.1f} ms, decrypt the model "
            f"{he['decrypt_ms']:.1f} ms; {per_update / 1e3:.1f} kB on the wire for {shared} "
            f"shared parameters"
        )
        say(
            f"({4 * shared} bytes as float32): a CKKS block holds "
            f"{crypto.get_profile(summary['profile']).block_size} values, so a model this "
            "small pays for a whole block."
        )
