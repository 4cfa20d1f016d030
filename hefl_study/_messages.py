"""Pydantic's validation errors as located plain sentences (never a pydantic dump)."""

from __future__ import annotations

import datetime
import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from hefl_study._errors import Problem

__all__ = ["format_location", "problems_from_validation"]

_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}
_TYPES = {
    "float_type": "a number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "string_type": "a string",
    "tuple_type": "an array",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def format_location(loc: Sequence[int | str]) -> str:
    """``('data', 'features', 2, 'categories')`` → ``data.features[2].categories``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "spec"


def _kind(value: object) -> str:
    """A TOML reader's name for what was written."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return "a date or time"
    return type(value).__name__


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _unwrap(annotation: Any) -> Any:
    """The model class or element type inside ``X | None``, ``tuple[X, ...]``, ``Annotated``."""
    while True:
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin is typing.Annotated or (
            origin in (typing.Union, types.UnionType, tuple, list) and args
        ):
            annotation = args[0]
        else:
            return annotation


def _allowed_keys(root: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The keys the table at ``loc`` takes (``[]`` where that is not a model)."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return []
        model = _unwrap(fields[part].annotation)
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields is not None else []


def _sentence(error: ErrorDetails, root: type[BaseModel]) -> str:
    kind, loc, ctx, value = error["type"], error["loc"], error.get("ctx", {}), error["input"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(root, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key{hint} (allowed here: {', '.join(allowed)})"
    if kind == "literal_error":
        return f"must be {ctx['expected']}, not {_shown(value)}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"must be {words} {ctx[key]:g}, not {_shown(value)}"
    if kind == "finite_number":
        return f"must be a finite number, not {_shown(value)}"
    if kind in _TYPES:
        return f"must be {_TYPES[kind]}, not {_kind(value)} ({_shown(value)})"
    if kind == "too_short":
        n = ctx["min_length"]
        return f"needs at least {n} item{'' if n == 1 else 's'}"
    if kind == "invalid-json-value":
        return "must be a string, number, boolean, array or table (not a date or time)"
    if kind == "value_error":
        return str(ctx["error"])
    return str(error["msg"])


def problems_from_validation(exc: ValidationError, root: type[BaseModel]) -> list[Problem]:
    """One ``Problem`` per error of ``exc`` raised validating ``root``.

    A list's "too short" that only follows from its own items being invalid is left
    out: the items' errors say what is wrong.
    """
    errors = exc.errors(include_url=False)
    locs = [tuple(e["loc"]) for e in errors]
    problems = []
    for error, loc in zip(errors, locs, strict=True):
        if error["type"] == "too_short" and any(
            len(other) > len(loc) and other[: len(loc)] == loc for other in locs
        ):
            continue
        problems.append(Problem(format_location(loc), _sentence(error, root)))
    return problems
