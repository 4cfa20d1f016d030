"""This hospital's data for a job: its table checked against the spec, or a factory's data.

A study with ``data.features`` trains on a table (``--data PATH`` of a CSV or Parquet
file): ``fl_client.table`` checks it against the schema (every problem at once, each
naming its column), splits it with the spec's ``test_fraction`` and ``split_seed`` and
encodes it, keeping the preprocessing record that encodes new rows alike. A study with
``data.input_shape`` trains on what a data factory returns (``--data pkg.mod:factory``,
or a bundled dataset): its examples must have the spec's shape and its labels fit the
task. Either way the data is checked before anything reaches the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from fl_client._imports import call_factory, import_object, is_import_path
from fl_client.data import DATASETS, ClientData, bundled_factory
from fl_client.errors import ConfigError, DataError
from fl_client.table import Preprocessing, load_table
from hefl_study import DataSpec, StudySpec

__all__ = ["JobData", "check_client_data", "load_job_data"]

_TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class JobData:
    """This hospital's data for a job, checked.

    Attributes
    ----------
    client_data
        Train and held-out datasets, float32 features.
    preprocessing
        How the table was encoded (``None`` for a factory's data).
    source
        What ``--data`` named.
    """

    client_data: ClientData
    preprocessing: Preprocessing | None
    source: str


def _is_table(source: str) -> bool:
    return Path(source).suffix.lower() in _TABLE_SUFFIXES or Path(source).is_file()


def load_job_data(
    spec: StudySpec,
    source: str,
    *,
    site: str | None = None,
    args: Mapping[str, Any] | None = None,
) -> JobData:
    """Load and check this hospital's data for ``spec``.

    Parameters
    ----------
    source
        A ``.csv`` / ``.parquet`` file (a study with features), or a data factory
        ``pkg.mod:factory`` or bundled dataset name (a study with ``data.input_shape``).
    site, args
        Keyword arguments of a data factory (``site=`` only if given).

    Raises
    ------
    ConfigError
        ``source`` is not the kind of data the study takes, or the factory cannot be
        imported or raised.
    DataError
        The data does not fit the study: for a table one line per problem, each naming
        its column.
    """
    args = dict(args or {})
    if spec.data.is_table:
        if not _is_table(source):
            raise ConfigError(
                f"job {spec.name!r} trains on a table with the columns of its spec: give "
                f"--data PATH of a .csv or .parquet file, not {source!r}"
            )
        if site is not None or args:
            raise ConfigError(
                "--site and --data-arg are for a data factory; a table's split is the "
                "study's (data.test_fraction, data.split_seed)"
            )
        table = load_table(source, spec.data)
        return JobData(table.client_data, table.preprocessing, source)
    if source in DATASETS:
        factory: Any = bundled_factory(source)
    elif is_import_path(source):
        factory = import_object(source, "data factory")
    else:
        raise ConfigError(
            f"job {spec.name!r} takes data of shape {spec.data.example_shape} from a data "
            f"factory (data.input_shape): give --data pkg.mod:factory or a bundled "
            f"dataset ({', '.join(DATASETS)}), not {source!r}"
        )
    if site is not None:
        args["site"] = site
    data = call_factory(factory, source, "data factory", **args)
    if not isinstance(data, ClientData):
        raise ConfigError(
            f"data factory {source!r} returned {type(data).__name__}, not fl_client.ClientData"
        )
    return JobData(check_client_data(data, spec.data, source), None, source)


def check_client_data(data: ClientData, spec: DataSpec, name: str) -> ClientData:
    """A factory's data as float32 tensors, checked against the study's ``[data]``.

    Features of any real dtype (float64 too) become float32; labels become int64 class
    indices, or float32 targets for regression.

    Raises
    ------
    DataError
        Naming the factory and the split: examples of another shape than
        ``data.input_shape``, non-finite features, labels outside the task, no rows.
    """
    train = _checked(data.train, spec, f"data factory {name!r}: its train split")
    test = _checked(data.test, spec, f"data factory {name!r}: its test split")
    return replace(
        data,
        train=train,
        test=test,
        input_shape=spec.example_shape,
        n_classes=spec.n_classes,
    )


def _tensors(dataset: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, labels)`` of a dataset of pairs, or of a pair of arrays."""
    try:
        if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
            x, y = dataset.tensors
        elif isinstance(dataset, tuple | list) and len(dataset) == 2:
            x, y = (torch.as_tensor(np.asarray(part)) for part in dataset)
        elif isinstance(dataset, Dataset):
            pairs = [dataset[i] for i in range(len(dataset))]
            if not pairs:
                return torch.zeros((0,)), torch.zeros((0,))
            x = torch.stack([torch.as_tensor(np.asarray(f)) for f, _ in pairs])
            y = torch.as_tensor(np.asarray([np.asarray(label) for _, label in pairs]))
        else:
            raise DataError(
                f"{what} is a {type(dataset).__name__}: give a torch Dataset of "
                "(features, label) pairs or a (features, labels) pair of arrays"
            )
    except DataError:
        raise
    except Exception as exc:  # the user's dataset: any error is a message
        raise DataError(f"{what} cannot be read: {type(exc).__name__}: {exc}") from exc
    return x, y


def _checked(dataset: Any, spec: DataSpec, what: str) -> TensorDataset:
    x, y = _tensors(dataset, what)
    if len(x) == 0:
        raise DataError(f"{what} has no rows")
    if len(y) != len(x):
        raise DataError(f"{what} has {len(x)} examples but {len(y)} labels")
    if tuple(x.shape[1:]) != spec.example_shape:
        raise DataError(
            f"{what} has examples of shape {tuple(x.shape[1:])}; the study's "
            f"data.input_shape is {spec.example_shape}"
        )
    if x.is_complex() or x.dtype == torch.bool or not (x.is_floating_point() or _is_int(x)):
        raise DataError(f"{what} has features of type {x.dtype}, not numbers")
    features = x.to(torch.float32)
    if not torch.isfinite(features).all():
        raise DataError(f"{what} has features that are NaN or infinite")
    return TensorDataset(features, _labels(y, spec, what))


def _is_int(x: torch.Tensor) -> bool:
    return x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _labels(y: torch.Tensor, spec: DataSpec, what: str) -> torch.Tensor:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{what} has labels of shape {tuple(y.shape[1:])} per example, not one")
    if not (y.is_floating_point() or _is_int(y)):
        raise DataError(f"{what} has labels of type {y.dtype}, not numbers")
    values = y.to(torch.float64)
    if not torch.isfinite(values).all():
        raise DataError(f"{what} has labels that are NaN or infinite")
    if spec.task == "regression":
        return values.to(torch.float32)
    n = spec.n_classes
    bad = values[(values != values.round()) | (values < 0) | (values >= n)]
    if len(bad):
        shown = ", ".join(f"{v:g}" for v in bad.unique()[:5].tolist())
        raise DataError(
            f"{what} has labels outside the {spec.task} task's class indices 0..{n - 1} "
            f"({len(bad)} rows: {shown}); the study's classes are "
            f"{', '.join(spec.classes or ())}"
        )
    return values.to(torch.int64)
