"""Model registry and deterministic local training."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import crypto
from fl_client import ClientData, ConfigError, TrainingError
from fl_client.models import MODELS, build_model, resolve_model
from fl_client.training import (
    PlainSgd,
    TrainConfig,
    _local_optimizer,
    evaluate,
    local_round,
    personal_tensors,
    planned_steps,
    shared_blocks,
    train_local,
    train_loss,
)
from hefl_study import TASK_METRICS, Task


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(
    ("name", "shape", "classes", "outputs"),
    [
        ("logistic", (13,), 2, 1),
        ("mlp", (30,), 2, 1),
        ("mlp", (1, 8, 8), 10, 10),
        ("cnn", (1, 8, 8), 10, 10),
    ],
)
def test_built_in_models_give_one_logit_per_class_or_one_for_binary(
    name: str, shape: tuple[int, ...], classes: int, outputs: int
) -> None:
    model = build_model(resolve_model(name), shape, classes, seed=0)
    assert model(torch.zeros(4, *shape)).shape == (4, outputs)
    assert "head.weight" in model.state_dict()


def test_cnn_on_digits_is_a_model_where_block_sparsity_matters() -> None:
    model = build_model(MODELS["cnn"], (1, 8, 8), 10, seed=0)
    layout = crypto.build_layout(model.state_dict(), crypto.get_profile("n4096-s40").block_size)
    assert layout.total_params == 138_698
    assert layout.n_blocks == 34


def test_seeded_init_is_reproducible_and_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(MODELS["mlp"], (30,), 2, seed=7)
    after = torch.rand(1)
    b = build_model(MODELS["mlp"], (30,), 2, seed=7)
    c = build_model(MODELS["mlp"], (30,), 2, seed=8)
    assert torch.equal(after, expected_next)
    assert all(torch.equal(x, y) for x, y in zip(_params(a), _params(b), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(_params(a), _params(c), strict=True))


def test_unknown_or_wrong_model_factories_are_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="built-in"):
        resolve_model("resnet")
    (tmp_path / "my_models.py").write_text(
        textwrap.dedent(
            """
            import torch
            def tiny(input_shape, n_classes):
                return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[0], 1))
            def not_a_module(input_shape, n_classes):
                return "model"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        model = build_model(resolve_model("my_models:tiny"), (5,), 2, seed=0)
        assert sum(p.numel() for p in model.parameters()) == 6
        with pytest.raises(ConfigError, match=r"not a torch\.nn\.Module"):
            build_model(resolve_model("my_models:not_a_module"), (5,), 2, seed=0)
        with pytest.raises(ConfigError, match="cannot import"):
            resolve_model("no_such_module_here:factory")
    finally:
        sys.modules.pop("my_models", None)


def test_training_is_deterministic_given_the_seed(cancer_sites: list[ClientData]) -> None:
    data = cancer_sites[0]
    config = TrainConfig(epochs=2, batch_size=8, lr=0.05)
    runs = []
    for seed in (0, 0, 1):
        model = build_model(MODELS["mlp"], data.input_shape, data.n_classes, seed=0)
        result = train_local(model, data.train, config, seed=seed)
        runs.append((_params(model), result))
    assert all(torch.equal(x, y) for x, y in zip(runs[0][0], runs[1][0], strict=True))
    assert runs[0][1] == runs[1][1]
    assert not all(torch.equal(x, y) for x, y in zip(runs[0][0], runs[2][0], strict=True))
    assert runs[0][1].steps == planned_steps(data.train, config)


@pytest.mark.parametrize("name", ["logistic", "mlp"])
def test_plain_sgd_steps_exactly_as_torch_optim_sgd(
    name: str, cancer_sites: list[ClientData]
) -> None:
    # Prepare: the same model and batches, trained by torch.optim.SGD and by PlainSgd
    data = cancer_sites[0]
    models = [build_model(MODELS[name], data.input_shape, data.n_classes, seed=3) for _ in "ab"]
    optimizers = [
        torch.optim.SGD(models[0].parameters(), lr=0.05),
        PlainSgd(models[1].parameters(), lr=0.05),
    ]
    features, labels = data.train.tensors

    # Execute: 20 steps of 16 rows each
    for step in range(20):
        rows = slice(16 * step % len(labels), 16 * step % len(labels) + 16)
        for model, optimizer in zip(models, optimizers, strict=True):
            optimizer.zero_grad()
            train_loss(model(features[rows]), labels[rows], None).backward()
            optimizer.step()

    # Assert: bit for bit, and train_local takes this path without loading torch._dynamo
    assert all(
        torch.equal(x, y) for x, y in zip(_params(models[0]), _params(models[1]), strict=True)
    )
    assert isinstance(_local_optimizer(models[0], TrainConfig(lr=0.1)), PlainSgd)
    assert not isinstance(_local_optimizer(models[0], TrainConfig(momentum=0.9)), PlainSgd)
    assert not isinstance(_local_optimizer(models[0], TrainConfig(optimizer="adam")), PlainSgd)


def test_a_client_that_trains_with_sgd_never_imports_torch_dynamo() -> None:
    code = textwrap.dedent(
        """
        import sys
        from fl_client.data import load_client_data
        from fl_client.models import MODELS, build_model
        from fl_client.training import TrainConfig, train_local
        data = load_client_data("breast-cancer", "0", n_sites=3)
        model = build_model(MODELS["logistic"], data.input_shape, data.n_classes, 0)
        train_local(model, data.train, TrainConfig(steps=5, lr=0.1), 0)
        print("torch._dynamo" in sys.modules)
        """
    )
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "False"


def test_steps_override_epochs_and_training_improves_the_model(
    cancer_sites: list[ClientData],
) -> None:
    data = cancer_sites[1]
    model = build_model(MODELS["logistic"], data.input_shape, data.n_classes, seed=0)
    before = evaluate(model, data.test)
    result = train_local(model, data.train, TrainConfig(steps=60, batch_size=16, lr=0.1), seed=0)
    after = evaluate(model, data.test)
    assert result.steps == 60
    assert after.loss < before.loss
    assert after.accuracy > 0.85
    assert after.n_samples == len(data.test)


def test_local_round_delta_covers_shared_tensors_and_keeps_personal_ones_apart(
    cancer_sites: list[ClientData],
) -> None:
    data = cancer_sites[0]
    model = build_model(MODELS["mlp"], data.input_shape, data.n_classes, seed=0)
    layout = crypto.build_layout(model.state_dict(), 2048, personal=["head.*"])
    pulled = shared_blocks(model, layout)
    personal = personal_tensors(model, layout)
    assert set(personal) == {"head.weight", "head.bias"}

    result = local_round(
        model, layout, pulled, personal, data.train, data.test, TrainConfig(), seed=0
    )

    assert np.array_equal(pulled + result.delta, shared_blocks(model, layout))
    assert np.abs(result.delta).max() > 0
    assert not np.array_equal(result.personal["head.weight"], personal["head.weight"])


@pytest.mark.parametrize(
    ("task", "outputs", "labels", "metrics"),
    [
        (
            "binary",
            1,
            torch.tensor([0, 1] * 20),
            {"accuracy", "balanced_accuracy", "auroc", "auprc"},
        ),
        ("multiclass", 3, torch.arange(40) % 3, {"accuracy", "macro_f1"}),
        ("regression", 1, torch.linspace(-1, 1, 40, dtype=torch.float32), {"mae", "rmse"}),
    ],
)
def test_each_task_trains_on_its_loss_and_reports_its_metrics(
    task: Task, outputs: int, labels: torch.Tensor, metrics: set[str]
) -> None:
    # Prepare: a feature that carries the label
    x = torch.stack([labels.float(), torch.ones(40)], dim=1)
    data = TensorDataset(x, labels)
    model = torch.nn.Linear(2, outputs)
    config = TrainConfig(steps=60, batch_size=8, lr=0.1, task=task)
    before = evaluate(model, data, task)

    # Execute
    train_local(model, data, config, seed=0)
    after = evaluate(model, data, task)

    # Assert
    assert (
        set(after.metrics)
        == {"n_samples", "loss", *metrics}
        == set(TASK_METRICS[task]) | {"n_samples"}
    )
    assert after.n_samples == 40
    assert after.loss < before.loss


def test_a_diverged_model_is_a_training_error_not_a_traceback() -> None:
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    data = TensorDataset(torch.ones(4, 2), torch.tensor([0, 1, 0, 1]))

    with pytest.raises(TrainingError, match="diverged"):
        evaluate(model, data, "binary")
