"""Read a study spec from TOML or canonical JSON, reporting every problem at once."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from hefl_study._checks import (
    check_communication,
    check_data,
    check_model,
    check_server,
    check_stop,
    check_training,
)
from hefl_study._errors import Problem, SpecError
from hefl_study._messages import problems_from_validation
from hefl_study._spec import (
    CommunicationSpec,
    DataSpec,
    ModelSpec,
    ServerSpec,
    StopSpec,
    StudySpec,
    TrainingSpec,
)

__all__ = ["load_spec", "spec_from_json", "spec_from_mapping", "spec_from_toml"]

# Each section's own checks, run for a section that is valid by itself while another is
# not, so one round of fixes sees as many problems as possible.
_SECTIONS: dict[str, tuple[type[BaseModel], Callable[[Any], list[Problem]]]] = {
    "model": (ModelSpec, lambda s: check_model(s, None)),
    "data": (DataSpec, check_data),
    "training": (TrainingSpec, check_training),
    "communication": (CommunicationSpec, check_communication),
    "server": (ServerSpec, check_server),
    "stop": (StopSpec, lambda s: check_stop(s, None)),
}

# Reported for the document as a whole: the place where nesting went too deep is a path
# of hundreds of levels, no help to anyone.
_TOO_DEEP = Problem("spec", "nested too deeply to be a study spec")
# pydantic's own limit, below Python's, and its cycle check (a mapping can hold itself)
_PYDANTIC_TOO_DEEP = frozenset({"recursion_depth_exceeded", "recursion_loop"})


@contextmanager
def _nesting_checked(source: str) -> Iterator[None]:
    """A ``SpecError`` for a document nested too deeply for Python's stack.

    ``json``, ``tomllib`` and validation recurse once per level of nesting: ``[`` written
    10**5 times would otherwise end in a ``RecursionError``.
    """
    try:
        yield
    except RecursionError:
        raise SpecError([_TOO_DEEP], source) from None


def _section_problems(raw: Mapping[str, Any], broken: set[str]) -> list[Problem]:
    problems = []
    for name, (model, check) in _SECTIONS.items():
        if name in broken or not isinstance(raw.get(name), dict):
            continue
        try:
            section = model.model_validate(raw[name])
        except ValidationError:  # cannot happen: its errors would be in ``broken``
            continue
        problems += check(section)
    return problems


def spec_from_mapping(raw: Mapping[str, Any], source: str = "study spec") -> StudySpec:
    """Validate a parsed spec (a TOML or JSON document as Python values).

    Raises
    ------
    SpecError
        Listing every problem found, each with its location.
    """
    with _nesting_checked(source):
        return _validate(raw, source)


def _validate(raw: Mapping[str, Any], source: str) -> StudySpec:
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as exc:
        if any(error["type"] in _PYDANTIC_TOO_DEEP for error in exc.errors()):
            raise SpecError([_TOO_DEEP], source) from None
        problems = problems_from_validation(exc, StudySpec)
        broken = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        raise SpecError([*problems, *_section_problems(raw, broken)], source) from None
    except SpecError as exc:
        raise SpecError(exc.problems, source) from None


def spec_from_toml(text: str, source: str = "study spec") -> StudySpec:
    """Parse and validate a spec written in TOML.

    Raises
    ------
    SpecError
        A TOML syntax error (located by line), or every problem of the spec.
    """
    try:
        with _nesting_checked(source):
            raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([Problem("TOML", str(exc))], source) from None
    return spec_from_mapping(raw, source)


def load_spec(path: str | Path) -> StudySpec:
    """Read, parse and validate the spec file at ``path`` (TOML, UTF-8).

    Raises
    ------
    SpecError
        The file is unreadable or not TOML, or the spec has problems.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SpecError([Problem(str(path), f"cannot read it: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise SpecError([Problem(str(path), "is not UTF-8 text")]) from None
    return spec_from_toml(text, source=str(path))


def spec_from_json(text: str) -> StudySpec:
    """The spec of ``spec_to_json``'s text: ``spec_from_json(spec_to_json(s)) == s``.

    Raises
    ------
    SpecError
        The text is not a JSON object, or the spec in it has problems.
    """
    try:
        with _nesting_checked("study spec"):
            raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError([Problem("JSON", str(exc))]) from None
    if not isinstance(raw, dict):
        raise SpecError([Problem("spec", "must be a JSON object")])
    return spec_from_mapping(raw)
