"""The shared model adapted to this hospital's rows before it is taken home (fine-tuning).

One shared model is a compromise between the hospitals, and a hospital whose rows
differ from the others' can score it below a model trained on its rows alone: the big,
slow hospital of ``python -m benchmarks.flower``'s big-slow case does. Local adaptation
(Yu, Bagdasaryan and Shmatikov, "Salvaging federated learning by local adaptation",
2020) continues the study's own local training (its optimizer, learning rate, batch
size and task) for a number of epochs on this hospital's training rows, starting from
the shared model, and scores both models on this hospital's held-out rows so the
hospital can choose.

It happens here only: nothing is sent, the job's state (journal, residual, personal
tensors, privacy accountant) is not touched, and the study's privacy noise does not
cover the adapted model: it is trained on this hospital's rows in the clear.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from fl_client.data import ClientData
from fl_client.scoring import Metrics
from fl_client.training import TrainConfig, evaluate, round_seed, train_local

__all__ = ["ADAPTATION_SEED", "Adaptation", "adapt_model", "adaptation_config"]

# the batch order of an adaptation: round_seed(ADAPTATION_SEED, model version), so the
# same version adapted on the same rows gives the same model
ADAPTATION_SEED = 0x0ADA


@dataclass(frozen=True)
class Adaptation:
    """What an adaptation did, as ``export.json`` records it.

    Attributes
    ----------
    before, after
        The shared and the adapted model on the held-out rows (``None``: there are none).
    """

    epochs: int
    steps: int
    train_rows: int
    held_out_rows: int
    before: Metrics | None
    after: Metrics | None

    @property
    def worse(self) -> bool:
        """The adapted model's held-out loss is above the shared model's."""
        if self.before is None or self.after is None:
            return False
        return float(self.after["loss"]) > float(self.before["loss"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "steps": self.steps,
            "train_rows": self.train_rows,
            "held_out_rows": self.held_out_rows,
            "before": self.before,
            "after": self.after,
            "worse": self.worse,
            "privacy": "not covered by the study's privacy noise: trained on local rows",
        }


def adaptation_config(config: TrainConfig, epochs: int) -> TrainConfig:
    """The study's local training run for ``epochs`` epochs instead of its steps."""
    return replace(config, epochs=epochs, steps=None)


def adapt_model(
    model: nn.Module,
    data: ClientData,
    config: TrainConfig,
    epochs: int,
    *,
    version: int,
    on_step: Callable[[float], object] | None = None,
) -> Adaptation:
    """Train ``model`` in place for ``epochs`` epochs of ``config`` on ``data.train``
    (its ``steps`` ignored), scoring it on ``data.test`` before and after.

    Raises
    ------
    ValueError
        ``epochs`` is below 1, or there are no training rows.
    TrainingError
        The adapted model diverged (its outputs hold NaN or infinity).
    """
    if epochs < 1:
        raise ValueError(f"an adaptation needs at least 1 epoch, not {epochs}")
    held_out = len(data.test)

    def score() -> Metrics | None:
        return evaluate(model, data.test, config.task).to_metrics() if held_out else None

    before = score()
    result = train_local(
        model,
        data.train,
        adaptation_config(config, epochs),
        round_seed(ADAPTATION_SEED, version),
        on_step,
    )
    return Adaptation(
        epochs=epochs,
        steps=result.steps,
        train_rows=result.n_samples,
        held_out_rows=held_out,
        before=before,
        after=score(),
    )
