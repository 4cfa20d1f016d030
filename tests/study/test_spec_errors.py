"""Every bad spec gives one SpecError whose problems are located plain sentences."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hefl_study import (
    DataSpec,
    Feature,
    ModelSpec,
    SpecError,
    StopSpec,
    StudySpec,
    load_spec,
    spec_from_json,
    spec_from_mapping,
    spec_from_toml,
)

Raw = dict[str, Any]


def base() -> Raw:
    return {
        "name": "study-1",
        "model": {"name": "logistic"},
        "data": {
            "label": "y",
            "task": "binary",
            "classes": ["no", "yes"],
            "features": [
                {"name": "age", "type": "numeric"},
                {"name": "sex", "type": "categorical", "categories": ["F", "M"]},
                {"name": "cp", "type": "categorical", "categories": ["a", "b", "c"]},
            ],
        },
        "stop": {"target_updates": 10},
    }


def problems_of(raw: Raw) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        spec_from_mapping(raw)
    text = str(info.value)
    # never a pydantic dump or a traceback: located plain sentences only
    for dump in ("Input should", "type=", "pydantic", "Traceback", "validation error"):
        assert dump not in text
    return {p.location: p.message for p in info.value.problems}


def edit(change: Callable[[Raw], object]) -> Raw:
    raw = copy.deepcopy(base())
    change(raw)
    return raw


def test_the_base_spec_is_valid() -> None:
    spec = spec_from_mapping(base())
    assert spec.data.input_width == 1 + 2 + 3
    assert spec.training.local_epochs == 1


CASES: list[tuple[str, Callable[[Raw], object], str, str]] = [
    # (case, change, location, part of the message)
    ("bad job name", lambda r: r.update(name="My Study"), "name", "not a job name"),
    ("job name too long", lambda r: r.update(name="a" * 64), "name", "1-63 lowercase"),
    ("unknown profile", lambda r: r.update(profile="n1"), "profile", "unknown CKKS profile"),
    ("unknown top-level key", lambda r: r.update(nmae="x"), "nmae", "unknown key"),
    ("missing model", lambda r: r.pop("model"), "model", "is required"),
    ("missing stop", lambda r: r.pop("stop"), "stop", "is required"),
    ("model not a table", lambda r: r.update(model="mlp"), "model", "must be a table"),
    (
        "unknown built-in",
        lambda r: r["model"].update(name="resnet"),
        "model.name",
        "must be 'logistic', 'mlp' or 'cnn', not 'resnet'",
    ),
    (
        "name and factory",
        lambda r: r["model"].update(factory="pkg.mod:make"),
        "model",
        "not both",
    ),
    ("neither name nor factory", lambda r: r["model"].pop("name"), "model", "give name"),
    (
        "factory not an import path",
        lambda r: r.update(model={"factory": "pkg/mod.py"}),
        "model.factory",
        "not an import path",
    ),
    (
        "argument a built-in lacks",
        lambda r: r["model"].update(args={"width": 3}),
        "model.args.width",
        "has no argument 'width'",
    ),
    (
        "hidden not positive",
        lambda r: r["model"].update(name="mlp", args={"hidden": 0}),
        "model.args.hidden",
        "positive integer",
    ),
    (
        "reserved argument",
        lambda r: r.update(model={"factory": "m:f", "args": {"n_classes": 3}}),
        "model.args.n_classes",
        "set by hefl",
    ),
    (
        "non-finite argument",
        lambda r: r.update(model={"factory": "m:f", "args": {"scale": float("inf")}}),
        "model.args.scale",
        "nan or inf",
    ),
    ("negative seed", lambda r: r["model"].update(seed=-1), "model.seed", "at least 0"),
    ("cnn on a table", lambda r: r["model"].update(name="cnn"), "model.name", "image input"),
    (
        "duplicate feature",
        lambda r: r["data"]["features"].append({"name": "age", "type": "numeric"}),
        "data.features[3].name",
        "'age' is listed twice",
    ),
    (
        "label is a feature",
        lambda r: r["data"].update(label="age"),
        "data.label",
        "the label cannot be an input",
    ),
    (
        "label is ignored",
        lambda r: r["data"].update(ignore=["id", "y"]),
        "data.ignore[1]",
        "is the label",
    ),
    (
        "ignored feature",
        lambda r: r["data"].update(ignore=["sex"]),
        "data.ignore[0]",
        "data.features[1]",
    ),
    (
        "categorical without categories",
        lambda r: r["data"]["features"][2].pop("categories"),
        "data.features[2].categories",
        "needs its categories",
    ),
    (
        "empty categories",
        lambda r: r["data"]["features"][2].update(categories=[]),
        "data.features[2].categories",
        "at least 1 item",
    ),
    (
        "duplicate category",
        lambda r: r["data"]["features"][2].update(categories=["a", "b", "a"]),
        "data.features[2].categories[2]",
        "listed twice",
    ),
    (
        "category that is a missing token",
        lambda r: r["data"]["features"][2].update(categories=["a", "NA"]),
        "data.features[2].categories[1]",
        "missing-value token",
    ),
    (
        "float category",
        lambda r: r["data"]["features"][2].update(categories=["a", 1.5]),
        "data.features[2].categories[1]",
        "must be a string, not a float",
    ),
    (
        "numeric with categories",
        lambda r: r["data"]["features"][0].update(categories=["x"]),
        "data.features[0].categories",
        "only a categorical feature",
    ),
    (
        "unknown feature type",
        lambda r: r["data"]["features"][0].update(type="integer"),
        "data.features[0].type",
        "must be 'numeric' or 'categorical'",
    ),
    (
        "feature name padded",
        lambda r: r["data"]["features"][0].update(name=" age"),
        "data.features[0].name",
        "white space",
    ),
    (
        "no features",
        lambda r: r["data"].update(features=[]),
        "data.features",
        "give the table's features",
    ),
    (
        "features and input_shape",
        lambda r: r["data"].update(input_shape=[1, 8, 8]),
        "data.input_shape",
        "not both",
    ),
    (
        "no label for a table",
        lambda r: r["data"].pop("label"),
        "data.label",
        "a table needs its label column",
    ),
    (
        "empty input_shape",
        lambda r: r["data"].update(features=[], input_shape=[]),
        "data.input_shape",
        "at least 1 item",
    ),
    (
        "zero in input_shape",
        lambda r: r["data"].update(features=[], input_shape=[1, 0]),
        "data.input_shape[1]",
        "must be at least 1, not 0",
    ),
    (
        "cnn on a flat custom input",
        lambda r: (
            r["data"].update(features=[], input_shape=[64]),
            r["model"].update(name="cnn"),
        ),
        "model.name",
        "has 1 dimensions",
    ),
    (
        "min_sites zero",
        lambda r: r["stop"].update(min_sites=0),
        "stop.min_sites",
        "must be at least 1, not 0",
    ),
    (
        "another format",
        lambda r: r.update(format=3),
        "format",
        "1",
    ),
    (
        "a format 1 spec with a setting of format 2",
        lambda r: (r.update(format=1), r.setdefault("server", {}).update(policy="rounds")),
        "spec",
        "[server] policy: not in a format 1 spec (write format = 2)",
    ),
    (
        "rounds without their hospitals",
        lambda r: r.setdefault("server", {}).update(policy="rounds"),
        "server",
        "policy 'rounds' needs round_clients",
    ),
    (
        "binary with 3 classes",
        lambda r: r["data"].update(classes=["a", "b", "c"]),
        "data.classes",
        "exactly 2 classes",
    ),
    ("binary without classes", lambda r: r["data"].pop("classes"), "data.classes", "got 0"),
    (
        "multiclass with 2 classes",
        lambda r: r["data"].update(task="multiclass"),
        "data.classes",
        'use task = "binary"',
    ),
    (
        "regression with classes",
        lambda r: r["data"].update(task="regression"),
        "data.classes",
        "has no classes",
    ),
    (
        "duplicate class",
        lambda r: r["data"].update(classes=["1", 1]),
        "data.classes[1]",
        "listed twice",
    ),
    (
        "unknown task",
        lambda r: r["data"].update(task="survival"),
        "data.task",
        "must be 'binary', 'multiclass' or 'regression'",
    ),
    (
        "unknown missing policy",
        lambda r: r["data"].update(missing="skip"),
        "data.missing",
        "must be 'drop', 'impute' or 'error'",
    ),
    (
        "test fraction of 1",
        lambda r: r["data"].update(test_fraction=1.0),
        "data.test_fraction",
        "less than 1",
    ),
    ("min_rows of 1", lambda r: r["data"].update(min_rows=1), "data.min_rows", "at least 2"),
    (
        "typo in data",
        lambda r: r["data"].update(lable="y"),
        "data.lable",
        "did you mean 'label'?",
    ),
    (
        "typo in a feature",
        lambda r: r["data"]["features"][1].update(categoris=["F"]),
        "data.features[1].categoris",
        "did you mean 'categories'?",
    ),
    (
        "lr as a string",
        lambda r: r.update(training={"lr": "0.1"}),
        "training.lr",
        "must be a number, not a string",
    ),
    (
        "lr not positive",
        lambda r: r.update(training={"lr": 0}),
        "training.lr",
        "greater than 0",
    ),
    (
        "lr is nan",
        lambda r: r.update(training={"lr": float("nan")}),
        "training.lr",
        "finite number",
    ),
    (
        "batch size as a float",
        lambda r: r.update(training={"batch_size": 16.0}),
        "training.batch_size",
        "whole number",
    ),
    (
        "epochs and steps",
        lambda r: r.update(training={"local_epochs": 1, "local_steps": 5}),
        "training",
        "not both",
    ),
    (
        "momentum with adam",
        lambda r: r.update(training={"optimizer": "adam", "momentum": 0.9}),
        "training.momentum",
        'optimizer = "sgd" only',
    ),
    (
        "top-k without block fraction",
        lambda r: r.update(communication={"compression": "top-k"}),
        "communication.block_fraction",
        "top-k needs a block_fraction below 1",
    ),
    (
        "random-k sending everything",
        lambda r: r.update(communication={"compression": "random-k", "block_fraction": 1.0}),
        "communication.block_fraction",
        "use dense",
    ),
    (
        "dense with block fraction",
        lambda r: r.update(communication={"block_fraction": 0.1}),
        "communication.block_fraction",
        "dense sends every block",
    ),
    (
        "error feedback not a boolean",
        lambda r: r.update(communication={"error_feedback": 1}),
        "communication.error_feedback",
        "true or false",
    ),
    (
        "duplicate personal pattern",
        lambda r: r.update(communication={"personal": ["head.*", "head.*"]}),
        "communication.personal[1]",
        "listed twice",
    ),
    (
        "constant staleness with a",
        lambda r: r.update(server={"staleness": "constant", "staleness_a": 2.0}),
        "server.staleness_a",
        "no parameter a",
    ),
    (
        "b without hinge",
        lambda r: r.update(server={"staleness_b": 3}),
        "server.staleness_b",
        "only hinge",
    ),
    (
        "mixing above 1",
        lambda r: r.update(server={"mixing": 1.5}),
        "server.mixing",
        "at most 1",
    ),
    (
        "buffer too big",
        lambda r: r.update(server={"buffer_size": 20_000}),
        "server.buffer_size",
        "at most 10000",
    ),
    ("no stop rule", lambda r: r.update(stop={}), "stop", "at least one rule"),
    (
        "metric without value",
        lambda r: r.update(stop={"metric": "auroc"}),
        "stop.value",
        "needs its value",
    ),
    (
        "value without metric",
        lambda r: r.update(stop={"target_updates": 5, "value": 0.9}),
        "stop.metric",
        "not the metric",
    ),
    (
        "metric of another task",
        lambda r: r.update(stop={"metric": "macro_f1", "value": 0.8}),
        "stop.metric",
        "'macro_f1' is not a metric of a binary task",
    ),
    (
        "accuracy above 1",
        lambda r: r.update(stop={"metric": "accuracy", "value": 80.0}),
        "stop.value",
        "lies in [0, 1]",
    ),
    (
        "negative loss",
        lambda r: r.update(stop={"metric": "loss", "value": -1.0}),
        "stop.value",
        "never negative",
    ),
    (
        "zero wall time",
        lambda r: r.update(stop={"max_wall_seconds": 0}),
        "stop.max_wall_seconds",
        "greater than 0",
    ),
]


@pytest.mark.parametrize(
    ("change", "location", "message"),
    [pytest.param(c, loc, msg, id=case) for case, c, loc, msg in CASES],
)
def test_a_bad_spec_names_the_place_and_says_what_is_wrong(
    change: Callable[[Raw], object], location: str, message: str
) -> None:
    problems = problems_of(edit(change))
    assert location in problems, problems
    assert message in problems[location]


def test_auroc_is_only_for_binary() -> None:
    def multiclass(r: Raw) -> None:
        r["data"].update(task="multiclass", classes=["a", "b", "c"])
        r["stop"] = {"metric": "auroc", "value": 0.9}

    problems = problems_of(edit(multiclass))
    assert problems == {
        "stop.metric": "'auroc' is not a metric of a multiclass task; "
        "choose one of: loss, accuracy, macro_f1"
    }


def test_every_problem_is_listed_at_once() -> None:
    def many(r: Raw) -> None:
        r["name"] = "Bad"
        r["model"]["name"] = "cnn2"
        r["data"]["features"][2]["categories"] = ["a", "a"]
        r["training"] = {"optimizer": "adam", "momentum": 0.5}
        r["server"] = {"buffersize": 4}
        r["stop"] = {}

    problems = problems_of(edit(many))
    # a section that is valid on its own still has its own checks run
    assert set(problems) == {
        "name",
        "model.name",
        "data.features[2].categories[1]",
        "training.momentum",
        "server.buffersize",
        "stop",
    }
    assert problems["server.buffersize"].startswith("unknown key; did you mean 'buffer_size'?")


def test_the_message_has_one_line_per_problem() -> None:
    with pytest.raises(SpecError) as info:
        spec_from_mapping(edit(lambda r: r.update(name="X", stop={})), source="x.toml")
    assert str(info.value).splitlines() == [
        "x.toml has 2 problems:",
        "  name: 'X' is not a job name: 1-63 lowercase letters, digits and '-', starting "
        "with a letter or digit",
        "  stop: give at least one rule: target_updates, max_wall_seconds, or metric with "
        "its value",
    ]


def test_a_toml_syntax_error_is_located_by_line() -> None:
    with pytest.raises(SpecError) as info:
        spec_from_toml('name = "a"\n[model\nname = "x"\n')
    (problem,) = info.value.problems
    assert problem.location == "TOML"
    assert "line 2" in problem.message


def test_a_date_in_the_toml_is_refused_plainly() -> None:
    text = """
name = "a"
[model]
factory = "m:f"
args = { since = 2020-01-01 }
[data]
label = "y"
task = "regression"
features = [{ name = "x", type = "numeric" }]
[stop]
target_updates = 1
"""
    with pytest.raises(SpecError) as info:
        spec_from_toml(text)
    assert [str(p) for p in info.value.problems] == [
        "model.args.since: must be a string, number, boolean, array or table (not a date or time)"
    ]


def test_an_unreadable_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read it"):
        load_spec(tmp_path / "absent.toml")
    (tmp_path / "latin1.toml").write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(tmp_path / "latin1.toml")


def test_the_file_name_heads_the_message(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('name = "a"\n', encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path} has 3 problems:")


def test_bad_json_is_a_spec_error() -> None:
    with pytest.raises(SpecError):
        spec_from_json("[1, 2]")
    with pytest.raises(SpecError):
        spec_from_json("{")


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def with_args(depth: int) -> Raw:
    return edit(lambda r: r["model"].update(name="mlp", args={"hidden": nested(depth)}))


DEEP: list[tuple[str, Callable[[], object]]] = [
    ("JSON arrays", lambda: spec_from_json("[" * 100_000)),
    ("JSON objects", lambda: spec_from_json('{"a":' * 100_000)),
    ("TOML arrays", lambda: spec_from_toml("a = " + "[" * 100_000)),
    ("TOML inline tables", lambda: spec_from_toml("a = " + "{b = " * 100_000)),
    ("a mapping's model args", lambda: spec_from_mapping(with_args(10_000))),
    # within json's reach, beyond pydantic's
    ("JSON model args", lambda: spec_from_json(json.dumps(with_args(500)))),
]


@pytest.mark.parametrize(("case", "parse"), DEEP, ids=[case for case, _ in DEEP])
def test_a_document_nested_too_deeply_is_one_plain_problem(
    case: str, parse: Callable[[], object]
) -> None:
    with pytest.raises(SpecError) as info:
        parse()
    # not a RecursionError, nor a location hundreds of levels long
    assert [(p.location, p.message) for p in info.value.problems] == [
        ("spec", "nested too deeply to be a study spec")
    ]


def test_a_spec_file_nested_too_deeply_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 100_000, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == f"{path} has 1 problem:\n  spec: nested too deeply to be a study spec"


def test_a_mapping_that_holds_itself_is_refused_too() -> None:
    args: dict[str, Any] = {}
    args["hidden"] = args
    with pytest.raises(SpecError, match="nested too deeply"):
        spec_from_mapping(edit(lambda r: r["model"].update(name="mlp", args=args)))


def test_a_spec_built_in_python_is_checked_too() -> None:
    data = DataSpec(
        label="y",
        task="multiclass",
        classes=("a", "b"),
        features=(Feature(name="x", type="numeric"),),
    )
    with pytest.raises(SpecError, match="at least 3 classes"):
        StudySpec(
            name="s",
            model=ModelSpec(name="logistic"),
            data=data,
            stop=StopSpec(target_updates=1),
        )
