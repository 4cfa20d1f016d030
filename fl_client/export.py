"""A job's model taken home: safetensors weights, the spec, the preprocessing; load, predict.

An export directory holds

* ``model.safetensors``: the decrypted model's ``state_dict`` (shared tensors as the
  server's model, personal ones as this hospital trained them), float32;
* ``spec.json``: the study's canonical JSON, from which the model is built again;
* ``preprocessing.json``: how this hospital encoded its training rows (table studies);
* ``export.json``: the job, the model version, the spec's SHA-256, the time, and the
  adaptation to this hospital's rows if there was one (``fl_client.adaptation``).

``load_exported`` reads it back (never unpickling anything: safetensors and JSON only)
into an ``ExportedModel`` that encodes new rows exactly as training did and predicts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

import hefl_durable
from fl_client.errors import ConfigError, DataError
from fl_client.models import model_from_spec
from fl_client.table import EncodedRows, Preprocessing, Table, encode_rows, preprocessing_from_json
from hefl_study import SpecError, StudySpec, spec_from_json, spec_to_json

__all__ = [
    "EXPORT_FORMAT",
    "ExportedModel",
    "Predictions",
    "load_exported",
    "write_export",
    "write_predictions",
]

EXPORT_FORMAT = "hefl-export/1"
_MODEL, _SPEC, _PREPROCESSING, _META = (
    "model.safetensors",
    "spec.json",
    "preprocessing.json",
    "export.json",
)

Floats = npt.NDArray[np.float64]


def _prepare_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"{out} is not empty: choose another --out, or pass --force")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        # private, like the state directory: the personal tensors and the preprocessing
        # statistics describe this hospital's patients
        hefl_durable.make_private_dir(out)
    except hefl_durable.UnsafePathError as exc:
        raise ConfigError(f"export directory {exc}") from None


def write_export(
    out: Path,
    *,
    spec: StudySpec,
    model: nn.Module,
    version: int,
    preprocessing_json: str | None,
    adaptation: Mapping[str, Any] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write an export directory (see the module's docstring); the ``export.json`` record.

    Raises
    ------
    ConfigError
        ``out`` is not empty and ``force`` is not set, or it cannot be written.
    """
    _prepare_dir(out, force)
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {
        "format": EXPORT_FORMAT,
        "job": spec.name,
        "version": version,
        "spec_sha256": spec.sha256,
        "task": spec.data.task,
        "preprocessing": preprocessing_json is not None,
        "adaptation": None if adaptation is None else dict(adaptation),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    weights = save(tensors, metadata={"job": spec.name, "version": str(version)})
    try:
        hefl_durable.write_atomic(out / _MODEL, weights)
        hefl_durable.write_atomic(out / _SPEC, spec_to_json(spec).encode("utf-8"))
        if preprocessing_json is not None:
            hefl_durable.write_atomic(out / _PREPROCESSING, preprocessing_json.encode("utf-8"))
        elif (out / _PREPROCESSING).exists():
            hefl_durable.remove(out / _PREPROCESSING)  # --force over an older export
        record = json.dumps(meta, indent=1, sort_keys=True).encode("utf-8")
        hefl_durable.write_atomic(out / _META, record)
    except OSError as exc:
        raise ConfigError(f"cannot write the export to {out}: {exc}") from exc
    return meta


@dataclass(frozen=True)
class Predictions:
    """A model's predictions on a table's rows.

    Attributes
    ----------
    rows
        Index (from 0) in the table of each predicted row (rows dropped for a missing
        value are left out).
    outputs
        Raw outputs, float32: one logit (binary), one per class, or one value.
    """

    task: str
    classes: tuple[str, ...]
    rows: npt.NDArray[np.int64]
    outputs: npt.NDArray[np.float32]

    def columns(self) -> dict[str, list[Any]]:
        """``row`` (from 1), then binary ``probability`` (of the positive class, the
        second of the spec's classes) and ``class``; multiclass ``class`` and a
        ``probability:<class>`` per class; regression ``value``."""
        out: dict[str, list[Any]] = {"row": [int(r) + 1 for r in self.rows]}
        raw = self.outputs.astype(np.float64)
        if self.task == "binary":
            logit = raw.reshape(len(raw))
            out["probability"] = (1.0 / (1.0 + np.exp(-logit))).tolist()
            out["class"] = [self.classes[int(v > 0)] for v in logit]
        elif self.task == "multiclass":
            top = raw.max(axis=1, keepdims=True)
            exp = np.exp(raw - top)
            probabilities = exp / exp.sum(axis=1, keepdims=True)
            out["class"] = [self.classes[i] for i in raw.argmax(axis=1)]
            for j, name in enumerate(self.classes):
                out[f"probability:{name}"] = probabilities[:, j].tolist()
        else:
            out["value"] = raw.reshape(len(raw)).tolist()
        return out


@dataclass(frozen=True)
class ExportedModel:
    """An exported model, ready to score new rows.

    Attributes
    ----------
    spec
        The study.
    model
        The model as the hospital held it (float32, in eval mode).
    preprocessing
        How the hospital encoded its training rows (``None`` for a factory's data).
    meta
        ``export.json``: job, version, spec SHA-256, time.
    """

    spec: StudySpec
    model: nn.Module
    preprocessing: Preprocessing | None
    meta: Mapping[str, Any]

    def encode(self, table: Table | str | Path, *, labels: bool = False) -> EncodedRows:
        """A table's rows encoded exactly as training encoded the hospital's own."""
        if self.preprocessing is None:
            raise ConfigError(
                f"job {self.spec.name!r} takes its data from a factory, not a table: pass "
                "the examples to outputs() instead"
            )
        return encode_rows(self.preprocessing, table, labels=labels)

    def outputs(self, features: npt.ArrayLike | torch.Tensor) -> npt.NDArray[np.float32]:
        """The model's raw outputs on a batch of examples (cast to float32)."""
        batch = torch.as_tensor(np.asarray(features)).to(torch.float32)
        with torch.no_grad():
            out: npt.NDArray[np.float32] = self.model.eval()(batch).numpy()
        return out

    def predict(self, table: Table | str | Path) -> Predictions:
        """Predictions on every row of a table that fits the study's schema (the label
        column may be absent)."""
        rows = self.encode(table)
        return Predictions(
            self.spec.data.task,
            tuple(self.spec.data.classes or ()),
            rows.rows,
            self.outputs(rows.features),
        )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None


def load_exported(directory: str | Path) -> ExportedModel:
    """Read an export directory (``hefl-client export``) back.

    The model is built from the spec (a factory model needs its module importable, as
    when training) and its weights loaded from ``model.safetensors``; nothing is
    unpickled.

    Raises
    ------
    ConfigError
        A file is missing or unreadable, the spec is not the one ``export.json`` names,
        or the weights do not fit the model the spec builds.
    """
    root = Path(directory)
    try:
        meta = json.loads(_read_text(root / _META))
        if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
            raise ValueError(f"not a {EXPORT_FORMAT} record")
    except ValueError as exc:
        raise ConfigError(f"{root / _META}: {exc}") from None
    text = _read_text(root / _SPEC)
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != meta.get("spec_sha256"):
        raise ConfigError(f"{root / _SPEC} is not the spec {root / _META} names")
    try:
        spec = spec_from_json(text)
    except SpecError as exc:
        raise ConfigError(f"{root / _SPEC}: {exc}") from None
    model = model_from_spec(spec)
    try:
        model.load_state_dict(load_file(str(root / _MODEL)), strict=True)
    except (OSError, SafetensorError, RuntimeError) as exc:
        raise ConfigError(f"{root / _MODEL}: does not fit the spec's model: {exc}") from None
    preprocessing = None
    if spec.data.is_table:
        try:
            preprocessing = preprocessing_from_json(_read_text(root / _PREPROCESSING))
        except DataError as exc:
            raise ConfigError(f"{root / _PREPROCESSING}: {exc}") from None
        if preprocessing.data != spec.data:
            raise ConfigError(f"{root / _PREPROCESSING} is for another study's data")
    return ExportedModel(spec, model.eval(), preprocessing, meta)


def write_predictions(predictions: Predictions, out: TextIO | None = None) -> str:
    """The predictions as CSV (one row per predicted table row), written to ``out`` too."""
    columns = predictions.columns()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for values in zip(*columns.values(), strict=True):
        writer.writerow([repr(v) if isinstance(v, float) else v for v in values])
    text = buffer.getvalue()
    if out is not None:
        out.write(text)
    return text
