"""This hospital's data for a job: a table or a factory, checked before anything is sent."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fl_client import ConfigError, DataError
from fl_client.hospital_data import load_job_data
from hefl_study import StudySpec
from tests.fl_client.fakes import digits_study, study

FACTORIES = """
import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset
from fl_client import ClientData

def float64(site=None, rows=20):
    x = np.random.default_rng(0).normal(size=(rows, 30))  # float64, as numpy makes it
    y = (x[:, 0] > 0).astype(np.float64)
    return ClientData((x, y), (x[:5], y[:5]), (30,), 2, site or "here")

def wrong_shape():
    ds = TensorDataset(torch.zeros(8, 29), torch.zeros(8, dtype=torch.long))
    return ClientData(ds, ds, (29,), 2, "x")

def bad_labels():
    ds = TensorDataset(torch.zeros(8, 30), torch.tensor([0, 1, 2, 1, 0, 1, 0, 1]))
    return ClientData(ds, ds, (30,), 2, "x")

def raises():
    raise FileNotFoundError("/data/icu.csv")

def not_data():
    return [1, 2, 3]

class Pairs(Dataset):
    def __len__(self):
        return 6
    def __getitem__(self, i):
        return np.full(30, float(i)), i % 2

def pairs():
    return ClientData(Pairs(), Pairs(), (30,), 2, "pairs")
"""


@pytest.fixture
def in_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The current folder holds the hospital's factories; it is not on sys.path."""
    (tmp_path / "ward_data.py").write_text(textwrap.dedent(FACTORIES))
    (tmp_path / "broken_data.py").write_text("import numpy\nraise RuntimeError('no config')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield tmp_path
    for name in ("ward_data", "broken_data"):
        sys.modules.pop(name, None)


@pytest.fixture
def cancer() -> StudySpec:
    return study()


def test_a_factory_in_the_current_folder_is_found_and_float64_is_accepted(
    in_folder: Path, cancer: StudySpec
) -> None:
    loaded = load_job_data(cancer, "ward_data:float64", args={"rows": 12})

    features, label = loaded.client_data.train[0]
    assert features.dtype == torch.float32
    assert label.dtype == torch.int64
    assert len(loaded.client_data.train) == 12
    assert loaded.preprocessing is None


def test_a_dataset_of_pairs_is_read_and_converted(in_folder: Path, cancer: StudySpec) -> None:
    loaded = load_job_data(cancer, "ward_data:pairs")

    features, label = loaded.client_data.test[3]
    assert features.dtype == torch.float32
    assert float(features[0]) == 3.0
    assert int(label) == 1


@pytest.mark.parametrize(
    ("factory", "error", "message"),
    [
        (
            "ward_data:wrong_shape",
            DataError,
            r"shape \(29,\); the study's data.input_shape is \(30,\)",
        ),
        ("ward_data:bad_labels", DataError, r"labels outside the binary task's class indices 0..1"),
        ("ward_data:raises", ConfigError, r"'ward_data:raises' raised FileNotFoundError"),
        ("ward_data:not_data", ConfigError, r"returned list, not fl_client.ClientData"),
        ("ward_data:nope", ConfigError, r"'ward_data' has no 'nope'"),
        ("broken_data:load", ConfigError, r"importing 'broken_data' raised RuntimeError: no conf"),
        ("no_such_module:load", ConfigError, r"cannot import 'no_such_module'"),
    ],
)
def test_a_factory_that_does_not_fit_is_a_clear_error_naming_it(
    in_folder: Path, cancer: StudySpec, factory: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        load_job_data(cancer, factory)


def test_an_argument_a_factory_does_not_take_is_an_error_not_ignored(
    in_folder: Path, cancer: StudySpec
) -> None:
    with pytest.raises(ConfigError, match="unexpected keyword argument 'n_sites'"):
        load_job_data(cancer, "ward_data:wrong_shape", args={"n_sites": 4})


def test_a_bundled_dataset_is_a_factory_with_its_site_and_split_options() -> None:
    loaded = load_job_data(digits_study(), "digits", site="2", args={"n_sites": 3})

    assert loaded.client_data.input_shape == (1, 8, 8)
    assert loaded.client_data.n_classes == 10
    assert loaded.client_data.site == "2"
    with pytest.raises(ConfigError, match="needs a site"):
        load_job_data(digits_study(), "digits")


def test_the_kind_of_data_must_be_the_studys(tmp_path: Path) -> None:
    table_study = study(
        data={
            "task": "binary",
            "label": "y",
            "classes": [0, 1],
            "features": [{"name": "x", "type": "numeric"}],
        }
    )

    with pytest.raises(ConfigError, match="trains on a table"):
        load_job_data(table_study, "digits")
    with pytest.raises(ConfigError, match="--site and --data-arg are for a data factory"):
        load_job_data(table_study, str(tmp_path / "t.csv"), site="3")
    with pytest.raises(ConfigError, match="from a data factory"):
        load_job_data(study(), str(tmp_path / "t.csv"))
