"""In-process federations on the same split and seeds: plaintext and real-crypto hefl.

Every run here is in one process. The encrypted one uses the product's own code path
(``prepare_update`` → ``ServerCipher`` weighting and addition → ``decrypt_model``), so
its bytes are exact envelope sizes; only HTTP and the services' processes are absent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

import crypto
from crypto import ModelLayout, build_layout
from fl_client.data import ClientData
from fl_client.models import ModelFactory, build_model
from fl_client.reference import evaluate_federation, pooled_eval
from fl_client.training import (
    TrainConfig,
    local_round,
    personal_tensors,
    round_seed,
)
from fl_client.updates import CompressionConfig, compress_delta, decrypt_model, prepare_update
from fl_server.weighting import ClientShare, UpdateWeigher

Blocks = npt.NDArray[np.float64]
# the weights a live server applies are quantized to this profile's steps
PROFILE = crypto.DEFAULT_PROFILE
Weight = Callable[[int], float]


@dataclass
class Curve:
    """Accuracy over the run: one point per evaluation."""

    name: str
    updates: list[int] = field(default_factory=list)
    bytes_up: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    per_site: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, updates: int, bytes_up: int, seconds: float, accuracy: float) -> None:
        self.updates.append(updates)
        self.bytes_up.append(bytes_up)
        self.seconds.append(seconds)
        self.accuracy.append(accuracy)

    @property
    def final(self) -> float:
        return self.accuracy[-1]

    def first_reaching(self, target: float, axis: str) -> float | None:
        values = getattr(self, axis)
        for value, acc in zip(values, self.accuracy, strict=True):
            if acc >= target:
                return float(value)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "updates": self.updates,
            "bytes_up": self.bytes_up,
            "seconds": [round(s, 3) for s in self.seconds],
            "accuracy": self.accuracy,
            "per_site": self.per_site,
            **self.extra,
        }


@dataclass
class _Client:
    data: ClientData
    seed: int
    model: Any
    personal: dict[str, Any]
    rounds: int = 0
    residual: Blocks | None = None


def _setup(
    datas: Sequence[ClientData],
    factory: ModelFactory,
    seeds: Sequence[int],
    personal: Sequence[str],
    block_size: int = crypto.DEFAULT_PROFILE.block_size,
) -> tuple[ModelLayout, Blocks, list[_Client]]:
    models = [
        build_model(factory, d.input_shape, d.n_classes, s)
        for d, s in zip(datas, seeds, strict=True)
    ]
    layout = build_layout(models[0].state_dict(), block_size, personal=personal)
    global_blocks = layout.flatten(models[0].state_dict())
    clients = [
        _Client(data=d, seed=s, model=m, personal=personal_tensors(m, layout))
        for d, s, m in zip(datas, seeds, models, strict=True)
    ]
    return layout, global_blocks, clients


def _quantized(weight: float) -> float:
    """The weight the server applies (``CkksProfile.applied_weight``), also above 1 for the
    weighers ``benchmarks.weighting`` tries: the server's integer ``round(w * 2**bits)``."""
    if weight <= 1:
        return PROFILE.applied_weight(weight)
    scale = 1 << PROFILE.weight_bits
    return round(weight * scale) / scale


def _evaluate(
    factory: ModelFactory, layout: ModelLayout, blocks: Blocks, clients: Sequence[_Client]
) -> tuple[float, list[float]]:
    results = evaluate_federation(factory, layout, blocks, [(c.data, c.personal) for c in clients])
    return pooled_eval(results).accuracy, [r.accuracy for r in results]


def _train(
    client: _Client, layout: ModelLayout, pulled: Blocks, config: TrainConfig
) -> tuple[Any, float]:
    start = time.perf_counter()
    trained = local_round(
        client.model,
        layout,
        pulled,
        client.personal,
        client.data.train,
        client.data.test,
        config,
        round_seed(client.seed, client.rounds),
    )
    return trained, time.perf_counter() - start


def sync_fedavg(
    datas: Sequence[ClientData],
    rounds: int,
    *,
    factory: ModelFactory,
    seeds: Sequence[int],
    config: TrainConfig,
    step_delays: Sequence[float] | None = None,
    name: str = "plaintext sync FedAvg",
    progress: Callable[[str], None] = lambda _m: None,
) -> Curve:
    """FedAvg with a round barrier: every client trains from the same global model and the
    server averages the deltas weighted by training rows; float32 bytes on the wire.

    Wall clock is simulated: a round lasts as long as its slowest client, whose time is its
    measured training compute plus ``steps x step_delay`` (what ``--step-delay`` sleeps).
    """
    layout, global_blocks, clients = _setup(datas, factory, seeds, ())
    delays = step_delays or [0.0] * len(clients)
    weights = np.array([len(c.data.train) for c in clients], dtype=np.float64)
    weights /= weights.sum()
    curve = Curve(name)
    acc, _ = _evaluate(factory, layout, global_blocks, clients)
    curve.add(0, 0, 0.0, acc)
    sent = clock = 0.0
    for r in range(rounds):
        total = np.zeros_like(global_blocks)
        slowest = 0.0
        for i, client in enumerate(clients):
            trained, compute = _train(client, layout, global_blocks, config)
            client.personal = trained.personal
            client.rounds += 1
            total += weights[i] * trained.delta
            slowest = max(slowest, compute + trained.train.steps * delays[i])
            sent += 4 * layout.total_params
        global_blocks = global_blocks + total
        clock += slowest
        acc, per_site = _evaluate(factory, layout, global_blocks, clients)
        curve.add((r + 1) * len(clients), int(sent), clock, acc)
        curve.per_site = per_site
        progress(f"{name}: round {r + 1}/{rounds} accuracy {acc:.4f}")
    return curve


class _HeflServer:
    """The server's arithmetic of fl_server with a real ``ServerCipher`` (no HTTP)."""

    def __init__(self, layout: ModelLayout, blocks: Blocks, profile: crypto.CkksProfile) -> None:
        self.profile = profile
        keys = crypto.generate_key_material(self.profile)
        self.client = crypto.ClientCipher(keys.secret_context, self.profile)
        self.server = crypto.ServerCipher(keys.public_context, self.profile)
        self.layout = layout
        self.model = [
            self.server.load_model_block(self.client.encrypt_model_block(row)) for row in blocks
        ]

    def ingest(self, envelope: bytes, weight: float) -> list[int]:
        """Add the update's blocks into the model; the indices of the blocks it changed."""
        update = crypto.update_from_bytes(
            envelope,
            crypto.EnvelopeLimits(
                n_blocks=self.layout.n_blocks,
                max_block_bytes=self.profile.max_block_bytes,
                expected_fingerprint=self.layout.fingerprint,
            ),
        )
        for block in update.blocks:
            loaded = self.server.load_update_block(block.data)
            self.server.add_weighted(self.model[block.index], loaded, weight)
        return [block.index for block in update.blocks]

    def model_envelope(self, version: int, indices: Sequence[int]) -> crypto.EncryptedModel:
        """The model blocks ``indices``: what a client pulls with ``?since=`` its version."""
        return crypto.EncryptedModel(
            fingerprint=self.layout.fingerprint,
            version=version,
            key_epoch=1,
            blocks=tuple(
                crypto.CipherBlock(i, self.server.block_to_bytes(self.model[i])) for i in indices
            ),
        )


def turns(
    datas: Sequence[ClientData],
    rounds: int,
    *,
    factory: ModelFactory,
    seeds: Sequence[int],
    config: TrainConfig,
    compression: CompressionConfig,
    encrypted: bool,
    name: str,
    personal: Sequence[str] = (),
    weight: Weight = lambda _tau: 1.0,
    profile: crypto.CkksProfile = crypto.DEFAULT_PROFILE,
    progress: Callable[[str], None] = lambda _m: None,
) -> Curve:
    """Clients in turns (each pulls the latest model, so staleness 0), one evaluation per
    turn of every client.

    ``encrypted``: every update goes through ``prepare_update`` (real CKKS envelope), the
    server adds it with ``ServerCipher.add_weighted``, and each client pulls by decrypting
    the model's ciphertexts; bytes are envelope sizes. Otherwise plaintext float32 (4 bytes
    per shared parameter sent, blocks of 4096 for the compressed variants).
    """
    layout, global_blocks, clients = _setup(datas, factory, seeds, personal, profile.block_size)
    server = None
    cipher = None
    if encrypted:
        server = _HeflServer(layout, global_blocks, profile)
        cipher = server.client
    curve = Curve(name)
    acc, _ = _evaluate(factory, layout, global_blocks, clients)
    curve.add(0, 0, 0.0, acc)
    sent = 0
    version = 0
    started = time.perf_counter()
    he_seconds = 0.0
    for r in range(rounds):
        for client in clients:
            trained, _ = _train(client, layout, global_blocks, config)
            client.personal = trained.personal
            if server is not None and cipher is not None:
                t0 = time.perf_counter()
                prepared = prepare_update(
                    cipher,
                    layout,
                    trained.delta,
                    client.residual,
                    compression,
                    step=1.0,
                    round_=client.rounds,
                    base_version=version,
                    key_epoch=1,
                )
                client.residual = prepared.residual
                sent += prepared.report.envelope_bytes
                changed = server.ingest(prepared.envelope, weight(0))
                version += 1
                # the next client pulls what changed since the version before (a client's
                # `?since=`) and decrypts it over the model it has: the whole model, faster
                global_blocks = decrypt_model(
                    cipher, server.model_envelope(version, changed), layout, base=global_blocks
                )
                he_seconds += time.perf_counter() - t0
            else:
                compressed = compress_delta(
                    trained.delta, client.residual, compression, client.rounds
                )
                keep = compression.error_feedback and compression.method != "dense"
                client.residual = compressed.residual if keep else None
                global_blocks = global_blocks.copy()
                global_blocks[compressed.indices] += weight(0) * compressed.blocks
                sent += 4 * min(layout.total_params, len(compressed.indices) * layout.block_size)
                version += 1
            client.rounds += 1
        acc, per_site = _evaluate(factory, layout, global_blocks, clients)
        curve.add(version, sent, time.perf_counter() - started, acc)
        curve.per_site = per_site
        progress(f"{name}: turn {r + 1}/{rounds} accuracy {acc:.4f} bytes {sent / 1e6:.2f} MB")
    curve.extra = {
        "shared_params": layout.total_params,
        "n_blocks": layout.n_blocks,
        "he_seconds": he_seconds,
    }
    return curve


def async_events(
    datas: Sequence[ClientData],
    n_updates: int,
    *,
    factory: ModelFactory,
    seeds: Sequence[int],
    config: TrainConfig,
    step_delays: Sequence[float],
    weigher: UpdateWeigher,
    name: str = "plaintext async (simulated clock)",
    progress: Callable[[str], None] = lambda _m: None,
    on_end: Callable[[ModelLayout, Blocks, Sequence[Any]], object] | None = None,
) -> Curve:
    """Asynchronous FedAsync-style training in plaintext on a simulated clock.

    Each client pulls the latest model, trains (its measured compute plus
    ``steps x step_delay``) and pushes; the server applies ``weight x delta`` in
    the order the updates finish, weighed by fl_server's own ``UpdateWeigher`` (each
    client declares its training rows, as ``fl_client`` does). No encryption, no HTTP, no
    process start-up: the "HE off" twin of a live run with the same delays.
    ``on_end(layout, blocks, models)`` sees the final global model and each client's
    model (with its personal tensors).
    """
    layout, global_blocks, clients = _setup(datas, factory, seeds, ())
    curve = Curve(name)
    acc, _ = _evaluate(factory, layout, global_blocks, clients)
    curve.add(0, 0, 0.0, acc)
    # (finish time, client, base version, delta)
    pending: list[tuple[float, int, int, Blocks]] = []

    def start(i: int, now: float, version: int) -> None:
        client = clients[i]
        trained, compute = _train(client, layout, global_blocks, config)
        client.personal = trained.personal
        client.rounds += 1
        pending.append(
            (now + compute + trained.train.steps * step_delays[i], i, version, trained.delta)
        )

    version = 0
    known: dict[str, ClientShare] = {}
    for i in range(len(clients)):
        start(i, 0.0, 0)
    applied = 0
    sent = 0
    done = [0] * len(clients)
    every = max(1, n_updates // 40)
    while applied < n_updates:
        pending.sort(key=lambda p: p[0])
        now, i, base, delta = pending.pop(0)
        w = weigher.weight(
            staleness=version - base,
            client_id=str(i),
            samples=len(clients[i].data.train),
            known=known,
            applied=applied,
        )
        if w is not None and _quantized(w) > 0:
            w = _quantized(w)
            known[str(i)] = ClientShare(
                len(clients[i].data.train), known[str(i)].updates + 1 if str(i) in known else 1
            )
            done[i] += 1
            if "all_active" not in curve.extra and min(done) >= 1:
                curve.extra["all_active"] = (now, applied + 1)
            global_blocks = global_blocks + w * delta
            version += 1
            applied += 1
            sent += 4 * layout.total_params
            if applied % every == 0 or applied == n_updates:
                acc, per_site = _evaluate(factory, layout, global_blocks, clients)
                curve.add(applied, sent, now, acc)
                curve.per_site = per_site
                progress(
                    f"{name}: {applied}/{n_updates} updates, t={now:.1f} s, accuracy {acc:.4f}"
                )
        start(i, now, version)
    if on_end is not None:
        on_end(layout, global_blocks, [c.model for c in clients])
    return curve
