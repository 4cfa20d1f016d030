"""Resolve a user's ``pkg.mod:attr`` import path to the object it names."""

from __future__ import annotations

import importlib
from typing import Any

from fl_client.errors import ConfigError

__all__ = ["import_object", "is_import_path"]


def is_import_path(spec: str) -> bool:
    return ":" in spec


def import_object(spec: str, what: str) -> Any:
    """Import ``pkg.mod:attr`` (``attr`` may be dotted) and return the attribute."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{what} {spec!r} is not of the form 'package.module:name'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what} {spec!r}: cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what} {spec!r}: {module_name!r} has no {attr!r}") from None
    if not callable(obj):
        raise ConfigError(f"{what} {spec!r} is not callable")
    return obj
