"""A hospital's table for a study: checked, split, encoded; the record that encodes new rows."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from pydantic import ValidationError
from torch.utils.data import TensorDataset

from fl_client._table_read import Table, read_table, table_from_columns
from fl_client._table_schema import ParsedTable, parse_table
from fl_client.data import ClientData, Standardizer
from fl_client.errors import DataError
from hefl_study import DataSpec

__all__ = [
    "EncodedRows",
    "NumericStats",
    "Preprocessing",
    "Table",
    "TableData",
    "encode_rows",
    "fit_rows",
    "load_table",
    "preprocessing_from_json",
    "preprocessing_to_json",
    "read_table",
    "rows_dataset",
    "table_from_columns",
]

Floats = npt.NDArray[np.float64]
Float32s = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]

PREPROCESSING_FORMAT = "hefl-preprocessing/1"


@dataclass(frozen=True)
class NumericStats:
    """How one numeric feature is encoded: ``(value - center) / scale``.

    Attributes
    ----------
    impute
        The training mean of the observed values: what a missing value becomes when
        the policy is ``impute`` (0 if the training rows have none).
    center, scale
        The training mean and standard deviation when standardizing (a constant
        feature keeps scale 1), else 0 and 1.
    """

    name: str
    impute: float
    center: float
    scale: float


@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to encode a new row exactly as training did.

    Attributes
    ----------
    data
        The study's ``[data]`` section: columns, categories, missing values, classes.
    numeric
        The fitted statistics of each numeric feature, in the spec's feature order.
    """

    data: DataSpec
    numeric: tuple[NumericStats, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the encoded columns (``cp=asymptomatic`` for a one-hot column)."""
        return self.data.encoded_columns

    @classmethod
    def fit(cls, data: DataSpec, train: ParsedTable) -> Preprocessing:
        """Statistics of one hospital's training rows only (missing values left out)."""
        names = [f.name for f in data.features if f.categories is None]
        if not names:
            return cls(data, ())
        fitted = Standardizer.fit(np.column_stack([train.numeric[n] for n in names]))
        return cls(
            data,
            tuple(
                NumericStats(
                    name,
                    impute=float(mean),
                    center=float(mean) if data.standardize else 0.0,
                    scale=float(scale) if data.standardize else 1.0,
                )
                for name, mean, scale in zip(names, fitted.mean, fitted.scale, strict=True)
            ),
        )


@dataclass(frozen=True)
class EncodedRows:
    """Encoded rows of a table.

    Attributes
    ----------
    features
        ``(n, input_width)`` float32.
    labels
        Class index (int64) or target (float32); ``None`` when labels were not read.
    rows
        Index (from 0) in the table of each encoded row: rows dropped for a missing
        value are left out.
    """

    features: Float32s
    labels: Ints | Float32s | None
    rows: Ints


@dataclass(frozen=True)
class TableData:
    """One hospital's table, ready to train on.

    Attributes
    ----------
    client_data
        Train and test datasets; ``n_classes`` is the study's (1 for regression).
    preprocessing
        The statistics of this hospital's training rows, to encode new rows alike.
    train_rows, test_rows
        Index (from 0) in the table of the rows in each split.
    n_rows
        Rows in the table, those dropped for missing values included.
    """

    client_data: ClientData
    preprocessing: Preprocessing
    train_rows: Ints
    test_rows: Ints
    n_rows: int


def _subset(parsed: ParsedTable, index: Ints) -> ParsedTable:
    return ParsedTable(
        rows=parsed.rows[index],
        numeric={name: v[index] for name, v in parsed.numeric.items()},
        codes={name: v[index] for name, v in parsed.codes.items()},
        labels=None if parsed.labels is None else parsed.labels[index],
    )


def _encode(pre: Preprocessing, parsed: ParsedTable) -> EncodedRows:
    n = len(parsed.rows)
    numeric: dict[str, Floats] = {}
    if pre.numeric:
        raw = np.column_stack([parsed.numeric[s.name] for s in pre.numeric])
        impute = np.array([s.impute for s in pre.numeric])
        scaler = Standardizer(
            mean=np.array([s.center for s in pre.numeric]),
            scale=np.array([s.scale for s in pre.numeric]),
        )
        encoded = scaler.transform(np.where(np.isnan(raw), impute, raw))
        numeric = {s.name: encoded[:, j] for j, s in enumerate(pre.numeric)}
    columns: list[Floats] = []
    for feature in pre.data.features:
        if feature.categories is None:
            columns.append(numeric[feature.name].reshape(n, 1))
        else:
            codes = parsed.codes[feature.name]
            # a missing category (code -1) matches no column: all zeros
            columns.append((codes[:, None] == np.arange(len(feature.categories))).astype(float))
    labels: Ints | Float32s | None = None
    if parsed.labels is not None and pre.data.task == "regression":
        labels = parsed.labels.astype(np.float32)
    elif parsed.labels is not None:
        labels = parsed.labels.astype(np.int64)
    return EncodedRows(
        features=np.concatenate(columns, axis=1).astype(np.float32),
        labels=labels,
        rows=parsed.rows,
    )


def _split(n: int, test_fraction: float, seed: int, source: str) -> tuple[Ints, Ints]:
    order = np.random.default_rng(seed).permutation(n).astype(np.int64)
    n_test = math.ceil(test_fraction * n)
    if n_test >= n:
        raise DataError(
            f"{source}: rows: {n} usable rows leave none to train on at test_fraction "
            f"{test_fraction:g}"
        )
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def rows_dataset(rows: EncodedRows) -> TensorDataset:
    """Encoded rows with their labels as a dataset of ``(features, label)`` pairs."""
    if rows.labels is None:
        raise DataError("training and scoring need labels")
    return TensorDataset(torch.from_numpy(rows.features), torch.from_numpy(rows.labels))


def load_table(path: str | Path, data: DataSpec, *, site: str | None = None) -> TableData:
    """Read a hospital's table, check it, split it and encode both splits.

    Parameters
    ----------
    path
        A ``.csv`` or ``.parquet`` file.
    data
        The study's ``[data]`` section.
    site
        The hospital's name in the data's description (default: the file's stem).

    Raises
    ------
    DataError
        The file is unreadable, or does not fit the schema, or too few rows are left.
        The table is checked before anything else happens and every problem is reported
        at once, one line each naming its column; rows are numbered from 1, the header
        not counted.

    Notes
    -----
    Rows are split into train and held-out test with ``split_seed`` and
    ``test_fraction``. Encoding follows the spec's feature order: a numeric feature is
    imputed with this hospital's training mean where its policy is ``impute``, then
    standardized with its training mean and standard deviation (if ``standardize``); a
    categorical feature becomes one-hot in the spec's category order, all zeros where
    missing. One-hot columns are not standardized: a shared weight must mean the same
    category at every hospital. Features are float32; labels are the class index as
    int64, or the target as float32.
    """
    table = read_table(path)
    parsed = parse_table(table, data, min_rows=data.min_rows)
    train_at, test_at = _split(len(parsed.rows), data.test_fraction, data.split_seed, table.source)
    train, test = _subset(parsed, train_at), _subset(parsed, test_at)
    pre = Preprocessing.fit(data, train)
    name = site if site is not None else Path(path).stem
    client_data = ClientData(
        train=rows_dataset(_encode(pre, train)),
        test=rows_dataset(_encode(pre, test)),
        input_shape=(data.input_width,),
        n_classes=data.n_classes,
        site=name,
        description=f"{Path(path).name}: {len(train.rows)} training and {len(test.rows)} "
        f"held-out rows of {table.n_rows}",
    )
    return TableData(client_data, pre, train.rows, test.rows, table.n_rows)


def encode_rows(
    preprocessing: Preprocessing, table: Table | str | Path, *, labels: bool = True
) -> EncodedRows:
    """Encode any table's rows exactly as training encoded its own (bit for bit).

    Parameters
    ----------
    table
        A ``Table`` or the path of a ``.csv`` / ``.parquet`` file.
    labels
        Also read the label column; without it the table need not have one.

    Raises
    ------
    DataError
        The table does not fit the schema (as for ``load_table``, with no row minimum).
    """
    if not isinstance(table, Table):
        table = read_table(table)
    return _encode(preprocessing, parse_table(table, preprocessing.data, labels=labels))


def fit_rows(
    data: DataSpec, table: Table | str | Path, *, labels: bool = True
) -> tuple[Preprocessing, EncodedRows]:
    """Fit the preprocessing on every row of a table, then encode them with it.

    For a table a hospital never trained on (so it has no record of its own): the
    statistics are this table's, not a training split's.

    Raises
    ------
    DataError
        The table does not fit the schema (as for ``load_table``, with no row minimum).
    """
    if not isinstance(table, Table):
        table = read_table(table)
    parsed = parse_table(table, data, labels=labels)
    pre = Preprocessing.fit(data, parsed)
    return pre, _encode(pre, parsed)


def preprocessing_to_json(preprocessing: Preprocessing) -> str:
    """The record as JSON text; floats are written so that they read back exactly."""
    return json.dumps(
        {
            "format": PREPROCESSING_FORMAT,
            "data": preprocessing.data.model_dump(mode="json"),
            "numeric": [asdict(stats) for stats in preprocessing.numeric],
        },
        sort_keys=True,
        indent=1,
        allow_nan=False,
    )


def preprocessing_from_json(text: str) -> Preprocessing:
    """The record ``preprocessing_to_json`` wrote.

    Raises
    ------
    DataError
        Not such a record, or one whose statistics do not fit its data section.
    """
    try:
        raw: Any = json.loads(text)
        if raw.get("format") != PREPROCESSING_FORMAT:
            raise DataError(f"not a {PREPROCESSING_FORMAT} record")
        data = DataSpec.model_validate(raw["data"])
        numeric = tuple(NumericStats(**stats) for stats in raw["numeric"])
    except (ValueError, TypeError, KeyError, AttributeError, ValidationError) as exc:
        raise DataError(f"unreadable preprocessing record: {exc}") from None
    expected = [f.name for f in data.features if f.categories is None]
    if [s.name for s in numeric] != expected:
        raise DataError("preprocessing record: its statistics do not match its numeric features")
    return Preprocessing(data, numeric)
