"""Resolve a user's ``pkg.mod:attr`` import path and call what it names, errors as messages."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from fl_client.errors import ClientError, ConfigError

__all__ = ["call_factory", "import_object", "is_import_path"]


def is_import_path(spec: str) -> bool:
    return ":" in spec


def _current_folder_on_path() -> None:
    # `python -m fl_client` puts the current folder first on sys.path, the `hefl-client`
    # script does not: a hospital's ./my_models.py must be found by both.
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)


def import_object(spec: str, what: str) -> Any:
    """Import ``pkg.mod:attr`` (``attr`` may be dotted) and return the attribute.

    The current folder is on ``sys.path``, as with ``python -m``.

    Raises
    ------
    ConfigError
        Naming ``spec``: not an import path, its module fails to import (whatever the
        exception), no such attribute, or not callable.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{what} {spec!r} is not of the form 'package.module:name'")
    _current_folder_on_path()
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what} {spec!r}: cannot import {module_name!r}: {exc}") from exc
    except Exception as exc:  # the user's module: any error is a message
        raise ConfigError(
            f"{what} {spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what} {spec!r}: {module_name!r} has no {attr!r}") from None
    if not callable(obj):
        raise ConfigError(f"{what} {spec!r} is not callable")
    return obj


def call_factory(factory: Any, name: str, what: str, **kwargs: Any) -> Any:
    """``factory(**kwargs)``, any exception it raises a ``ConfigError`` naming ``name``.

    An error of ``fl_client`` itself (a built-in's own check) passes unchanged.
    """
    try:
        return factory(**kwargs)
    except ClientError:
        raise
    except Exception as exc:  # the user's code: any error is a message
        raise ConfigError(f"{what} {name!r} raised {type(exc).__name__}: {exc}") from exc
