"""Sample-level differential privacy at a hospital: DP-SGD with Opacus, a durable accountant.

A study's ``[privacy]`` section (``hefl_study.PrivacySpec``) makes every hospital train
with DP-SGD: each example's gradient clipped to ``max_grad_norm``, Gaussian noise added
to every batch's sum, batches drawn by Poisson sampling. Each hospital accounts for its
own rows with its own accountant (Opacus' RDP, PRV or GDP), whose history is kept in the
job's state directory (``JobState.save_privacy``) before an update leaves: a retrained
round, a restart or a kill -9 never forgets a spent step. Before each round the hospital
asks whether one more round keeps it within its ε; when it does not, it stops.

Noise and batch sampling draw from a generator seeded with fresh OS randomness (the
study's seeds are public: noise derived from them would protect nothing). Opacus'
``secure_mode`` (a CSPRNG) would need ``torchcsprng``, which is not used here.
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from opacus import PrivacyEngine  # type: ignore[import-untyped]  # no type information
from opacus.accountants import create_accountant  # type: ignore[import-untyped]
from opacus.accountants.utils import get_noise_multiplier  # type: ignore[import-untyped]
from opacus.utils.module_utils import trainable_modules  # type: ignore[import-untyped]
from opacus.validators import ModuleValidator  # type: ignore[import-untyped]
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fl_client.errors import ConfigError, PrivacyBudgetSpentError
from fl_client.state import PrivacyLedger
from fl_client.training import (
    TrainConfig,
    TrainResult,
    new_optimizer,
    planned_steps,
    train_loss,
)
from hefl_study import PrivacySpec

__all__ = ["HospitalPrivacy", "check_private_model"]

# An accountant's ε for the same history may differ in its last digits between a plan
# and a recount (PRV's numerical bounds): a round that fits within this is not refused.
_EPSILON_SLACK = 1e-6


def check_private_model(model: nn.Module) -> None:
    """Refuse a model that DP-SGD cannot train, naming its first such layer.

    Opacus' ``ModuleValidator`` knows which layers break per-example gradients (batch
    normalization mixes the examples of a batch, for one); it does not say where they
    are, so each trainable layer is checked by name.

    Raises
    ------
    ConfigError
        The layer's name and type, and Opacus' reason.
    """
    was_training = model.training
    model.train()  # Opacus' validators expect a model in training mode
    try:
        for name, layer in trainable_modules(model):
            validator = ModuleValidator.VALIDATORS.get(type(layer))
            problems = validator(layer) if validator is not None else []
            if problems:
                raise ConfigError(
                    f"the study's [privacy] needs a model Opacus can train with DP-SGD, but "
                    f"layer {name or '(the model)'!r} ({type(layer).__name__}) cannot be: "
                    f"{_first_sentence(str(problems[0]))} (Opacus' ModuleValidator.fix "
                    "replaces such layers)"
                )
    finally:
        model.train(was_training)


def _first_sentence(text: str) -> str:
    head, dot, _ = text.partition(". ")
    return head + dot.strip()


@dataclass(frozen=True)
class _Plan:
    sample_rate: float
    steps_per_round: int
    noise_multiplier: float


class HospitalPrivacy:
    """One hospital's DP-SGD on one job: the noise it trains with and what it has spent.

    Parameters
    ----------
    spec
        The study's ``[privacy]``.
    train_set, config
        This hospital's training rows and the study's local training: they fix the
        sampling rate (one over the batches of an epoch, as Opacus samples) and the steps
        of a round.
    ledger
        The accountant's history kept in the state directory, or ``None`` at the start.
    seed
        Seed of the noise and batch sampling, for reproducible benchmarks only; ``None``
        (the default) takes fresh OS randomness every round.
    """

    def __init__(
        self,
        spec: PrivacySpec,
        train_set: Dataset[Any],
        config: TrainConfig,
        ledger: PrivacyLedger | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        rows = len(train_set)
        if rows == 0:
            raise ConfigError("no training rows: differential privacy needs at least one")
        if ledger is not None and ledger.accountant != spec.accountant:
            raise ConfigError(
                f"this hospital's privacy ledger was kept by the {ledger.accountant!r} "
                f"accountant, the study now names {spec.accountant!r}"
            )
        if spec.level != "sample" or spec.epsilon is None:
            raise ConfigError('DP-SGD takes a [privacy] of level = "sample", with epsilon')
        self.spec = spec
        self._target: float = spec.epsilon
        self._seed = seed
        self._accountant = create_accountant(spec.accountant)
        if ledger is not None:
            self._accountant.history = [tuple(entry) for entry in ledger.history]
        self._rounds = 0 if ledger is None else ledger.rounds
        sample_rate = 1.0 / math.ceil(rows / config.batch_size)
        steps = planned_steps(train_set, config)
        self.plan = _Plan(sample_rate, steps, self._noise(spec, self._target, sample_rate, steps))

    @staticmethod
    def _noise(spec: PrivacySpec, target: float, sample_rate: float, steps: int) -> float:
        if spec.noise_multiplier is not None:
            return spec.noise_multiplier
        assert spec.rounds is not None  # the spec holds exactly one of the two
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # RDP's "optimal order is the largest alpha"
            return float(
                get_noise_multiplier(
                    target_epsilon=target,
                    target_delta=spec.delta,
                    sample_rate=sample_rate,
                    steps=spec.rounds * steps,
                    accountant=spec.accountant,
                )
            )

    @property
    def rounds(self) -> int:
        """Rounds trained with DP-SGD at this hospital (every one counted, sent or not)."""
        return self._rounds

    def epsilon(self) -> float:
        """The ε spent so far, at the study's δ (0 before the first round)."""
        return self._epsilon_of(self._accountant.history)

    def epsilon_after_round(self) -> float:
        """The ε one more round would take this hospital to."""
        plan = self.plan
        history = [*self._accountant.history, (plan.noise_multiplier, plan.sample_rate, 0)]
        sigma, rate, steps = history[-1]
        history[-1] = (sigma, rate, steps + plan.steps_per_round)
        return self._epsilon_of(history)

    def _epsilon_of(self, history: list[tuple[float, float, int]]) -> float:
        if not history:
            return 0.0
        accountant = create_accountant(self.spec.accountant)
        accountant.history = list(history)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # RDP's "optimal order is the largest alpha"
            return float(accountant.get_epsilon(delta=self.spec.delta))

    def require_budget(self, job: str) -> None:
        """Return if one more round fits in the budget.

        Raises
        ------
        PrivacyBudgetSpentError
            It does not: what was spent, what one more round would reach.
        """
        after = self.epsilon_after_round()
        if after <= self._target + _EPSILON_SLACK:
            return
        raise PrivacyBudgetSpentError(
            f"this hospital has spent its privacy budget on job {job!r}: ε = "
            f"{self.epsilon():.3g} of {self._target:g} (δ = {self.spec.delta:g}) after "
            f"{self._rounds} rounds, and one more would reach ε = {after:.3g}; it sends "
            "nothing more to this job"
        )

    def ledger(self) -> PrivacyLedger:
        """What to keep in the state directory: the accountant's history, the rounds."""
        history = tuple(
            (float(sigma), float(rate), int(steps))
            for sigma, rate, steps in self._accountant.history
        )
        return PrivacyLedger(accountant=self.spec.accountant, history=history, rounds=self._rounds)

    def report(self) -> dict[str, float]:
        """What the hospital tells the server: the ε spent, at δ, of its target."""
        return {
            "epsilon": self.epsilon(),
            "delta": self.spec.delta,
            "target_epsilon": self._target,
        }

    def train(
        self,
        model: nn.Module,
        dataset: Dataset[Any],
        config: TrainConfig,
        seed: int,
        on_step: Callable[[float], object] | None = None,
    ) -> TrainResult:
        """One round of DP-SGD on ``model`` in place, counted by the accountant.

        ``seed`` (the round's public seed, as ``train_local`` takes it) is not used: the
        noise and the Poisson sampling must be unpredictable to anyone who reads the spec.
        Every step counts, including one on an empty Poisson batch (noise only).
        """
        del seed
        generator = torch.Generator().manual_seed(
            self._seed + self._rounds if self._seed is not None else secrets.randbits(63)
        )
        loader = DataLoader(dataset, batch_size=config.batch_size, generator=generator)
        optimizer = new_optimizer(model, config)
        with warnings.catch_warnings():
            # "Secure RNG turned off": the generator above is seeded from OS randomness
            warnings.simplefilter("ignore")
            engine = PrivacyEngine(accountant=self.spec.accountant)
            engine.accountant.history = list(self._accountant.history)
            model.train()
            hooks, dp_optimizer, dp_loader = engine.make_private(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=self.plan.noise_multiplier,
                max_grad_norm=self.spec.max_grad_norm,
                noise_generator=generator,
                wrap_model=False,
            )
        try:
            with warnings.catch_warnings():
                # Opacus' per-example hooks fire on the first layer, whose input needs no
                # gradient; torch says so on every step
                warnings.filterwarnings("ignore", "Full backward hook is firing")
                steps, losses = self._steps(model, dp_optimizer, dp_loader, config, on_step)
        finally:
            hooks.cleanup()
            model.eval()
        self._accountant.history = list(engine.accountant.history)
        self._rounds += 1
        mean_loss = sum(losses) / len(losses) if losses else math.nan
        return TrainResult(steps=steps, mean_loss=mean_loss, n_samples=len(dataset))

    def _steps(
        self,
        model: nn.Module,
        optimizer: Any,
        loader: DataLoader[Any],
        config: TrainConfig,
        on_step: Callable[[float], object] | None,
    ) -> tuple[int, list[float]]:
        total = self.plan.steps_per_round
        steps, losses = 0, []
        while steps < total:
            for features, labels in loader:
                optimizer.zero_grad()
                if len(features):
                    loss = train_loss(model(features), labels, config.task)
                    loss.backward()
                    losses.append(float(loss.detach()))
                optimizer.step()
                steps += 1
                if on_step is not None:
                    on_step(losses[-1] if losses else math.nan)
                if steps >= total:
                    break
        return steps, losses
