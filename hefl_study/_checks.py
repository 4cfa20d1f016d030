"""Checks across the fields of a study spec, each problem with its exact location."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hefl_study._errors import Problem
from hefl_study._tasks import METRIC_GOALS, TASK_METRICS, Task

if TYPE_CHECKING:
    from hefl_study._spec import (
        CommunicationSpec,
        DataSpec,
        ModelSpec,
        ServerSpec,
        StopSpec,
        StudySpec,
        TrainingSpec,
    )

__all__ = [
    "BUILTIN_MODEL_ARGS",
    "check_communication",
    "check_data",
    "check_model",
    "check_server",
    "check_stop",
    "check_study",
    "check_training",
]

# The keyword arguments fl_client.models' built-ins take besides input_shape, n_classes.
BUILTIN_MODEL_ARGS: dict[str, tuple[str, ...]] = {
    "logistic": (),
    "mlp": ("hidden",),
    "cnn": ("hidden",),
}
_RESERVED_ARGS = ("input_shape", "n_classes")


def _duplicates(at: str, values: Sequence[str], what: str) -> list[Problem]:
    seen: dict[str, int] = {}
    problems = []
    for i, value in enumerate(values):
        if value in seen:
            problems.append(
                Problem(f"{at}[{i}]", f"{what} {value!r} is listed twice (also at [{seen[value]}])")
            )
        seen.setdefault(value, i)
    return problems


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def check_model(model: ModelSpec, data: DataSpec | None) -> list[Problem]:
    """``[model]``: a name XOR a factory, arguments the built-in takes, a tabular input."""
    problems = []
    if model.name is not None and model.factory is not None:
        problems.append(Problem("model", "give either name or factory, not both"))
    elif model.name is None and model.factory is None:
        problems.append(
            Problem(
                "model",
                "give name (a built-in model: logistic, mlp) or factory (an import path "
                "'package.module:name')",
            )
        )
    for key, value in model.args.items():
        at = f"model.args.{key}"
        if key in _RESERVED_ARGS:
            problems.append(Problem(at, f"{key} is set by hefl from [data]; remove it"))
        elif model.name is not None and key not in BUILTIN_MODEL_ARGS[model.name]:
            known = BUILTIN_MODEL_ARGS[model.name]
            takes = f"it takes: {', '.join(known)}" if known else "it takes none"
            problems.append(
                Problem(at, f"the built-in model {model.name!r} has no argument {key!r}; {takes}")
            )
        elif key == "hidden" and model.name is not None and not (type(value) is int and value >= 1):
            problems.append(Problem(at, f"must be a positive integer, not {value!r}"))
        if not _finite(value):
            problems.append(Problem(at, "must not hold nan or inf"))
    if model.name == "cnn" and data is not None and data.input_shape is not None:
        if len(data.input_shape) != 3:
            problems.append(
                Problem(
                    "model.name",
                    "cnn needs image input (channels, height, width), but data.input_shape "
                    f"has {len(data.input_shape)} dimensions",
                )
            )
    elif model.name == "cnn" and data is not None:
        problems.append(
            Problem(
                "model.name",
                "cnn needs image input (channels, height, width), but a table gives a flat "
                f"row of {data.input_width} values: use logistic, mlp or a factory",
            )
        )
    return problems


def _check_values(
    at: str, values: Sequence[str], tokens: Sequence[str], what: str
) -> list[Problem]:
    problems = _duplicates(at, values, what)
    for i, value in enumerate(values):
        if value in tokens:
            problems.append(
                Problem(
                    f"{at}[{i}]",
                    f"{value!r} is also a missing-value token, so it is "
                    "ambiguous; remove it from missing_values or rename it",
                )
            )
    return problems


def check_data(data: DataSpec) -> list[Problem]:
    """``[data]``: features XOR input_shape; for a table, unique columns, label apart,
    categories; classes that fit the task."""
    if data.input_shape is not None:
        if data.features:
            return [
                Problem(
                    "data.input_shape",
                    "give features (hospitals train on a table) or input_shape (hospitals "
                    "bring their own data through a factory), not both",
                )
            ]
        return _check_classes(data)
    if not data.features:
        return [
            Problem(
                "data.features",
                "give the table's features ([[data.features]] with name and type), or "
                "input_shape for data that hospitals load through a factory",
            )
        ]
    problems = [
        Problem(f"{p.location}.name", p.message)
        for p in _duplicates("data.features", [f.name for f in data.features], "feature")
    ]
    if data.label is None:
        problems.append(Problem("data.label", "a table needs its label column"))
    features = {f.name: i for i, f in enumerate(data.features)}
    if data.label in features:
        problems.append(
            Problem(
                "data.label",
                f"{data.label!r} is also data.features[{features[data.label]}]; "
                "the label cannot be an input",
            )
        )
    problems += _duplicates("data.ignore", data.ignore, "column")
    for i, column in enumerate(data.ignore):
        if column == data.label:
            problems.append(Problem(f"data.ignore[{i}]", f"{column!r} is the label"))
        elif column in features:
            problems.append(
                Problem(f"data.ignore[{i}]", f"{column!r} is data.features[{features[column]}]")
            )
    for i, f in enumerate(data.features):
        at = f"data.features[{i}]"
        if f.type == "categorical" and f.categories is None:
            problems.append(
                Problem(
                    f"{at}.categories",
                    "a categorical feature needs its categories (in one-hot order)",
                )
            )
        elif f.type == "numeric" and f.categories is not None:
            problems.append(
                Problem(
                    f"{at}.categories",
                    "only a categorical feature has "
                    'categories; remove them or set type = "categorical"',
                )
            )
        elif f.categories is not None:
            problems += _check_values(
                f"{at}.categories", f.categories, f.missing_values, "category"
            )
    problems += _check_classes(data)
    return problems


def _check_classes(data: DataSpec) -> list[Problem]:
    if data.task == "regression":
        if data.classes is not None:
            return [Problem("data.classes", "a regression task has no classes; remove them")]
        return []
    n = len(data.classes or ())
    if data.task == "binary" and n != 2:
        return [
            Problem(
                "data.classes",
                "a binary task needs exactly 2 classes (the second is "
                f"the positive class), got {n}",
            )
        ]
    if data.task == "multiclass" and n < 3:
        hint = '; use task = "binary" for 2' if n == 2 else ""
        return [
            Problem("data.classes", f"a multiclass task needs at least 3 classes, got {n}{hint}")
        ]
    return _check_values("data.classes", data.classes or (), data.missing_values, "class")


def check_training(training: TrainingSpec) -> list[Problem]:
    """``[training]``: one of epochs and steps; momentum only for sgd."""
    problems = []
    if training.local_epochs is not None and training.local_steps is not None:
        problems.append(Problem("training", "give local_epochs or local_steps, not both"))
    if training.optimizer != "sgd" and training.momentum != 0:
        problems.append(
            Problem(
                "training.momentum",
                f'momentum applies to optimizer = "sgd" only, not {training.optimizer!r}',
            )
        )
    return problems


def check_communication(communication: CommunicationSpec) -> list[Problem]:
    """``[communication]``: a block fraction below 1 exactly when blocks are chosen."""
    problems = []
    kind, fraction = communication.compression, communication.block_fraction
    if kind == "dense" and fraction is not None:
        problems.append(
            Problem(
                "communication.block_fraction",
                "dense sends every block; remove "
                'block_fraction or choose compression = "top-k" or "random-k"',
            )
        )
    elif kind != "dense" and (fraction is None or fraction >= 1):
        got = "none is given" if fraction is None else "1 sends every block: use dense"
        problems.append(
            Problem(
                "communication.block_fraction",
                f"{kind} needs a block_fraction below 1 (the share of blocks sent); {got}",
            )
        )
    problems += _duplicates("communication.personal", communication.personal, "pattern")
    return problems


def check_server(server: ServerSpec) -> list[Problem]:
    """``[server]``: only the parameters the staleness kind has."""
    problems = []
    if server.staleness == "constant" and server.staleness_a is not None:
        problems.append(Problem("server.staleness_a", "constant staleness has no parameter a"))
    if server.staleness != "hinge" and server.staleness_b is not None:
        problems.append(
            Problem("server.staleness_b", f"only hinge staleness has b, not {server.staleness}")
        )
    return problems


def check_stop(stop: StopSpec, task: Task | None) -> list[Problem]:
    """``[stop]``: at least one rule; a target metric of the task, in its range."""
    problems = []
    if stop.target_updates is None and stop.max_wall_seconds is None and stop.metric is None:
        problems.append(
            Problem(
                "stop",
                "give at least one rule: target_updates, "
                "max_wall_seconds, or metric with its value",
            )
        )
    if stop.metric is None and stop.value is not None:
        problems.append(Problem("stop.metric", "value is given, but not the metric it is for"))
    if stop.metric is None:
        return problems
    if stop.value is None:
        problems.append(Problem("stop.value", f"the target metric {stop.metric!r} needs its value"))
    known = TASK_METRICS[task] if task is not None else tuple(METRIC_GOALS)
    if stop.metric not in known:
        what = f"a {task} task" if task is not None else "any task"
        problems.append(
            Problem(
                "stop.metric",
                f"{stop.metric!r} is not a metric of {what}; choose one of: {', '.join(known)}",
            )
        )
    elif stop.value is not None:
        if METRIC_GOALS[stop.metric] == "max" and not 0 <= stop.value <= 1:
            problems.append(
                Problem("stop.value", f"{stop.metric} lies in [0, 1], got {stop.value:g}")
            )
        elif METRIC_GOALS[stop.metric] == "min" and stop.value < 0:
            problems.append(
                Problem("stop.value", f"{stop.metric} is never negative, got {stop.value:g}")
            )
    return problems


def check_study(spec: StudySpec) -> list[Problem]:
    """Every check of every section, in the order of the sections."""
    return [
        *check_model(spec.model, spec.data),
        *check_data(spec.data),
        *check_training(spec.training),
        *check_communication(spec.communication),
        *check_server(spec.server),
        *check_stop(spec.stop, spec.data.task),
    ]
