"""Check a table against a study's data schema and parse it, collecting every problem."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from fl_client._table_read import Cell, Table
from fl_client.errors import DataError
from hefl_study import DataSpec

__all__ = ["ParsedTable", "parse_table"]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

_SHOWN = 5  # distinct bad values quoted in a message


@dataclass(frozen=True)
class ParsedTable:
    """A table that fits the schema, reduced to the rows kept.

    Attributes
    ----------
    rows
        Index (from 0) in the source table of each kept row.
    numeric
        Each numeric feature's values, ``NaN`` where missing (to impute).
    codes
        Each categorical feature's category index, ``-1`` where missing (all-zero one-hot).
    labels
        Class index (int64) or regression target (float64); ``None`` if not read.
    """

    rows: Ints
    numeric: dict[str, Floats]
    codes: dict[str, Ints]
    labels: Ints | Floats | None


# How one cell reads: its value (NaN or a category index), missing, refused.
_Reading = tuple[float, bool, bool]
_MISSING: _Reading = (math.nan, True, False)
_REFUSED: _Reading = (math.nan, False, True)


@dataclass(frozen=True)
class _Column:
    """One column's parse: values, which rows are missing, what was refused and where."""

    values: Floats  # NaN where missing or refused; a category index for a coded column
    missing: npt.NDArray[np.bool_]
    bad: dict[str, int]  # refused value -> first row (from 1)
    bad_rows: int

    @classmethod
    def read(cls, cells: Sequence[Cell], reading: Callable[[Cell], _Reading]) -> _Column:
        try:
            # a column holds few distinct values: read each once, keyed by type too
            # (True == 1, but they read as different text)
            keys = list(zip(map(type, cells), cells, strict=True))
            seen = {key: reading(key[1]) for key in set(keys)}
            readings = list(map(seen.__getitem__, keys))
        except TypeError:  # an unhashable cell (a Parquet list): read every cell
            readings = list(map(reading, cells))
        table = np.array(readings, dtype=np.float64).reshape(len(cells), 3)
        refused = np.flatnonzero(table[:, 2])
        bad: dict[str, int] = {}
        for i in refused:
            bad.setdefault(_text(cells[int(i)]), int(i) + 1)
        return cls(table[:, 0], table[:, 1].astype(bool), bad, len(refused))


def _text(cell: Cell) -> str:
    """A cell as the text a category or class is written as in the spec."""
    if isinstance(cell, str):
        return cell.strip()
    if isinstance(cell, bool):
        return "true" if cell else "false"
    if isinstance(cell, float | Decimal) and math.isfinite(cell) and cell == int(cell):
        return str(int(cell))
    return str(cell)


def _number(cell: Cell) -> float | None:
    if isinstance(cell, bool | int | float | Decimal):
        return float(cell)
    if isinstance(cell, str):
        try:
            return float(cell)
        except ValueError:
            return None
    return None


def _is_nan(cell: Cell) -> bool:
    # A null or a float NaN is how Parquet (and pandas) store "missing" in any column.
    return cell is None or (isinstance(cell, float) and math.isnan(cell))


def _parse_numeric(cells: Sequence[Cell], tokens: Sequence[str]) -> _Column:
    texts = set(tokens)
    # a token that reads as a number matches that number however written: "0" and "0.0"
    numbers = {v for v in map(_number, tokens) if v is not None and math.isfinite(v)}

    def reading(cell: Cell) -> _Reading:
        if _is_nan(cell) or (isinstance(cell, str) and cell.strip() in texts):
            return _MISSING
        value = _number(cell)
        if value is None or not math.isfinite(value):
            return _REFUSED
        return _MISSING if value in numbers else (value, False, False)

    return _Column.read(cells, reading)


def _parse_coded(cells: Sequence[Cell], known: Sequence[str], tokens: Sequence[str]) -> _Column:
    index = {value: i for i, value in enumerate(known)}
    texts = set(tokens)

    def reading(cell: Cell) -> _Reading:
        text = None if _is_nan(cell) else _text(cell)
        if text is None or text in texts:
            return (-1, True, False)
        return (index[text], False, False) if text in index else (-1, False, True)

    return _Column.read(cells, reading)


def _quoted(values: Sequence[str]) -> str:
    shown = ", ".join(repr(v) for v in values[:_SHOWN])
    return shown + (f" and {len(values) - _SHOWN} more" if len(values) > _SHOWN else "")


def _refusals(name: str, column: _Column, what: str, allowed: Sequence[str] = ()) -> str:
    value, row = next(iter(column.bad.items()))
    rows = f"{column.bad_rows} row{'s' if column.bad_rows > 1 else ''}"
    others = list(column.bad)
    line = f"column {name!r}: {value!r} in row {row} is {what} ({rows}"
    line += f": {_quoted(others)})" if len(others) > 1 else ")"
    if allowed:
        line += f"; allowed: {_quoted(list(allowed))}"
    return line


def _missing_refused(name: str, column: _Column, cells: Sequence[Cell]) -> str | None:
    rows = np.flatnonzero(column.missing)
    if len(rows) == 0:
        return None
    first = cells[rows[0]]
    shown = "an empty cell" if _is_nan(first) or _text(first) == "" else repr(_text(first))
    return (
        f"column {name!r}: {len(rows)} missing value{'s' if len(rows) > 1 else ''} "
        f'(first: {shown} in row {rows[0] + 1}) and its missing policy is "error"'
    )


def _check_columns(table: Table, data: DataSpec, labels: bool) -> list[str]:
    wanted = [f.name for f in data.features] + ([data.label] if labels else [])
    allowed = {*wanted, data.label, *data.ignore}
    present = set(table.columns)
    problems = [
        f"column {name!r}: missing from the table" for name in wanted if name not in present
    ]
    problems += [
        f"column {name!r}: not in the study (neither a feature, the label nor ignored)"
        for name in table.columns
        if name not in allowed
    ]
    return problems


def parse_table(
    table: Table, data: DataSpec, *, labels: bool = True, min_rows: int | None = None
) -> ParsedTable:
    """Check ``table`` against ``data`` and parse it; drop rows as the missing policy says.

    Parameters
    ----------
    labels
        Read and check the label column (when scoring new rows it may be absent).
    min_rows
        Fewest rows that must remain after dropping (``None``: no minimum).

    Raises
    ------
    DataError
        One line per problem, each naming its column: missing or extra columns, a value
        of the wrong type, an unknown category, a label outside the task, a missing value
        where the policy is ``error``, too few rows.
    """
    if data.label is None or not data.is_table:
        raise DataError(
            f"{table.source}: this study's data is not a table (data.input_shape): "
            "load it with a data factory (--data pkg.mod:factory)"
        )
    label_name = data.label
    problems = _check_columns(table, data, labels)
    parsed: dict[str, _Column] = {}
    drops: Counter[str] = Counter()
    keep = np.ones(table.n_rows, dtype=bool)
    label = [data.label] if labels and data.label in table.cells else []
    for name in [f.name for f in data.features if f.name in table.cells] + label:
        feature = next((f for f in data.features if f.name == name), None)
        cells = table.cells[name]
        tokens = feature.missing_values if feature is not None else data.missing_values
        policy = feature.missing if feature is not None else data.missing
        known = feature.categories if feature is not None else data.classes
        if known is None:
            column = _parse_numeric(cells, tokens)
            what = "not a number"
        else:
            column = _parse_coded(cells, known, tokens)
            what = "not a category of the study" if feature is not None else "not a class"
        if column.bad:
            problems.append(_refusals(name, column, what, known or ()))
        missing = column.missing
        if policy == "error":
            refused = _missing_refused(name, column, cells)
            if refused is not None:
                problems.append(refused)
        elif policy == "drop" or feature is None:  # a label cannot be imputed
            drops[name] = int((missing & keep).sum())
            keep &= ~missing
        parsed[name] = column
    n_kept = int(keep.sum())
    if min_rows is not None and n_kept < min_rows:
        dropped = ", ".join(f"{name} {n}" for name, n in drops.items() if n)
        because = (
            f" ({table.n_rows - n_kept} dropped for missing values: {dropped})" if dropped else ""
        )
        problems.append(
            f"rows: {n_kept} usable of {table.n_rows}{because}; the study needs at least {min_rows}"
        )
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise DataError(
            "\n".join([f"{table.source} does not fit the study's data ({count}):", *problems])
        )
    rows = np.flatnonzero(keep).astype(np.int64)
    values = {name: column.values[rows] for name, column in parsed.items()}
    targets: Ints | Floats | None = None
    if label and data.classes is None:
        targets = values[label_name].astype(np.float64)
    elif label:
        targets = values[label_name].astype(np.int64)
    return ParsedTable(
        rows=rows,
        numeric={
            f.name: values[f.name].astype(np.float64) for f in data.features if f.categories is None
        },
        codes={
            f.name: values[f.name].astype(np.int64)
            for f in data.features
            if f.categories is not None
        },
        labels=targets,
    )
