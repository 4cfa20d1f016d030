"""The study's [privacy] section: validated, located errors, and no hash change without it."""

from __future__ import annotations

from typing import Any

import pytest

from hefl_study import SpecError, spec_from_json, spec_from_mapping, spec_to_json

_BASE: dict[str, Any] = {
    "name": "private",
    "model": {"name": "logistic"},
    "data": {"task": "binary", "classes": [0, 1], "input_shape": [4]},
    "stop": {"target_updates": 10},
}


def _with(privacy: Any) -> dict[str, Any]:
    return {**_BASE, "privacy": privacy}


def test_a_study_without_privacy_keeps_its_canonical_form() -> None:
    spec = spec_from_mapping(_BASE)

    assert spec.privacy is None
    assert "privacy" not in spec_to_json(spec)


def test_a_private_study_is_filled_with_defaults_and_hashes_apart() -> None:
    spec = spec_from_mapping(_with({"epsilon": 3, "rounds": 20}))

    assert spec.privacy is not None
    assert spec.privacy.model_dump() == {
        "level": "sample",
        "clip": None,
        "epsilon": 3.0,
        "delta": 1e-5,
        "max_grad_norm": 1.0,
        "accountant": "rdp",
        "rounds": 20,
        "noise_multiplier": None,
    }
    assert spec.sha256 != spec_from_mapping(_BASE).sha256


@pytest.mark.parametrize(
    ("privacy", "problem"),
    [
        ({"epsilon": 3}, "privacy: give exactly one of rounds"),
        ({"epsilon": 3, "rounds": 5, "noise_multiplier": 1.0}, "privacy: give exactly one"),
        ({"epsilon": 0, "rounds": 5}, "privacy.epsilon: must be greater than 0"),
        ({"epsilon": 3, "rounds": 5, "delta": 1}, "privacy.delta: must be less than 1"),
        ({"epsilon": 3, "rounds": 5, "accountant": "gdp"}, "privacy.accountant: must be"),
        ({"epsilon": 3, "rounds": 5, "max_grad_norm": -1}, "privacy.max_grad_norm"),
        ({"epsilon": 3, "rounds": 0}, "privacy.rounds"),
        ({"epsilon": "3", "rounds": 5}, "privacy.epsilon"),
        ({"epsilon": 3, "rounds": 5, "sigma": 1}, "privacy.sigma"),
        ({"rounds": 5}, "privacy: epsilon: the sample level needs"),
        ({"epsilon": 3, "rounds": 5, "clip": 1.0}, "privacy: clip bounds a hospital"),
        ({"level": "hospital", "clip": 1.0}, 'level = "hospital" needs clip and noise_multiplier'),
        ({"level": "hospital", "noise_multiplier": 1.0}, "needs clip and noise_multiplier"),
        (
            {"level": "hospital", "clip": 1.0, "noise_multiplier": 1.0, "epsilon": 3},
            'privacy: epsilon: sample-level settings, not for level = "hospital"',
        ),
        (
            {"level": "hospital", "clip": 1.0, "noise_multiplier": 1.0, "max_grad_norm": 1.0},
            "max_grad_norm: sample-level settings",
        ),
        ({"level": "hospital", "clip": 0, "noise_multiplier": 1.0}, "privacy.clip"),
        ({"level": "row", "epsilon": 3, "rounds": 5}, "privacy.level"),
    ],
)
def test_a_bad_privacy_section_is_reported_where_it_is(privacy: Any, problem: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_mapping(_with(privacy))

    assert problem in str(caught.value)


def test_a_sample_level_study_keeps_the_hash_it_had_before_the_hospital_level() -> None:
    spec = spec_from_mapping(_with({"epsilon": 3, "rounds": 20}))

    assert '"level"' not in spec_to_json(spec)
    assert '"clip"' not in spec_to_json(spec)
    assert (
        spec.sha256
        == spec_from_mapping(_with({"epsilon": 3, "rounds": 20, "level": "sample"})).sha256
    )


def test_a_hospital_level_study_names_its_level_clip_and_noise() -> None:
    spec = spec_from_mapping(
        _with({"level": "hospital", "clip": 0.5, "noise_multiplier": 1.2, "delta": 1e-4})
    )

    assert spec.privacy is not None
    assert (spec.privacy.level, spec.privacy.clip, spec.privacy.noise_multiplier) == (
        "hospital",
        0.5,
        1.2,
    )
    assert '"level":"hospital"' in spec_to_json(spec)
    assert '"epsilon"' not in spec_to_json(spec)
    assert spec_from_json(spec_to_json(spec)) == spec
