"""Task metrics against values computed by hand, and the degenerate held-out sets."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fl_client.scoring import score, score_model
from hefl_study import TASK_METRICS


def test_binary_metrics_by_hand() -> None:
    logits = [2.0, -1.0, 0.5, -3.0]
    labels = [1, 0, 0, 1]
    result = score("binary", logits, labels)
    # predictions 1, 0, 1, 0: rows 0 and 1 right
    assert result["accuracy"] == 0.5
    # recall of class 1: 1/2 (row 0 of rows 0, 3); of class 0: 1/2 (row 1 of rows 1, 2)
    assert result["balanced_accuracy"] == 0.5
    # positive-negative pairs ranked right: (2 > -1), (2 > 0.5); wrong: (-3 < -1), (-3 < 0.5)
    assert result["auroc"] == 0.5
    # ranked 2 (pos), 0.5, -1, -3 (pos): precision 1/1 at the first positive, 2/4 at the second
    assert result["auprc"] == pytest.approx((1 + 0.5) / 2)
    bce = [math.log1p(math.exp(-2)), math.log1p(math.exp(-1)), math.log1p(math.exp(0.5))]
    bce.append(math.log1p(math.exp(3)))
    assert result["loss"] == pytest.approx(sum(bce) / 4)
    assert result["n_samples"] == 4
    assert set(result) == {*TASK_METRICS["binary"], "n_samples"}


def test_binary_accepts_a_column_of_logits() -> None:
    flat = score("binary", [2.0, -1.0, 0.5, -3.0], [1, 0, 0, 1])
    column = score("binary", [[2.0], [-1.0], [0.5], [-3.0]], [1, 0, 0, 1])
    assert flat == column


def test_multiclass_metrics_by_hand() -> None:
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.5], [0.0, 0.0, 4.0]])
    labels = [0, 1, 2, 2]
    result = score("multiclass", logits, labels)
    # predictions 0, 1, 0, 2: row 2 wrong
    assert result["accuracy"] == 0.75
    # F1 per class: 0 -> P 1/2, R 1 -> 2/3; 1 -> 1; 2 -> P 1, R 1/2 -> 2/3
    assert result["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    expected = [
        math.log(sum(math.exp(v) for v in row)) - row[y]
        for row, y in zip(logits.tolist(), labels, strict=True)
    ]
    assert result["loss"] == pytest.approx(sum(expected) / 4)
    assert set(result) == {*TASK_METRICS["multiclass"], "n_samples"}


def test_regression_metrics_by_hand() -> None:
    result = score("regression", [[1.0], [2.0], [3.0]], [1.0, 3.0, 5.0])
    # errors 0, 1, 2
    assert result["mae"] == pytest.approx(1.0)
    assert result["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert result["loss"] == pytest.approx(5 / 3)
    assert set(result) == {*TASK_METRICS["regression"], "n_samples"}


def test_one_class_only_leaves_auroc_out_without_a_warning() -> None:
    # pytest turns warnings into errors: none may escape
    positives = score("binary", [0.3, -0.2, 1.0], [1, 1, 1])
    assert "auroc" not in positives
    assert positives["auprc"] == 1.0
    assert positives["balanced_accuracy"] == pytest.approx(2 / 3)  # recall of class 1
    negatives = score("binary", [0.3, -0.2, -1.0], [0, 0, 0])
    assert "auroc" not in negatives
    assert "auprc" not in negatives
    assert negatives["accuracy"] == pytest.approx(2 / 3)


def test_large_logits_keep_their_order() -> None:
    # sigmoid(40) == sigmoid(50) == 1.0 in float64: ranking by logits has no such tie
    result = score("binary", [40.0, 50.0, -40.0], [0, 1, 0])
    assert result["auroc"] == 1.0
    assert math.isfinite(result["loss"])


@pytest.mark.parametrize(
    ("task", "outputs", "labels", "message"),
    [
        ("binary", [0.1, float("nan")], [0, 1], "diverged"),
        ("binary", [0.1, 0.2], [0, 2], "0 or 1"),
        ("binary", [0.1, 0.2, 0.3], [0, 1], "one label per output row"),
        ("binary", [], [], "one label per output row"),
        ("multiclass", [[0.1, 0.2]], [0], "needs \\(n, classes\\)"),
        ("multiclass", [[0.1, 0.2, 0.3]], [3], "class indices 0..2"),
        ("regression", [[0.1, 0.2]], [0.0], "one output per row"),
    ],
)
def test_outputs_that_do_not_fit_the_task(
    task: str, outputs: list[object], labels: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        score(task, outputs, labels)  # type: ignore[arg-type]


def test_score_model_runs_the_model_over_the_dataset() -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0]]))
        model.bias.zero_()
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.5, 0.0], [0.0, 3.0]])
    y = torch.tensor([1, 0, 0, 1])
    # logits 2, -1, 0.5, -3: the hand-computed binary case
    result = score_model(model, TensorDataset(x, y), "binary", batch_size=3)
    assert result == score("binary", [2.0, -1.0, 0.5, -3.0], [1, 0, 0, 1])


# -- sklearn.metrics is the definition -------------------------------------------------------
# fl_client.scoring computes the metrics with NumPy (sklearn.metrics' import costs each
# hospital process about a second); these hold every metric to sklearn.metrics' own value.


def _random_rows(seed: int, n: int, tied: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=n)
    if tied:  # few distinct scores: many ties, across the classes too
        scores = np.round(scores, 0)
    labels = (rng.random(n) < rng.uniform(0.05, 0.95)).astype(np.int64)
    return scores, labels


# sets the random draws never give: one class only, every prediction one class, all tied
DEGENERATE = [
    ([0.5, -1.0, 2.0], [0, 0, 0]),
    ([0.5, -1.0, 2.0], [1, 1, 1]),
    ([1.0, 1.0, 1.0, 1.0], [1, 1, 1, 1]),
    ([-2.0, -1.0, -0.5, -3.0], [1, 0, 1, 0]),
    ([2.0, 1.0, 0.5, 3.0], [1, 0, 1, 0]),
    ([0.0, 0.0, 0.0, 0.0], [0, 1, 0, 1]),
    ([1.0, 1.0, -1.0, -1.0], [0, 1, 1, 0]),
    ([0.7], [1]),
    ([-0.7], [0]),
]
BINARY_ROWS = [
    *(
        _random_rows(seed, n=3 + seed * 7, tied=tied)
        for seed in range(40)
        for tied in (False, True)
    ),
    *((np.array(scores), np.array(labels, dtype=np.int64)) for scores, labels in DEGENERATE),
]


@pytest.mark.parametrize(("scores", "labels"), BINARY_ROWS)
def test_binary_metrics_are_sklearns(scores: np.ndarray, labels: np.ndarray) -> None:
    from sklearn import metrics

    result = score("binary", scores, labels)
    predicted = (scores > 0).astype(np.int64)
    assert result["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predicted))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # one class: sklearn warns, and agrees
        expected_balanced = metrics.balanced_accuracy_score(labels, predicted)
    assert result["balanced_accuracy"] == pytest.approx(expected_balanced)
    if len(np.unique(labels)) == 2:
        assert result["auroc"] == pytest.approx(metrics.roc_auc_score(labels, scores))
    else:
        assert "auroc" not in result
    if labels.any():
        expected_ap = metrics.average_precision_score(labels, scores)
        assert result["auprc"] == pytest.approx(expected_ap)
    else:
        assert "auprc" not in result


@pytest.mark.parametrize("seed", range(30))
def test_multiclass_and_regression_metrics_are_sklearns(seed: int) -> None:
    from sklearn import metrics

    rng = np.random.default_rng(seed)
    n, classes = 2 + seed * 5, 3 + seed % 5
    # labels from fewer classes than the outputs at some seeds: a class only predicted
    labels = rng.integers(0, max(1, classes - seed % 3), size=n)
    logits = rng.normal(size=(n, classes))
    result = score("multiclass", logits, labels)
    predicted = logits.argmax(axis=1)
    assert result["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predicted))
    expected_f1 = metrics.f1_score(labels, predicted, average="macro", zero_division=0)
    assert result["macro_f1"] == pytest.approx(expected_f1)

    outputs, targets = rng.normal(size=n), rng.normal(size=n) * 3
    regression = score("regression", outputs, targets)
    assert regression["loss"] == pytest.approx(metrics.mean_squared_error(targets, outputs))
    assert regression["mae"] == pytest.approx(metrics.mean_absolute_error(targets, outputs))
    expected_rmse = metrics.root_mean_squared_error(targets, outputs)
    assert regression["rmse"] == pytest.approx(expected_rmse)


def test_non_finite_regression_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="regression targets must be finite"):
        score("regression", [1.0, 2.0], [math.nan, 1.0])
    with pytest.raises(ValueError, match="regression targets must be finite"):
        score("regression", [1.0, 2.0], [math.inf, 1.0])


def test_scoring_does_not_import_scikit_learn() -> None:
    # the reason the metrics are NumPy: a hospital's process never pays sklearn's import
    code = (
        "import sys; from fl_client.scoring import score; "
        "score('binary', [1.0, -1.0, 0.5], [1, 0, 0]); "
        "score('multiclass', [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [0, 2]); "
        "score('regression', [1.0], [2.0]); "
        "assert not [m for m in sys.modules if m.startswith(('sklearn', 'scipy'))]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
