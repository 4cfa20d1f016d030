"""Built-in models and resolution of a user's model factory.

Every factory is called as ``factory(input_shape=..., n_classes=...)`` and returns a
``torch.nn.Module`` mapping a batch of inputs to logits: one logit for two classes,
``n_classes`` otherwise. The built-ins name their last layer ``head`` so that
``--personal 'head.*'`` keeps it local (FedPer).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fl_client._imports import import_object, is_import_path
from fl_client.errors import ConfigError

__all__ = ["MODELS", "ModelFactory", "build_model", "output_size", "resolve_model"]

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


def build_model(
    factory: ModelFactory, input_shape: tuple[int, ...], n_classes: int, seed: int
) -> nn.Module:
    """Call the factory with torch's generator seeded, so every init is reproducible."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory(input_shape=tuple(input_shape), n_classes=n_classes)
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"the model factory returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model
