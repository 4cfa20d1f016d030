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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from fl_client.data import ClientData
from fl_client.errors import ConfigError
from fl_client.hospital_data import load_job_data
from fl_client.scoring import Metrics
from fl_client.table import preprocessing_to_json
from fl_client.training import TrainConfig, evaluate, round_seed, train_local
from hefl_study import StudySpec

__all__ = [
    "ADAPTATION_SEED",
    "PRIVACY_NOTE",
    "Adaptation",
    "adapt_model",
    "adaptation_config",
    "adaptation_rows",
]

PRIVACY_NOTE = (
    "not covered by the study's privacy guarantee: adapted on this hospital's rows without "
    "its noise, for use at this hospital"
)

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

    def to_dict(self, private_study: bool = False) -> dict[str, Any]:
        """The record; ``private_study``: the study has ``[privacy]``, whose guarantee does
        not cover this model (the record says so)."""
        out: dict[str, Any] = {
            "epochs": self.epochs,
            "steps": self.steps,
            "train_rows": self.train_rows,
            "held_out_rows": self.held_out_rows,
            "before": self.before,
            "after": self.after,
            "worse": self.worse,
        }
        if private_study:
            out["privacy"] = PRIVACY_NOTE
        return out


def adaptation_rows(
    spec: StudySpec,
    source: str,
    *,
    site: str | None,
    args: Mapping[str, Any] | None,
    record: str | None,
) -> ClientData:
    """This hospital's rows for ``spec``, split as training splits them. A table must encode
    as ``record`` (the training preprocessing the export carries) does; a data factory's
    rows are the factory's and cannot be checked.

    Raises
    ------
    ConfigError
        The table encodes otherwise than the training record, or ``source`` is not the
        study's kind of data.
    DataError
        The data does not fit the study.
    """
    loaded = load_job_data(spec, source, site=site, args=args)
    if loaded.preprocessing is not None and preprocessing_to_json(loaded.preprocessing) != record:
        raise ConfigError(
            f"{source} does not encode as this hospital's training of job {spec.name!r} did "
            "(its statistics differ from the training record): adapt on the table you "
            "trained the job on"
        )
    return loaded.client_data


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
