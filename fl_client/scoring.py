"""Metrics suited to a study's task, from a model's outputs on held-out rows (NumPy, as sklearn)."""

# Why not sklearn.metrics itself: importing it imports SciPy's stats, about 1.1 s of CPU in
# every client process, the largest cost after torch between a hospital's start and its
# first update (four hospitals on two cores: the first update came 2 s later). Each
# function below is sklearn.metrics' definition, and tests/fl_client/test_scoring.py holds
# every one to sklearn.metrics' value on random rows, ties and one-class sets included.

from __future__ import annotations

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


def _balanced_accuracy(y: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64]) -> float:
    # sklearn's balanced_accuracy_score: the mean recall over the classes in the labels
    return float(np.mean([np.mean(predicted[y == c] == c) for c in np.unique(y)]))


def _auroc(y: npt.NDArray[np.int64], scores: Floats) -> float:
    # sklearn's roc_auc_score (the area under the ROC curve through every distinct score)
    # is the Mann-Whitney statistic: the share of (positive, negative) pairs the scores
    # order right, a tie counting one half. Average ranks count the ties so.
    order = np.argsort(scores, kind="mergesort")
    ranked = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    positives = int(y.sum())
    negatives = len(y) - positives
    u = ranks[y == 1].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def _average_precision(y: npt.NDArray[np.int64], scores: Floats) -> float:
    # sklearn's average_precision_score: the sum over the distinct scores, highest first,
    # of the precision at that threshold times the recall it adds (no interpolation)
    order = np.argsort(-scores, kind="mergesort")
    ranked, hits = scores[order], y[order]
    last = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), len(ranked) - 1]
    true_positives = np.cumsum(hits)[last]
    precision = true_positives / (last + 1.0)
    recall_added = np.diff(np.r_[0, true_positives]) / true_positives[-1]
    return float(np.sum(precision * recall_added))


def _binary(logits: Floats, y: npt.NDArray[np.int64]) -> Metrics:
    predicted = (logits > 0).astype(np.int64)
    out: Metrics = {
        "loss": _binary_loss(logits, y.astype(np.float64)),
        "accuracy": float(np.mean(predicted == y)),
        # one class only: the mean recall over the classes present is that class's recall
        "balanced_accuracy": _balanced_accuracy(y, predicted),
    }
    # the logits rank the rows exactly as the probabilities do, without sigmoid's ties
    if len(np.unique(y)) == 2:
        out["auroc"] = _auroc(y, logits)
    if y.any():
        out["auprc"] = _average_precision(y, logits)
    return out


def _macro_f1(y: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64]) -> float:
    # sklearn's f1_score(average="macro"): over the classes in the labels or the
    # predictions, each with a true or predicted row, so 2tp + fp + fn > 0
    scores = []
    for c in np.union1d(y, predicted):
        true_positives = np.sum((predicted == c) & (y == c))
        scores.append(2 * true_positives / (np.sum(predicted == c) + np.sum(y == c)))
    return float(np.mean(scores))


def _multiclass(logits: Floats, y: npt.NDArray[np.int64]) -> Metrics:
    if logits.ndim != 2 or logits.shape[1] < 3:
        raise ValueError(f"a multiclass task needs (n, classes) outputs, got {logits.shape}")
    if y.min() < 0 or y.max() >= logits.shape[1]:
        raise ValueError(f"labels must be class indices 0..{logits.shape[1] - 1}")
    predicted = logits.argmax(axis=1)
    return {
        "loss": _softmax_loss(logits, y),
        "accuracy": float(np.mean(predicted == y)),
        "macro_f1": _macro_f1(y, predicted),
    }


def _regression(outputs: Floats, y: Floats) -> Metrics:
    squared = float(np.mean((outputs - y) ** 2))
    return {
        "loss": squared,
        "mae": float(np.mean(np.abs(outputs - y))),
        "rmse": float(np.sqrt(squared)),
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
        No rows, shapes that do not fit the task, non-finite outputs (a diverged model),
        or non-finite regression targets.
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
    if task == "regression" and not np.isfinite(y.astype(np.float64)).all():
        raise ValueError("regression targets must be finite numbers")
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
