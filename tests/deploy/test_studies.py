"""The studies in deploy/studies: valid, and the demo's is the example's but for its stop rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from hefl_study import load_spec

STUDIES = Path(__file__).parents[2] / "deploy" / "studies"


@pytest.mark.parametrize("name", ["heart-disease", "heart-disease-demo"])
def test_each_study_is_valid_and_named_as_its_file(name: str) -> None:
    assert load_spec(STUDIES / f"{name}.toml").name == name


def test_the_demo_study_is_the_example_but_for_name_description_and_stop() -> None:
    example = load_spec(STUDIES / "heart-disease.toml").model_dump()
    demo = load_spec(STUDIES / "heart-disease-demo.toml").model_dump()

    differ = sorted(key for key in example if example[key] != demo[key])

    assert differ == ["description", "name", "stop"]
    assert demo["stop"]["target_updates"] == 60


def test_the_walk_through_shows_the_example_study_as_it_is() -> None:
    doc = (STUDIES.parents[1] / "docs" / "studies.md").read_text(encoding="utf-8")
    spec = (STUDIES / "heart-disease.toml").read_text(encoding="utf-8")

    shown = doc.split("```toml\n", 1)[1].split("```", 1)[0]

    assert shown == spec
