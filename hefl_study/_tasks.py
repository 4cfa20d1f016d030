"""The learning tasks a study can declare and the metrics each one reports."""

from __future__ import annotations

import math
from typing import Literal

__all__ = ["METRIC_GOALS", "TASK_METRICS", "Task", "metric_reached"]

Task = Literal["binary", "multiclass", "regression"]

# Every metric a client reports for a task, besides n_samples; the names are the keys of
# the metrics dict (fl_client.scoring) and what [stop] metric may name.
TASK_METRICS: dict[Task, tuple[str, ...]] = {
    "binary": ("loss", "accuracy", "balanced_accuracy", "auroc", "auprc"),
    "multiclass": ("loss", "accuracy", "macro_f1"),
    "regression": ("loss", "mae", "rmse"),
}

# "max": higher is better and the value lies in [0, 1]; "min": lower is better, >= 0.
METRIC_GOALS: dict[str, Literal["max", "min"]] = {
    "loss": "min",
    "accuracy": "max",
    "balanced_accuracy": "max",
    "auroc": "max",
    "auprc": "max",
    "macro_f1": "max",
    "mae": "min",
    "rmse": "min",
}


def metric_reached(metric: str, target: float, observed: float) -> bool:
    """Whether ``observed`` meets a ``[stop]`` target: at least it, or at most it for a loss.

    Parameters
    ----------
    metric
        A name of ``METRIC_GOALS``.
    target
        The spec's ``stop.value``.
    observed
        The pooled value (NaN never reaches a target).
    """
    if not math.isfinite(observed):
        return False
    if METRIC_GOALS[metric] == "max":
        return observed >= target
    return observed <= target
