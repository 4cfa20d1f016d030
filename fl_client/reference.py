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

from crypto import ModelLayout, build_layout
from fl_client.data import ClientData
from fl_client.models import ModelFactory, build_model
from fl_client.training import (
    EvalResult,
    TrainConfig,
    evaluate,
    load_personal,
    load_shared,
    local_round,
    personal_tensors,
    round_seed,
    train_local,
)
from fl_client.updates import CompressionConfig, compress_delta

__all__ = [
    "FederatedResult",
    "SimulatedClient",
    "centralized",
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
    """Accuracy and loss over the union of several held-out sets."""
    n = sum(r.n_samples for r in results)
    correct = sum(r.n_correct for r in results)
    loss = sum(r.loss * r.n_samples for r in results) / n
    return EvalResult(loss=loss, accuracy=correct / n, n_samples=n, n_correct=correct)


def evaluate_federation(
    factory: ModelFactory,
    layout: ModelLayout,
    global_blocks: Blocks,
    clients: Sequence[tuple[ClientData, Mapping[str, npt.NDArray[Any]]]],
) -> list[EvalResult]:
    """The global model, with each client's personal tensors, on each client's test split."""
    out = []
    for data, personal in clients:
        model = build_model(factory, data.input_shape, data.n_classes, 0)
        load_shared(model, layout, global_blocks)
        load_personal(model, personal)
        out.append(evaluate(model, data.test))
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
) -> FederatedResult:
    """Run ``schedule`` (client indices, one update each, every client pulling the latest
    model) in plaintext.

    ``init_client`` is the client whose seeded model is the initial global model.
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
        factory, layout, global_blocks, [(c.data, c.personal) for c in clients]
    )
    return FederatedResult(
        layout=layout,
        global_blocks=global_blocks,
        clients=clients,
        per_client=per_client,
        pooled=pooled_eval(per_client),
        versions=version,
    )


def centralized(
    data: ClientData, *, factory: ModelFactory, seed: int, train_config: TrainConfig
) -> EvalResult:
    """Train one model on pooled data (``data`` from ``to_client_data(pool_sites(...))``)."""
    model = build_model(factory, data.input_shape, data.n_classes, seed)
    train_local(model, data.train, train_config, round_seed(seed, 0))
    return evaluate(model, data.test)
