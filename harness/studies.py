"""Study specs for test jobs: valid specs whose ``[server]`` and ``[stop]`` a run chooses."""

from __future__ import annotations

from typing import Any

import hefl_study

__all__ = ["SERVER_KEYS", "STOP_KEYS", "study_json", "study_mapping"]

# The spec's keys that configure a job at the server.
SERVER_KEYS = frozenset(
    {"staleness", "staleness_a", "staleness_b", "mixing", "max_staleness", "buffer_size"}
    | {"max_training", "policy", "weighting", "weighting_clip", "schedule", "schedule_half"}
    | {"round_clients"}
)
STOP_KEYS = frozenset({"target_updates", "max_wall_seconds", "metric", "value", "min_sites"})


def study_mapping(
    name: str,
    *,
    profile: str,
    inputs: int = 5,
    training: dict[str, Any] | None = None,
    **job: Any,
) -> dict[str, Any]:
    """A study spec as a mapping: a logistic model on ``inputs`` values a data factory
    gives (binary task); ``job`` holds its ``[server]`` and ``[stop]`` keys
    (``stop.target_updates`` 1000 unless a rule is given; a constant server step unless
    ``schedule`` is given).

    The server never looks at the model or the data: tests that post their own layouts
    and envelopes need no more. ``inputs=13`` fits the bundled heart-disease hospitals
    (``hefl-client train --data heart-disease --site NAME``).
    """
    unknown = set(job) - SERVER_KEYS - STOP_KEYS
    if unknown:
        raise ValueError(f"not a [server] or [stop] key: {sorted(unknown)}")
    stop = {k: v for k, v in job.items() if k in STOP_KEYS}
    return {
        "name": name,
        "description": f"the {name} study",
        "profile": profile,
        "model": {"name": "logistic"},
        "data": {"task": "binary", "classes": [0, 1], "input_shape": [inputs]},
        "training": training or {},
        # a constant step unless asked: the services' tests check updates against plain
        # sums of what they acknowledged, weighed by staleness and data share only
        "server": {"schedule": "constant", **{k: v for k, v in job.items() if k in SERVER_KEYS}},
        "stop": stop or {"target_updates": 1000},
    }


def study_json(name: str, *, profile: str, **options: Any) -> str:
    """The canonical JSON of ``study_mapping``'s spec: what ``POST /v1/jobs`` takes."""
    spec = hefl_study.spec_from_mapping(study_mapping(name, profile=profile, **options))
    return hefl_study.spec_to_json(spec)
