"""Plaintext baselines on the same data, seeds and schedule as an encrypted run.

* ``plaintext_federated``: the clients' rounds in a given order, with the very code the
  client runs (``local_round``, ``compress_delta``), but the global model in plaintext:
  ``W[blocks] += weight(τ) · η · compressed(delta)``.
* ``centralized``: one model trained on the pooled training rows of every site.

Both evaluate on the union of the sites' held-out splits, each site's rows standardized
with that site's own training statistics (federated) or the pooled ones (centralized).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from torch import nn

from crypto import ModelLayout, build_layout
from fl_client.data import ClientData, pool_sites
from fl_client.models import ModelFactory, build_model
from fl_client.training import (
    EvalResult,
    TrainConfig,
    Trainer,
    evaluate,
    load_personal,
    load_shared,
    local_round,
    personal_tensors,
    round_seed,
    train_local,
)
from fl_client.updates import CompressionConfig, compress_delta
from hefl_study import Task

__all__ = [
    "FederatedResult",
    "SimulatedClient",
    "centralized",
    "centralized_model",
    "evaluate_federation",
    "plaintext_federated",
    "pooled_eval",
]

Blocks = npt.NDArray[np.float64]


@dataclass
class SimulatedClient:
    """A client of the plaintext simulation: its data, seed and what it keeps locally."""

    data: ClientData
    seed: int
    rounds: int = 0
    residual: Blocks | None = None
    personal: dict[str, npt.NDArray[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class FederatedResult:
    layout: ModelLayout
    global_blocks: Blocks
    clients: list[SimulatedClient]
    per_client: list[EvalResult]
    pooled: EvalResult
    versions: int


def pooled_eval(results: Sequence[EvalResult]) -> EvalResult:
    """Each metric over several held-out sets, weighted by their rows (as fl_server pools
    reports): accuracy and loss are exactly those of the union of the sets."""
    n = sum(r.n_samples for r in results)
    names = [k for k in results[0].metrics if k != "n_samples"]
    pooled: dict[str, float | int] = {"n_samples": n}
    for name in names:
        having = [r for r in results if name in r.metrics]
        rows = sum(r.n_samples for r in having)
        if rows:
            pooled[name] = sum(float(r.metrics[name]) * r.n_samples for r in having) / rows
    return EvalResult(results[0].task, pooled)


def evaluate_federation(
    factory: ModelFactory,
    layout: ModelLayout,
    global_blocks: Blocks,
    clients: Sequence[tuple[ClientData, Mapping[str, npt.NDArray[Any]]]],
    task: Task | None = None,
) -> list[EvalResult]:
    """The global model, with each client's personal tensors, on each client's test split,
    scored for ``task`` (``None``: binary for one output, else multiclass)."""
    out = []
    for data, personal in clients:
        model = build_model(factory, data.input_shape, data.n_classes, 0)
        load_shared(model, layout, global_blocks)
        load_personal(model, personal)
        out.append(evaluate(model, data.test, task))
    return out


def plaintext_federated(
    datas: Sequence[ClientData],
    schedule: Sequence[int],
    *,
    factory: ModelFactory,
    seeds: Sequence[int],
    init_client: int,
    train_config: TrainConfig,
    compression: CompressionConfig,
    block_size: int,
    step: float = 1.0,
    personal: Sequence[str] = (),
    weight: Callable[[int], float] = lambda _tau: 1.0,
    trainers: Sequence[Trainer] | None = None,
) -> FederatedResult:
    """Run ``schedule`` (client indices, one update each, every client pulling the latest
    model) in plaintext.

    ``init_client`` is the client whose seeded model is the initial global model.
    ``trainers`` train each client's rounds (DP-SGD, ``fl_client.privacy``); by default
    ``train_local``.
    """
    clients = [SimulatedClient(data=d, seed=s) for d, s in zip(datas, seeds, strict=True)]
    models = [
        build_model(factory, d.input_shape, d.n_classes, s)
        for d, s in zip(datas, seeds, strict=True)
    ]
    first = models[init_client]
    layout = build_layout(first.state_dict(), block_size, personal=personal)
    global_blocks = layout.flatten(first.state_dict())
    for client, model in zip(clients, models, strict=True):
        client.personal = personal_tensors(model, layout)
    version = 0
    for index in schedule:
        client, model = clients[index], models[index]
        trained = local_round(
            model,
            layout,
            global_blocks,
            client.personal,
            client.data.train,
            client.data.test,
            train_config,
            round_seed(client.seed, client.rounds),
            train=trainers[index] if trainers is not None else train_local,
        )
        compressed = compress_delta(trained.delta, client.residual, compression, client.rounds)
        keep = compression.error_feedback and compression.method != "dense"
        client.residual = compressed.residual if keep else None
        client.personal = trained.personal
        client.rounds += 1
        global_blocks = global_blocks.copy()
        global_blocks[compressed.indices] += weight(0) * step * compressed.blocks
        version += 1
    per_client = evaluate_federation(
        factory,
        layout,
        global_blocks,
        [(c.data, c.personal) for c in clients],
        train_config.task,
    )
    return FederatedResult(
        layout=layout,
        global_blocks=global_blocks,
        clients=clients,
        per_client=per_client,
        pooled=pooled_eval(per_client),
        versions=version,
    )


def centralized_model(
    data: ClientData, *, factory: ModelFactory, seed: int, train_config: TrainConfig
) -> nn.Module:
    """One model trained on pooled data (its ``train`` split), from the seeded initial one."""
    model = build_model(factory, data.input_shape, data.n_classes, seed)
    train_local(model, data.train, train_config, round_seed(seed, 0))
    return model


def centralized(
    data: ClientData, *, factory: ModelFactory, seed: int, train_config: TrainConfig
) -> EvalResult:
    """Train one model on pooled data (``data`` from ``to_client_data(pool_sites(...))``)
    and score it on the pooled test rows."""
    model = centralized_model(data, factory=factory, seed=seed, train_config=train_config)
    return evaluate(model, data.test, train_config.task)


def _wire_table(
    data: ClientData, factory: ModelFactory, profile_name: str, fractions: Sequence[float]
) -> list[dict[str, Any]]:
    """Bytes on the wire of one real local update, dense and top-k, under a fresh key."""
    from crypto import ClientCipher, generate_key_material, get_profile
    from fl_client.updates import prepare_update

    profile = get_profile(profile_name)
    cipher = ClientCipher(generate_key_material(profile).secret_context, profile)
    model = build_model(factory, data.input_shape, data.n_classes, 0)
    layout = build_layout(model.state_dict(), profile.block_size)
    pulled = layout.flatten(model.state_dict())
    trained = local_round(
        model, layout, pulled, {}, data.train, data.test, TrainConfig(), round_seed(0, 0)
    )
    rows = []
    for method, fraction in [("dense", 1.0), *(("top-k", f) for f in fractions)]:
        config = CompressionConfig(method=method, fraction=fraction)  # type: ignore[arg-type]
        prepared = prepare_update(
            cipher,
            layout,
            trained.delta,
            None,
            config,
            step=1.0,
            round_=0,
            base_version=0,
            key_epoch=1,
        )
        rows.append({"compression": method, "fraction": fraction, **prepared.report.to_dict()})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fl_client.reference``: plaintext baselines and wire sizes."""
    import argparse
    import json

    from fl_client.data import dataset_sites, load_client_data, site_arrays, to_client_data
    from fl_client.models import resolve_model

    parser = argparse.ArgumentParser(
        prog="python -m fl_client.reference",
        description="Centralized and plaintext federated baselines (clients in turns), "
        "and the bytes one encrypted update puts on the wire.",
    )
    parser.add_argument("--data", default="heart-disease")
    parser.add_argument("--sites", nargs="*", help="default: every site of the dataset")
    parser.add_argument("--n-sites", type=int, default=4)
    parser.add_argument("--model", default="logistic")
    parser.add_argument("--rounds", type=int, default=5, help="turns per site")
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument(
        "--central-epochs", type=int, help="pooled training epochs [rounds x local epochs]"
    )
    parser.add_argument("--wire", action="store_true", help="measure update sizes instead")
    parser.add_argument("--profile", default="n4096-s40")
    args = parser.parse_args(argv)

    sites = args.sites or dataset_sites(args.data, args.n_sites)
    factory = resolve_model(args.model)
    datas = [load_client_data(args.data, s, n_sites=args.n_sites) for s in sites]
    if args.wire:
        for row in _wire_table(datas[0], factory, args.profile, (0.1,)):
            print(json.dumps(row))
        return 0
    config = TrainConfig(
        epochs=args.local_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
    )
    schedule = [i for _ in range(args.rounds) for i in range(len(sites))]
    federated = plaintext_federated(
        datas,
        schedule,
        factory=factory,
        seeds=list(range(len(sites))),
        init_client=0,
        train_config=config,
        compression=CompressionConfig(),
        block_size=4096,
    )
    pooled = to_client_data(
        pool_sites([site_arrays(args.data, s, n_sites=args.n_sites) for s in sites])
    )
    central_config = TrainConfig(
        epochs=args.central_epochs or args.rounds * args.local_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
    )
    central = centralized(pooled, factory=factory, seed=0, train_config=central_config)
    print(
        json.dumps(
            {
                "data": args.data,
                "sites": sites,
                "schedule": f"{args.rounds} turns per site",
                "plaintext_federated_accuracy": round(federated.pooled.accuracy, 4),
                "per_site": {
                    s: round(e.accuracy, 4)
                    for s, e in zip(sites, federated.per_client, strict=True)
                },
                "centralized_accuracy": round(central.accuracy, 4),
                "centralized_epochs": central_config.epochs,
                "n_test": central.n_samples,
            }
        )
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
