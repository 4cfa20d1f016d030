"""Accuracy against ε: DP-SGD at every hospital, and hospital-level DP (server noise).

Sample level on Fed-Heart-Disease and thyroid referrals; hospital level (clipped
updates noised by the server) on Fed-Heart-Disease.

``python -m benchmarks.privacy [--quick] [--seeds N] [--level sample|hospital|both]
[--rerender]`` prints the tables, writes ``benchmarks/privacy_results/privacy.json`` and
``privacy.png`` (sample level) and ``hospital.json`` (hospital level).

Each hospital of a dataset (its natural sites) trains ``rounds`` local rounds in turn,
each pulling the latest global model, exactly as hefl's client does
(``fl_client.reference.plaintext_federated``: the same ``local_round``, the same
updates added with weight 1). With a finite ε each hospital trains with
``fl_client.privacy.HospitalPrivacy``: the noise multiplier derived from ε, δ = 1e-5 and
its own planned steps, so that its ``rounds`` rounds spend exactly its budget; ε = ∞ is
plain SGD. The sample-level run is in plaintext: CKKS adds an error near 1e-9 to each weight, far
below the DP noise, and the accuracy of the encrypted path is checked against the
plaintext one elsewhere (``benchmarks.suite``).

Hospital level (``run_hospital_level``): the same turns, encrypted as hefl does it: each
update is clipped to ``HOSPITAL_CLIP`` by the client's ``prepare_update``, encrypted,
added by a keyless ``ServerCipher`` with weight 1, and noised by the server's
``ServerCipher.add_noise`` (std ``z · clip`` per parameter per update); each hospital's ε is
``hospital_epsilon`` of its updates (Opacus RDP, sampling rate 1).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import crypto
from benchmarks._report import format_table, write_json
from fl_client.data import ClientData, dataset_sites, load_client_data
from fl_client.models import LogisticModel, MlpModel, ModelFactory, build_model
from fl_client.privacy import HospitalPrivacy
from fl_client.reference import evaluate_federation, plaintext_federated, pooled_eval
from fl_client.training import TrainConfig, Trainer, local_round, round_seed
from fl_client.updates import CompressionConfig, prepare_update
from fl_server.hospital_privacy import hospital_epsilon
from hefl_study import PrivacySpec

RESULTS = Path(__file__).resolve().parent / "privacy_results"
EPSILONS = (1.0, 3.0, 8.0, math.inf)
DELTA = 1e-5
MAX_GRAD_NORM = 1.0
# Hospital level: the clip sits near the heart-disease updates' typical norm (0.1-0.45 in
# the first rounds, about 0.2 after), 5 rounds per hospital (20 updates in all), and the
# noise multipliers z of the rows (0: clipped, no noise).
HOSPITAL_CLIP = 0.2
HOSPITAL_ROUNDS = 5
HOSPITAL_Z = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class Setup:
    """One dataset's federation: its sites, model and local training."""

    dataset: str
    model: str
    factory: ModelFactory
    config: TrainConfig
    rounds: int


SETUPS = (
    Setup(
        "heart-disease",
        "logistic",
        LogisticModel,
        TrainConfig(epochs=1, batch_size=16, lr=0.1),
        rounds=20,
    ),
    Setup(
        "thyroid",
        "mlp (32 hidden)",
        functools.partial(MlpModel, hidden=32),
        TrainConfig(epochs=1, batch_size=64, lr=0.2),
        rounds=10,
    ),
)


def _trainers(
    datas: Sequence[ClientData], setup: Setup, epsilon: float, rounds: int, seed: int
) -> tuple[list[Trainer] | None, list[float]]:
    if math.isinf(epsilon):
        return None, []
    spec = PrivacySpec(epsilon=epsilon, delta=DELTA, max_grad_norm=MAX_GRAD_NORM, rounds=rounds)
    hospitals = [
        HospitalPrivacy(spec, data.train, setup.config, seed=seed * 1000 + i)
        for i, data in enumerate(datas)
    ]
    return [h.train for h in hospitals], [h.plan.noise_multiplier for h in hospitals]


def run_one(
    setup: Setup, datas: Sequence[ClientData], epsilon: float, rounds: int, seed: int
) -> dict[str, Any]:
    """One federation at one ε and seed: pooled held-out metrics and the noise used."""
    trainers, sigmas = _trainers(datas, setup, epsilon, rounds, seed)
    schedule = [i for _ in range(rounds) for i in range(len(datas))]
    started = time.perf_counter()
    result = plaintext_federated(
        datas,
        schedule,
        factory=setup.factory,
        seeds=[seed] * len(datas),
        init_client=0,
        train_config=setup.config,
        compression=CompressionConfig(),
        block_size=4096,
        trainers=trainers,
    )
    metrics = result.pooled.metrics
    return {
        "epsilon": None if math.isinf(epsilon) else epsilon,
        "seed": seed,
        "accuracy": float(metrics["accuracy"]),
        "auroc": float(metrics["auroc"]) if "auroc" in metrics else None,
        "noise_multipliers": sigmas,
        "seconds": time.perf_counter() - started,
    }


def run_hospital_level(
    setup: Setup, datas: Sequence[ClientData], z: float, rounds: int, seed: int
) -> dict[str, Any]:
    """One federation with hospital-level DP at noise multiplier ``z``, through CKKS.

    The hospitals take turns (``rounds`` each), each pulling the decrypted latest model;
    ``z = 0`` clips without noise. The noise seeds come from ``seed`` (reproducible here;
    the server draws them from OS randomness).
    """
    profile = crypto.DEFAULT_PROFILE
    keys = crypto.generate_key_material(profile)
    client = crypto.ClientCipher(keys.secret_context, profile)
    server = crypto.ServerCipher(keys.public_context, profile)
    models = [build_model(setup.factory, d.input_shape, d.n_classes, seed) for d in datas]
    layout = crypto.build_layout(models[0].state_dict(), profile.block_size)
    pulled = layout.flatten(models[0].state_dict())
    model = [server.load_model_block(client.encrypt_model_block(row)) for row in pulled]
    std = z * HOSPITAL_CLIP  # the server's noise per update of weight 1
    mask = layout.zero_mask
    seeds = np.random.default_rng([seed, round(z * 1000)])  # each (seed, z) its own draws
    started = time.perf_counter()
    for round_ in range(rounds):
        for index, data in enumerate(datas):
            trained = local_round(
                models[index],
                layout,
                pulled,
                {},
                data.train,
                data.test,
                setup.config,
                round_seed(seed * 1000 + index, round_),
            )
            prepared = prepare_update(
                client,
                layout,
                trained.delta,
                None,
                CompressionConfig(),
                step=1.0,
                round_=round_,
                base_version=0,
                key_epoch=1,
                clip=HOSPITAL_CLIP,
            )
            for block in prepared.update.blocks:
                server.add_weighted(model[block.index], server.load_update_block(block.data), 1.0)
            if std > 0:  # as the server's shards add it (ShardCore.noise)
                noise_seed = int(seeds.integers(2**63))
                for i, row in enumerate(model):
                    server.add_noise(row, noise_seed, std, index=i, zero_mask=mask[i])
            pulled = np.stack([client.decrypt_block(server.block_to_bytes(b)) for b in model])
    per_client = evaluate_federation(
        setup.factory, layout, pulled, [(d, {}) for d in datas], setup.config.task
    )
    metrics = pooled_eval(per_client).metrics
    epsilon = hospital_epsilon(z, rounds, DELTA) if z > 0 else math.inf
    return {
        "dataset": setup.dataset,
        "noise_multiplier": z,
        "clip": HOSPITAL_CLIP,
        "updates_per_hospital": rounds,
        "epsilon": None if math.isinf(epsilon) else epsilon,
        "seed": seed,
        "accuracy": float(metrics["accuracy"]),
        "auroc": float(metrics["auroc"]) if "auroc" in metrics else None,
        "largest_weight": float(np.abs(pulled[~layout.zero_mask]).max()),
        "seconds": time.perf_counter() - started,
    }


def _run_hospital_level(seeds: int, quick: bool) -> list[dict[str, Any]]:
    """Every z and seed of the hospital level on Fed-Heart-Disease (in a worker process)."""
    torch.set_num_threads(1)
    setup = SETUPS[0]
    datas = [load_client_data(setup.dataset, site) for site in dataset_sites(setup.dataset)]
    rounds = 2 if quick else HOSPITAL_ROUNDS
    runs = []
    for z in HOSPITAL_Z:
        for seed in range(seeds):
            run = run_hospital_level(setup, datas, z, rounds, seed)
            runs.append(run)
            print(
                f"{setup.dataset} hospital level z={z:g} seed={seed}: accuracy "
                f"{run['accuracy']:.3f} ({run['seconds']:.0f} s)",
                flush=True,
            )
    return runs


def summarize_hospital_level(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per noise multiplier: ε per hospital, mean and spread of the metrics over seeds."""
    rows = []
    for z in dict.fromkeys(r["noise_multiplier"] for r in runs):
        group = [r for r in runs if r["noise_multiplier"] == z]
        accuracy, accuracy_sd = _mean_std([g["accuracy"] for g in group])
        aurocs = [g["auroc"] for g in group if g["auroc"] is not None]
        auroc, auroc_sd = _mean_std(aurocs) if aurocs else (math.nan, math.nan)
        rows.append(
            {
                "dataset": group[0]["dataset"],
                "noise_multiplier": z,
                "epsilon": group[0]["epsilon"],
                "seeds": len(group),
                "accuracy": accuracy,
                "accuracy_sd": accuracy_sd,
                "auroc": auroc,
                "auroc_sd": auroc_sd,
                "largest_weight": max(g["largest_weight"] for g in group),
            }
        )
    return rows


def _hospital_table(rows: Sequence[dict[str, Any]]) -> str:
    return format_table(
        ["dataset", "z", "ε per hospital", "accuracy", "± sd", "AUROC", "± sd", "max |w|"],
        [
            [
                r["dataset"],
                f"{r['noise_multiplier']:g}",
                "∞" if r["epsilon"] is None else f"{r['epsilon']:.3g}",
                r["accuracy"],
                r["accuracy_sd"],
                r["auroc"],
                r["auroc_sd"],
                f"{r['largest_weight']:.3g}",
            ]
            for r in rows
        ],
    )


def _run_setup(index: int, seeds: int, quick: bool) -> list[dict[str, Any]]:
    """Every ε and seed of ``SETUPS[index]`` (in a worker process)."""
    torch.set_num_threads(1)  # small models: threads only contend on a shared machine
    setup = SETUPS[index]
    datas = [load_client_data(setup.dataset, site) for site in dataset_sites(setup.dataset)]
    rounds = 2 if quick else setup.rounds
    runs = []
    for epsilon in EPSILONS:
        for seed in range(seeds):
            run = {"dataset": setup.dataset, **run_one(setup, datas, epsilon, rounds, seed)}
            runs.append(run)
            print(
                f"{setup.dataset} ε={epsilon:g} seed={seed}: accuracy "
                f"{run['accuracy']:.3f} ({run['seconds']:.0f} s)",
                flush=True,
            )
    return runs


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std())


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset and ε: mean and spread over seeds."""
    groups: dict[tuple[str, float | None], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["dataset"], run["epsilon"]), []).append(run)
    rows = []
    for (dataset, epsilon), group in groups.items():
        accuracy, accuracy_sd = _mean_std([g["accuracy"] for g in group])
        aurocs = [g["auroc"] for g in group if g["auroc"] is not None]
        auroc, auroc_sd = _mean_std(aurocs) if aurocs else (math.nan, math.nan)
        sigmas = [s for g in group for s in g["noise_multipliers"]]
        rows.append(
            {
                "dataset": dataset,
                "epsilon": epsilon,
                "seeds": len(group),
                "accuracy": accuracy,
                "accuracy_sd": accuracy_sd,
                "auroc": auroc,
                "auroc_sd": auroc_sd,
                "noise_min": min(sigmas) if sigmas else 0.0,
                "noise_max": max(sigmas) if sigmas else 0.0,
            }
        )
    return rows


def _plot(rows: Sequence[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    finite = [e for e in EPSILONS if not math.isinf(e)]
    at_inf = max(finite) * 3  # ε = ∞ drawn one step beyond the largest finite ε
    for axis, metric, label in zip(
        axes,
        ("accuracy", "auroc"),
        ("pooled held-out accuracy", "pooled held-out AUROC"),
        strict=True,
    ):
        for dataset in dict.fromkeys(r["dataset"] for r in rows):
            mine = [r for r in rows if r["dataset"] == dataset]
            xs = [r["epsilon"] if r["epsilon"] is not None else at_inf for r in mine]
            ys = [r[metric] for r in mine]
            errors = [r[f"{metric}_sd"] for r in mine]
            axis.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=dataset)
        axis.set_xscale("log")
        axis.set_xticks([*finite, at_inf], [f"{e:g}" for e in finite] + ["∞"])
        axis.minorticks_off()
        axis.set_xlabel("ε per hospital (δ = 1e-5)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("DP-SGD at each hospital (mean ± sd over seeds)")
    figure.tight_layout()
    path = out / "privacy.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _table(rows: Sequence[dict[str, Any]]) -> str:
    return format_table(
        ["dataset", "ε", "accuracy", "± sd", "AUROC", "± sd", "noise multiplier"],
        [
            [
                r["dataset"],
                "∞" if r["epsilon"] is None else f"{r['epsilon']:g}",
                r["accuracy"],
                r["accuracy_sd"],
                r["auroc"],
                r["auroc_sd"],
                "-" if r["epsilon"] is None else f"{r['noise_min']:.3g}-{r['noise_max']:.3g}",
            ]
            for r in rows
        ],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.privacy", description=__doc__)
    parser.add_argument("--seeds", type=int, default=3, help="repeats with other seeds")
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 rounds (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--level",
        choices=("sample", "hospital", "both"),
        default="both",
        help="sample-level DP-SGD, hospital-level DP, or both",
    )
    parser.add_argument(
        "--rerender", action="store_true", help="the tables and plot from --out's JSON files"
    )
    args = parser.parse_args(argv)
    sample, hospital = args.level in ("sample", "both"), args.level in ("hospital", "both")
    if args.rerender:
        if sample:
            rows = json.loads((args.out / "privacy.json").read_text())["summary"]
            print(_table(rows))
            print(f"wrote {_plot(rows, args.out)}")
        if hospital:
            rows = json.loads((args.out / "hospital.json").read_text())["summary"]
            print(_hospital_table(rows))
        return 0
    seeds = 1 if args.quick else args.seeds
    # one process per dataset (and one for the hospital level): independent runs
    with ProcessPoolExecutor(max_workers=len(SETUPS) + 1) as pool:
        hospital_part = pool.submit(_run_hospital_level, seeds, args.quick) if hospital else None
        parts = (
            pool.map(
                _run_setup, range(len(SETUPS)), [seeds] * len(SETUPS), [args.quick] * len(SETUPS)
            )
            if sample
            else []
        )
        runs = [run for part in parts for run in part]
        hospital_runs = hospital_part.result() if hospital_part is not None else []
    if sample:
        _write_sample_level(runs, args.out, args.quick)
    if hospital:
        rows = summarize_hospital_level(hospital_runs)
        print(_hospital_table(rows))
        payload = {
            "delta": DELTA,
            "clip": HOSPITAL_CLIP,
            "updates_per_hospital": 2 if args.quick else HOSPITAL_ROUNDS,
            "profile": crypto.DEFAULT_PROFILE.name,
            "accountant": "rdp (opacus), sampling rate 1",
            "summary": rows,
            "runs": hospital_runs,
        }
        print(f"wrote {write_json('hospital', payload, args.out)}")
    return 0


def _write_sample_level(runs: Sequence[dict[str, Any]], out: Path, quick: bool) -> None:
    rows = summarize(runs)
    print(_table(rows))
    setups = {
        s.dataset: {
            "model": s.model,
            "rounds_per_hospital": 2 if quick else s.rounds,
            "sites": dataset_sites(s.dataset),
            "batch_size": s.config.batch_size,
            "lr": s.config.lr,
            "local_epochs": s.config.epochs,
        }
        for s in SETUPS
    }
    payload = {
        "delta": DELTA,
        "max_grad_norm": MAX_GRAD_NORM,
        "accountant": "rdp",
        "setups": setups,
        "summary": rows,
        "runs": runs,
    }
    path = write_json("privacy", payload, out)
    plot = _plot(rows, out)
    print(f"wrote {path} and {plot}")


if __name__ == "__main__":
    raise SystemExit(main())
