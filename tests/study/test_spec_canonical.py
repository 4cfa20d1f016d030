"""The canonical JSON and its hash: one study, however written, has one hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import hefl_study
from hefl_study import (
    TASK_METRICS,
    load_spec,
    metric_reached,
    spec_from_json,
    spec_from_toml,
    spec_to_json,
)

EXAMPLE = Path(__file__).parents[2] / "deploy" / "studies" / "heart-disease.toml"

SHORT = """
name = "icu"
[model]
name = "mlp"
args = { hidden = 32 }
[data]
label = "died"
task = "binary"
classes = [0, 1]
features = [
  { name = "age", type = "numeric" },
  { name = "ward", type = "categorical", categories = ["a", "b"], missing = "impute" },
]
[server]
staleness = "hinge"
[stop]
target_updates = 100
"""

# The same study: keys reordered, comments, every default spelt out, classes as text,
# the inherited missing-value settings written on each feature.
LONG = """
# the ICU study
profile = "n4096-s40"
description = ""
name = "icu"

[stop]
target_updates = 100          # enough for a first look

[server]
max_training = 32
buffer_size = 1
max_staleness = 64
mixing = 1.0
staleness_b = 4
staleness_a = 10.0
staleness = "hinge"

[communication]
personal = []
compression_seed = 0
error_feedback = true
compression = "dense"

[training]
client_step = 1.0
local_epochs = 1
batch_size = 16
momentum = 0.0
lr = 0.05
optimizer = "sgd"

[data]
min_rows = 10
split_seed = 0
test_fraction = 0.34
standardize = true
missing_values = ["", "NA", "NaN", "?"]
missing = "error"
ignore = []
classes = ["0", "1"]
task = "binary"
label = "died"

[[data.features]]
type = "numeric"
name = "age"
missing = "error"
missing_values = ["", "NA", "NaN", "?"]

[[data.features]]
missing_values = ["", "NA", "NaN", "?"]
missing = "impute"
categories = ["a", "b"]
type = "categorical"
name = "ward"

[model]
seed = 0
args = { hidden = 32 }
name = "mlp"
"""


def test_the_same_study_written_two_ways_hashes_the_same() -> None:
    short, long = spec_from_toml(SHORT), spec_from_toml(LONG)
    assert short == long
    assert spec_to_json(short) == spec_to_json(long)
    assert short.sha256 == long.sha256


@pytest.mark.parametrize(
    "change",
    [
        ('name = "icu"', 'name = "icu2"'),
        ("hidden = 32", "hidden = 33"),
        ("target_updates = 100", "target_updates = 101"),
        ('categories = ["a", "b"]', 'categories = ["b", "a"]'),  # one-hot order matters
        ('staleness = "hinge"', 'staleness = "polynomial"'),
    ],
)
def test_a_different_study_hashes_differently(change: tuple[str, str]) -> None:
    other = spec_from_toml(SHORT.replace(*change))
    assert other.sha256 != spec_from_toml(SHORT).sha256


def test_the_canonical_json_is_sorted_compact_and_complete() -> None:
    text = spec_to_json(spec_from_toml(SHORT))
    raw = json.loads(text)
    assert text == json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert raw["training"]["local_epochs"] == 1
    assert raw["server"]["staleness_a"] == 10.0
    assert raw["server"]["staleness_b"] == 4
    assert raw["data"]["classes"] == ["0", "1"]
    assert raw["data"]["features"][1]["missing"] == "impute"


def test_the_sha256_is_of_the_canonical_json() -> None:
    import hashlib

    spec = spec_from_toml(SHORT)
    assert spec.sha256 == hashlib.sha256(spec_to_json(spec).encode()).hexdigest()


@pytest.mark.parametrize("text", [SHORT, LONG, EXAMPLE.read_text(encoding="utf-8")])
def test_the_json_round_trip_is_the_identity(text: str) -> None:
    spec = spec_from_toml(text)
    again = spec_from_json(spec_to_json(spec))
    assert again == spec
    assert again.sha256 == spec.sha256


def test_the_example_spec_loads() -> None:
    spec = load_spec(EXAMPLE)
    assert spec.name == "heart-disease"
    assert spec.data.task == "binary"
    assert spec.data.classes == ("0", "1")
    assert [f.name for f in spec.data.features] == [
        "age",
        "sex",
        "cp",
        "trestbps",
        "chol",
        "fbs",
        "restecg",
        "thalch",
        "exang",
        "oldpeak",
    ]
    chol = spec.data.features[4]
    assert (chol.missing, chol.missing_values) == ("impute", ("", "0"))
    assert spec.data.features[0].missing == "drop"
    assert spec.data.input_width == 5 + 2 + 4 + 2 + 3 + 2
    assert spec.data.n_outputs == 1
    assert spec.data.encoded_columns[:4] == ("age", "sex=Female", "sex=Male", "cp=typical angina")
    assert spec.stop.metric in TASK_METRICS["binary"]


def test_derived_widths_and_outputs() -> None:
    spec = spec_from_toml(
        SHORT.replace('task = "binary"', 'task = "multiclass"').replace(
            "classes = [0, 1]", "classes = [0, 1, 2]"
        )
    )
    assert spec.data.input_width == 3
    assert (spec.data.n_outputs, spec.data.n_classes) == (3, 3)
    regression = spec_from_toml(
        SHORT.replace('task = "binary"', 'task = "regression"').replace("classes = [0, 1]", "")
    )
    assert (regression.data.n_outputs, regression.data.n_classes) == (1, 1)


def test_a_target_metric_is_reached_in_its_direction() -> None:
    assert metric_reached("auroc", 0.9, 0.9)
    assert not metric_reached("auroc", 0.9, 0.89)
    assert metric_reached("rmse", 2.0, 1.5)
    assert not metric_reached("loss", 0.3, 0.31)
    assert not metric_reached("accuracy", 0.5, float("nan"))


def test_the_public_names_exist() -> None:
    for name in hefl_study.__all__:
        assert hasattr(hefl_study, name), name
    assert len(set(hefl_study.__all__)) == len(hefl_study.__all__)


def test_hefl_study_imports_no_service() -> None:
    import subprocess
    import sys

    code = (
        "import sys, hefl_study; "
        "bad = [m for m in ('keyauth', 'fl_server', 'fl_client', 'fastapi', 'httpx') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_built_in_model_arguments_match_fl_client() -> None:
    import inspect

    from fl_client.models import MODELS

    assert set(hefl_study.BUILTIN_MODEL_ARGS) == set(MODELS)
    for name, factory in MODELS.items():
        takes = set(inspect.signature(factory).parameters) - {"input_shape", "n_classes"}
        assert set(hefl_study.BUILTIN_MODEL_ARGS[name]) == takes, name


def test_a_study_on_factory_data_declares_its_input_shape() -> None:
    spec = spec_from_toml(
        """
name = "digits"
[model]
name = "cnn"
[data]
task = "multiclass"
classes = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
input_shape = [1, 8, 8]
[stop]
target_updates = 10
"""
    )

    assert not spec.data.is_table
    assert spec.data.label is None
    assert spec.data.example_shape == (1, 8, 8)
    assert spec.data.input_width == 64
    assert spec.data.n_outputs == 10
    assert json.loads(spec_to_json(spec))["format"] == 2
