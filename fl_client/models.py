"""Built-in models, a user's model factory, and the model a study's spec describes.

Every factory is called as ``factory(input_shape=..., n_classes=..., **args)`` and returns
a ``torch.nn.Module`` mapping a batch of inputs to outputs: one logit for two classes (or
one value for regression), ``n_classes`` otherwise. The built-ins name their last layer
``head`` so that the spec's ``personal = ["head.*"]`` keeps it local (FedPer).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fl_client._imports import call_factory, import_object, is_import_path
from fl_client.errors import ConfigError
from hefl_study import StudySpec

__all__ = [
    "MODELS",
    "ModelFactory",
    "build_model",
    "check_model_outputs",
    "model_from_spec",
    "output_size",
    "resolve_model",
]

ModelFactory = Callable[..., Any]


def output_size(n_classes: int) -> int:
    """One logit for a binary task, one per class otherwise."""
    return 1 if n_classes == 2 else n_classes


class LogisticModel(nn.Module):  # type: ignore[misc]  # torch is untyped here
    """Logistic (softmax) regression on the flattened input."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.head = nn.Linear(math.prod(input_shape), output_size(n_classes))

    def forward(self, x: Any) -> Any:
        return self.head(self.flatten(x))


class MlpModel(nn.Module):  # type: ignore[misc]  # torch is untyped here
    """Two hidden layers of ``hidden`` units with ReLU."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden, output_size(n_classes))

    def forward(self, x: Any) -> Any:
        return self.head(self.body(x))


class SmallCnn(nn.Module):  # type: ignore[misc]  # torch is untyped here
    """Two 3x3 convolutions, a 2x2 max-pool and two dense layers, for small images.

    On sklearn digits (1x8x8, 10 classes) it has 138,698 parameters.
    """

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, hidden: int = 256) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(
                f"the cnn model needs (channels, height, width) input, got {input_shape}"
            )
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.body = nn.Sequential(nn.Linear(32 * (height // 2) * (width // 2), hidden), nn.ReLU())
        self.head = nn.Linear(hidden, output_size(n_classes))

    def forward(self, x: Any) -> Any:
        return self.head(self.body(self.features(x)))


MODELS: dict[str, ModelFactory] = {
    "logistic": LogisticModel,
    "mlp": MlpModel,
    "cnn": SmallCnn,
}


def resolve_model(spec: str) -> ModelFactory:
    """A built-in model's name or a ``pkg.mod:factory`` import path → its factory."""
    if is_import_path(spec):
        factory: ModelFactory = import_object(spec, "model factory")
        return factory
    try:
        return MODELS[spec]
    except KeyError:
        raise ConfigError(
            f"unknown model {spec!r}; built-in: {', '.join(MODELS)}, or 'pkg.mod:factory'"
        ) from None


# torch has one random generator per process: two threads building a model at once would
# interleave their seeded draws (a hospital's initial model then differs from the spec's,
# seen first in a bias drawn after another thread reseeded). Builds take turns.
_BUILD_LOCK = threading.Lock()


def build_model(
    factory: ModelFactory,
    input_shape: tuple[int, ...],
    n_classes: int,
    seed: int,
    *,
    name: str = "model factory",
    **args: Any,
) -> nn.Module:
    """Call the factory with torch's generator seeded, so every init is reproducible.

    Thread-safe against other builds (they take turns on torch's one generator); a
    thread drawing from torch's generator outside a build while one runs (dropout, say)
    still disturbs it, so build models before training starts in other threads.

    Floating-point parameters and buffers are cast to float32 (a factory may build in
    float64): every hospital holds, trains and shares the same float32 model.

    Raises
    ------
    ConfigError
        Naming the factory: it raised, or returned something else than a ``torch.nn.Module``.
    """
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = call_factory(
            factory,
            name,
            "model factory",
            input_shape=tuple(input_shape),
            n_classes=n_classes,
            **args,
        )
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"the model factory {name!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model.float()


def check_model_outputs(
    model: nn.Module, input_shape: tuple[int, ...], n_outputs: int, name: str
) -> None:
    """Refuse a model that does not map a batch of ``input_shape`` to ``(batch, n_outputs)``.

    Raises
    ------
    ConfigError
        Naming the model and both shapes, or what its forward pass raised.
    """
    batch = torch.zeros((2, *input_shape), dtype=torch.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(batch)
    except Exception as exc:  # the user's model: any error is a message
        raise ConfigError(
            f"model {name!r} cannot take the study's input of shape {tuple(input_shape)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape != (2, n_outputs):
        got = f"outputs of shape {shape[1:]}" if shape else f"a {type(out).__name__}"
        raise ConfigError(
            f"model {name!r} maps an input of shape {tuple(input_shape)} to {got} per "
            f"example; the study needs ({n_outputs},)"
        )


def model_from_spec(spec: StudySpec) -> nn.Module:
    """The study's initial model: the same weights at every hospital.

    Built from ``[model]`` (a built-in or a factory, its ``args``, seeded with its
    ``seed``) for the input shape and outputs ``[data]`` gives, then checked: a batch of
    examples of the study's shape must give ``(batch, outputs)``.

    Raises
    ------
    ConfigError
        The factory cannot be imported or called, or the model does not fit the study.
    """
    name = spec.model.name or spec.model.factory or ""
    factory = resolve_model(name)
    model = build_model(
        factory,
        spec.data.example_shape,
        spec.data.n_classes,
        spec.model.seed,
        name=name,
        **spec.model.args,
    )
    check_model_outputs(model, spec.data.example_shape, spec.data.n_outputs, name)
    return model
