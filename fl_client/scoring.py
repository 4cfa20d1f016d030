"""Metrics suited to a study's task, from a model's outputs on held-out rows (sklearn.metrics)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hefl_study import Task

__all__ = ["Metrics", "model_outputs", "score", "score_model"]

Metrics = dict[str, float | int]
Floats = npt.NDArray[np.float64]


def _binary_loss(logits: Floats, y: Floats) -> float:
    # binary cross-entropy with logits, in the stable form torch uses
    return float(np.mean(np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))))


def _softmax_loss(logits: Floats, y: npt.NDArray[np.int64]) -> float:
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_norm - logits[np.arange(len(y)), y]))


def _binary(logits: Floats, y: npt.NDArray[np.int64]) -> Metrics:
    from sklearn import metrics  # here: training alone never loads scikit-learn

    predicted = (logits > 0).astype(np.int64)
    out: Metrics = {
        "loss": _binary_loss(logits, y.astype(np.float64)),
        "accuracy": float(metrics.accuracy_score(y, predicted)),
    }
    with warnings.catch_warnings():
        # one class only: the mean recall over the classes present is still defined (it
        # is that class's recall); sklearn only warns that y_pred has another class
        warnings.simplefilter("ignore", UserWarning)
        out["balanced_accuracy"] = float(metrics.balanced_accuracy_score(y, predicted))
    # the logits rank the rows exactly as the probabilities do, without sigmoid's ties
    if len(np.unique(y)) == 2:
        out["auroc"] = float(metrics.roc_auc_score(y, logits))
    if y.any():
        out["auprc"] = float(metrics.average_precision_score(y, logits))
    return out


def _multiclass(logits: Floats, y: npt.NDArray[np.int64]) -> Metrics:
    from sklearn import metrics  # here: training alone never loads scikit-learn

    if logits.ndim != 2 or logits.shape[1] < 3:
        raise ValueError(f"a multiclass task needs (n, classes) outputs, got {logits.shape}")
    if y.min() < 0 or y.max() >= logits.shape[1]:
        raise ValueError(f"labels must be class indices 0..{logits.shape[1] - 1}")
    predicted = logits.argmax(axis=1)
    return {
        "loss": _softmax_loss(logits, y),
        "accuracy": float(metrics.accuracy_score(y, predicted)),
        "macro_f1": float(metrics.f1_score(y, predicted, average="macro", zero_division=0)),
    }


def _regression(outputs: Floats, y: Floats) -> Metrics:
    from sklearn import metrics  # here: training alone never loads scikit-learn

    return {
        "loss": float(metrics.mean_squared_error(y, outputs)),
        "mae": float(metrics.mean_absolute_error(y, outputs)),
        "rmse": float(metrics.root_mean_squared_error(y, outputs)),
    }


def score(task: Task, outputs: npt.ArrayLike, labels: npt.ArrayLike) -> Metrics:
    """The metrics of ``task`` for a model's outputs on some rows.

    Parameters
    ----------
    task
        The study's task.
    outputs
        The model's raw outputs: one logit per row (``(n,)`` or ``(n, 1)``) for binary,
        ``(n, classes)`` logits for multiclass, one value per row for regression.
    labels
        Class indices (the positive class is 1) or regression targets.

    Returns
    -------
    dict
        ``loss`` (the training loss: binary cross-entropy, cross-entropy or mean squared
        error), ``n_samples``, and binary: ``accuracy``, ``balanced_accuracy``,
        ``auroc``, ``auprc`` (average precision); multiclass: ``accuracy``,
        ``macro_f1``; regression: ``mae``, ``rmse``. A binary prediction is positive
        where the logit is above 0.

    Notes
    -----
    Degenerate held-out rows, as a small hospital may have, do not raise: with one
    class only, ``auroc`` is undefined and left out (and ``balanced_accuracy`` is that
    class's recall); with no positive row, ``auprc`` is undefined and left out. Macro-F1
    averages over the classes present in the labels or the predictions, a class with no
    true or predicted row counting 0.

    Raises
    ------
    ValueError
        No rows, shapes that do not fit the task, or non-finite outputs (a diverged model).
    """
    out = np.asarray(outputs, dtype=np.float64)
    y = np.asarray(labels)
    if task != "multiclass" and out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if len(y) == 0 or y.ndim != 1 or len(out) != len(y):
        raise ValueError(f"need one label per output row, got {out.shape} and {y.shape}")
    if not np.isfinite(out).all():
        raise ValueError("the model's outputs hold NaN or infinity: it has diverged")
    if task != "multiclass" and out.ndim != 1:
        raise ValueError(f"a {task} task needs one output per row, got {out.shape}")
    if task == "binary":
        if not np.isin(y, (0, 1)).all():
            raise ValueError("binary labels must be 0 or 1")
        result = _binary(out, y.astype(np.int64))
    elif task == "multiclass":
        result = _multiclass(out, y.astype(np.int64))
    else:
        result = _regression(out, y.astype(np.float64))
    return {**result, "n_samples": len(y)}


def model_outputs(
    model: nn.Module, dataset: Dataset[Any], batch_size: int = 512
) -> tuple[Floats, npt.NDArray[Any]]:
    """``model``'s raw outputs (float64) on every row of ``dataset`` and the rows' labels."""
    model.eval()
    outputs, labels = [], []
    with torch.no_grad():
        for features, batch_labels in DataLoader(dataset, batch_size=batch_size):
            outputs.append(model(features).double().numpy())
            labels.append(batch_labels.numpy())
    if not outputs:
        raise ValueError("no rows to score")
    return np.concatenate(outputs), np.concatenate(labels)


def score_model(
    model: nn.Module, dataset: Dataset[Any], task: Task, batch_size: int = 512
) -> Metrics:
    """``score`` of ``model`` on every row of ``dataset`` (``(features, label)`` pairs)."""
    return score(task, *model_outputs(model, dataset, batch_size))
