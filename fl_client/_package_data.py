"""Data files inside installed packages: located without importing them, checked by SHA-256."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
from pathlib import Path

from fl_client.errors import DataError

__all__ = ["checked_csv_rows", "package_dir"]


def package_dir(package: str, missing: str) -> Path:
    """Where ``package`` is installed, found without executing it.

    Raises
    ------
    DataError
        ``missing``: it is not installed (say how to install it).
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(missing)
    return Path(next(iter(spec.submodule_search_locations)))


def checked_csv_rows(path: Path, sha256: str, release: str, install: str) -> list[dict[str, str]]:
    """The rows of the CSV file at ``path``, which must be ``release``'s (its ``sha256``).

    Raises
    ------
    DataError
        The file is unreadable or another one; the message says how to reinstall.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{release} is installed but {path} is unreadable: {exc}") from exc
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise DataError(
            f"{path} is not the file of {release} (checksum differs); reinstall with: {install}"
        )
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
