"""Local training and evaluation in plain PyTorch, deterministic given a seed.

Also the bridge between a ``torch.nn.Module`` and a ``crypto.ModelLayout``: the shared
tensors as one flat float64 array of blocks, and the personal tensors that stay here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from crypto import ModelLayout, tensor_to_numpy
from fl_client.errors import TrainingError
from fl_client.scoring import Metrics, model_outputs, score
from hefl_study import Task

__all__ = [
    "EvalResult",
    "LocalRound",
    "PlainSgd",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "evaluate",
    "load_personal",
    "load_shared",
    "local_round",
    "new_optimizer",
    "personal_tensors",
    "planned_steps",
    "round_seed",
    "shared_blocks",
    "train_local",
    "train_loss",
]

Blocks = npt.NDArray[np.float64]
# train_local's signature: (model, train_set, config, seed, on_step) -> TrainResult
Trainer = Callable[
    [nn.Module, "Dataset[Any]", "TrainConfig", int, "Callable[[float], object] | None"],
    "TrainResult",
]


@dataclass(frozen=True)
class TrainConfig:
    """One round of local training: ``steps`` optimizer steps if set, else ``epochs``.

    ``task`` picks the loss: binary cross-entropy on one logit, cross-entropy over the
    classes, or mean squared error on one output. ``None`` (plain classification, as
    the benchmarks use it) takes binary for one output and multiclass otherwise.
    """

    epochs: int = 1
    steps: int | None = None
    batch_size: int = 16
    lr: float = 0.05
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.0
    task: Task | None = None


@dataclass(frozen=True)
class TrainResult:
    steps: int
    mean_loss: float
    n_samples: int


@dataclass(frozen=True)
class EvalResult:
    """A model's metrics on some rows: those of its task (``fl_client.scoring``).

    ``metrics`` holds ``n_samples``, ``loss`` and the task's others; a metric that is
    undefined on these rows (AUROC with one class) is absent.
    """

    task: Task
    metrics: Metrics

    @property
    def loss(self) -> float:
        return float(self.metrics["loss"])

    @property
    def n_samples(self) -> int:
        return int(self.metrics["n_samples"])

    @property
    def accuracy(self) -> float:
        """Accuracy (classification), NaN for regression."""
        return float(self.metrics.get("accuracy", math.nan))

    def to_metrics(self) -> Metrics:
        """What the client reports to the server: ``n_samples`` and the task's metrics."""
        return dict(self.metrics)


def round_seed(seed: int, round_: int) -> int:
    """A 63-bit seed for round ``round_`` of a client seeded ``seed``."""
    state = np.random.SeedSequence([seed, round_]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def task_of(outputs: int, task: Task | None) -> Task:
    """``task``, or for ``None`` binary with one output and multiclass otherwise."""
    if task is not None:
        return task
    return "binary" if outputs == 1 else "multiclass"


def train_loss(outputs: Any, labels: Any, task: Task | None) -> Any:
    """The training loss of ``task`` (``None``: see ``TrainConfig``), averaged over a batch."""
    kind = task_of(outputs.shape[-1], task)
    if kind == "binary":
        return nn.functional.binary_cross_entropy_with_logits(
            outputs.squeeze(-1), labels.to(outputs.dtype)
        )
    if kind == "regression":
        return nn.functional.mse_loss(outputs.squeeze(-1), labels.to(outputs.dtype))
    return nn.functional.cross_entropy(outputs, labels)


def planned_steps(dataset: Dataset[Any], config: TrainConfig) -> int:
    """How many optimizer steps ``train_local`` takes on ``dataset``."""
    if config.steps is not None:
        return config.steps
    return config.epochs * math.ceil(len(dataset) / config.batch_size)


def new_optimizer(model: nn.Module, config: TrainConfig) -> Any:
    """A fresh optimizer of ``config`` over ``model``'s parameters."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)


class PlainSgd:
    """SGD without momentum as ``torch.optim.SGD`` steps it on the CPU (``param.add_(grad,
    alpha=-lr)``, bit for bit; a test holds them equal), for ``train_local``.

    Not ``torch.optim.SGD`` because its ``step`` and ``zero_grad`` import ``torch._dynamo``
    on first use: about 1 s of CPU in every client process that starts (``python -m
    benchmarks.suite``'s hospitals start four at once on two cores). Momentum, Adam and
    DP-SGD (Opacus wraps a ``torch.optim`` optimizer) keep ``new_optimizer``'s.
    """

    def __init__(self, params: Any, lr: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()  # type: ignore[untyped-decorator]  # torch is untyped here
    def step(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-self.lr)


def _local_optimizer(model: nn.Module, config: TrainConfig) -> Any:
    if config.optimizer == "sgd" and config.momentum == 0:
        return PlainSgd(model.parameters(), config.lr)
    return new_optimizer(model, config)


def train_local(
    model: nn.Module,
    dataset: Dataset[Any],
    config: TrainConfig,
    seed: int,
    on_step: Callable[[float], object] | None = None,
) -> TrainResult:
    """Train ``model`` in place; the batch order depends only on ``seed``.

    The optimizer starts fresh every round: its state would otherwise describe a model
    the client no longer holds once it pulls the new global one.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("no training data")
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, generator=generator)
    optimizer = _local_optimizer(model, config)
    total = planned_steps(dataset, config)
    model.train()
    steps, loss_sum = 0, 0.0
    while steps < total:
        for features, labels in loader:
            optimizer.zero_grad()
            loss = train_loss(model(features), labels, config.task)
            loss.backward()
            optimizer.step()
            steps += 1
            value = float(loss.detach())
            loss_sum += value
            if on_step is not None:
                on_step(value)
            if steps >= total:
                break
    model.eval()
    return TrainResult(steps=steps, mean_loss=loss_sum / steps, n_samples=n)


def evaluate(
    model: nn.Module, dataset: Dataset[Any], task: Task | None = None, batch_size: int = 512
) -> EvalResult:
    """The metrics of ``task`` for ``model`` on ``dataset`` (``None``: see ``TrainConfig``).

    Raises
    ------
    TrainingError
        The model's outputs hold NaN or infinity (it diverged).
    ValueError
        ``dataset`` is empty.
    """
    outputs, labels = model_outputs(model, dataset, batch_size)
    if not np.isfinite(outputs).all():
        raise TrainingError("the model's outputs hold NaN or infinity: it has diverged")
    kind = task_of(outputs.shape[-1] if outputs.ndim == 2 else 1, task)
    return EvalResult(kind, score(kind, outputs, labels))


def shared_blocks(model: nn.Module, layout: ModelLayout) -> Blocks:
    """The model's shared tensors as ``(n_blocks, block_size)`` float64 (exact)."""
    return layout.flatten(model.state_dict())


def _assign(model: nn.Module, values: Mapping[str, Any]) -> None:
    state = model.state_dict()
    with torch.no_grad():
        for name, value in values.items():
            target = state[name]
            source = torch.from_numpy(np.ascontiguousarray(value))
            if tuple(source.shape) != tuple(target.shape):
                raise ValueError(
                    f"{name}: shape {tuple(source.shape)}, model has {tuple(target.shape)}"
                )
            target.copy_(source.to(target.dtype))


def load_shared(model: nn.Module, layout: ModelLayout, blocks: Blocks) -> None:
    """Set the model's shared tensors from ``(n_blocks, block_size)`` values."""
    _assign(model, layout.unflatten(blocks))


def personal_tensors(model: nn.Module, layout: ModelLayout) -> dict[str, npt.NDArray[Any]]:
    """Copies of the tensors the layout leaves out: they never leave the client."""
    shared = set(layout.names)
    return {
        name: tensor_to_numpy(value).copy()
        for name, value in model.state_dict().items()
        if name not in shared
    }


def load_personal(model: nn.Module, values: Mapping[str, npt.NDArray[Any]]) -> None:
    """Restore the client's own values of its personal tensors."""
    _assign(model, values)


@dataclass(frozen=True)
class LocalRound:
    """One client round in plaintext: what training changed and how the pulled model did.

    Attributes
    ----------
    delta
        ``trained - pulled`` over the shared tensors, ``(n_blocks, block_size)``.
    personal
        The personal tensors after training.
    train
        Steps and mean training loss.
    before
        The pulled model (with this client's personal tensors) on the held-out split.
    """

    delta: Blocks
    personal: dict[str, npt.NDArray[Any]]
    train: TrainResult
    before: EvalResult


def local_round(
    model: nn.Module,
    layout: ModelLayout,
    pulled: Blocks,
    personal: Mapping[str, npt.NDArray[Any]],
    train_set: Dataset[Any],
    test_set: Dataset[Any],
    config: TrainConfig,
    seed: int,
    on_step: Callable[[float], object] | None = None,
    train: Trainer = train_local,
) -> LocalRound:
    """Load the pulled model and this client's personal tensors, evaluate, train, diff.

    The delta is taken against the model as loaded (the pulled values in the model's
    dtype), so it holds exactly what training changed. ``train`` trains: ``train_local``,
    or DP-SGD (``fl_client.privacy``).
    """
    load_shared(model, layout, pulled)
    load_personal(model, personal)
    before = evaluate(model, test_set, config.task)
    baseline = shared_blocks(model, layout)
    result = train(model, train_set, config, seed, on_step)
    delta = shared_blocks(model, layout) - baseline
    return LocalRound(
        delta=delta, personal=personal_tensors(model, layout), train=result, before=before
    )
