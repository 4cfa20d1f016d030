"""Read a hospital's table from CSV or Parquet into plain columns of cells; no schema check."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fl_client.errors import DataError

__all__ = ["Cell", "Table", "read_table", "table_from_columns"]

# What a cell may hold: CSV gives str; Parquet gives numbers, bool, str, None (and, for
# types a study cannot use, dates or bytes, which the schema check refuses).
Cell = object

_CSV = (".csv",)
_PARQUET = (".parquet", ".pq")


@dataclass(frozen=True)
class Table:
    """A table as read: column names in file order and each column's cells.

    Attributes
    ----------
    source
        Where it came from (a path), for messages.
    columns
        Column names, as in the file (a CSV header is stripped of surrounding spaces).
    cells
        Each column's cells; every column has ``n_rows`` of them. CSV cells are text as
        in the file, surrounding spaces included.
    n_rows
        Data rows, the header not counted. Messages number rows from 1.
    """

    source: str
    columns: tuple[str, ...]
    cells: dict[str, Sequence[Cell]]
    n_rows: int


def table_from_columns(columns: Mapping[str, Sequence[Cell]], source: str = "table") -> Table:
    """A ``Table`` from columns already in memory (all of the same length)."""
    lengths = {len(cells) for cells in columns.values()}
    if len(lengths) > 1:
        raise DataError(f"{source}: columns of different lengths {sorted(lengths)}")
    return Table(source, tuple(columns), dict(columns), lengths.pop() if lengths else 0)


def _unique_header(source: str, names: list[str]) -> None:
    twice = sorted(name for name, n in Counter(names).items() if n > 1)
    if twice:
        raise DataError(
            f"{source}: the header names column(s) {', '.join(map(repr, twice))} more than once"
        )


def _read_csv(path: Path) -> Table:
    source = str(path)
    try:
        # utf-8-sig: spreadsheet programs often start a CSV with a byte-order mark
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{source}: cannot read it as CSV: {exc}") from exc
    if not rows:
        raise DataError(f"{source}: empty file (no header row)")
    header = [name.strip() for name in rows[0]]
    _unique_header(source, header)
    if set(map(len, rows)) != {len(header)}:
        ragged = [i for i, row in enumerate(rows[1:], start=1) if len(row) != len(header)]
        raise DataError(
            f"{source}: row {ragged[0]} has {len(rows[ragged[0]])} fields, the header has "
            f"{len(header)} ({len(ragged)} such row{'s' if len(ragged) > 1 else ''})"
        )
    data = list(zip(*rows[1:], strict=True)) or [() for _ in header]
    cells: dict[str, Sequence[Cell]] = dict(zip(header, data, strict=True))
    return Table(source, tuple(header), cells, len(rows) - 1)


def _read_parquet(path: Path) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = str(path)
    try:
        arrow = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{source}: cannot read it as Parquet: {exc}") from exc
    names = [str(name) for name in arrow.column_names]
    _unique_header(source, names)
    cells: dict[str, Sequence[Cell]] = {
        name: arrow.column(j).to_pylist() for j, name in enumerate(names)
    }
    return Table(source, tuple(names), cells, arrow.num_rows)


def read_table(path: str | Path) -> Table:
    """Read a CSV (``.csv``) or Parquet (``.parquet``, ``.pq``) file.

    Raises
    ------
    DataError
        The file is unreadable, of another kind, or malformed (a header naming a column
        twice, a CSV row with another number of fields than the header).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _CSV:
        return _read_csv(path)
    if suffix in _PARQUET:
        return _read_parquet(path)
    raise DataError(f"{path}: not a table hefl reads; use a .csv or .parquet file")
