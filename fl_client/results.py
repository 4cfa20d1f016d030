"""A job's current model at this hospital: scored on any table (evaluate), or exported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fl_client.adaptation import adapt_model, adaptation_config, adaptation_rows
from fl_client.data import ClientData
from fl_client.errors import ConfigError
from fl_client.events import EventSink
from fl_client.export import write_export
from fl_client.hospital_data import load_job_data
from fl_client.jobspec import fetch_spec
from fl_client.rounds.loop import load_global
from fl_client.scoring import Metrics
from fl_client.session import Connection, job_state, open_job
from fl_client.settings import ClientSettings
from fl_client.table import encode_rows, fit_rows, preprocessing_from_json, rows_dataset
from fl_client.training import evaluate, planned_steps

__all__ = ["Evaluation", "evaluate_job", "export_job"]


@dataclass(frozen=True)
class Evaluation:
    """The current model of a job on some rows.

    Attributes
    ----------
    preprocessing
        ``"training"``: the table was encoded with this hospital's training record;
        ``"fitted"``: it had none, so the statistics were fitted on this table;
        ``None``: a factory's data (its held-out split).
    """

    job: str
    version: int
    data: str
    preprocessing: str | None
    metrics: Metrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "version": self.version,
            "data": self.data,
            "preprocessing": self.preprocessing,
            "metrics": self.metrics,
        }


def _rows_to_score(
    settings: ClientSettings, connection: Connection, job: str, source: str
) -> tuple[ClientData, str | None]:
    _, spec = fetch_spec(connection.server.for_job(job))
    if not spec.data.is_table:
        loaded = load_job_data(spec, source, site=settings.site, args=settings.data_args)
        return loaded.client_data, None
    if settings.site is not None or settings.data_args:
        raise ConfigError("--site and --data-arg are for a data factory, not a table")
    record = job_state(connection.state, spec).load_preprocessing()
    if record is not None:
        rows, how = encode_rows(preprocessing_from_json(record), source), "training"
    else:
        _, rows = fit_rows(spec.data, source)
        how = "fitted"
    dataset = rows_dataset(rows)
    shape = spec.data.example_shape
    return ClientData(dataset, dataset, shape, spec.data.n_classes, source), how


def evaluate_job(
    settings: ClientSettings, connection: Connection, *, events: EventSink
) -> Evaluation:
    """Pull and decrypt the current model of ``settings.job`` and score it on
    ``settings.data`` with the metrics of the study's task.

    A table is encoded with this hospital's training preprocessing of the job if it
    has one, else with statistics fitted on the table itself (``preprocessing`` says
    which); a factory's data is scored on its held-out split.

    Raises
    ------
    ConfigError
        No job or data named, or data of another kind than the study takes.
    DataError
        The data does not fit the study.
    """
    if settings.job is None or settings.data is None:
        raise ConfigError("evaluate needs --job NAME and --data PATH")
    data, how = _rows_to_score(settings, connection, settings.job, settings.data)
    *_, ctx = open_job(settings, connection, events=events, data=data)
    version = load_global(ctx)
    result = evaluate(ctx.model, data.test, ctx.train_config.task)
    return Evaluation(ctx.spec.name, version, settings.data, how, result.to_metrics())


def export_job(
    settings: ClientSettings,
    connection: Connection,
    out: Path,
    *,
    force: bool = False,
    adapt_epochs: int = 0,
    events: EventSink,
) -> dict[str, Any]:
    """Export the current model of ``settings.job`` with this hospital's personal tensors
    and preprocessing record to ``out`` (``fl_client.export``); the ``export.json`` record.

    With ``adapt_epochs``, the model is first adapted to this hospital's rows
    (``fl_client.adaptation``): ``settings.data`` loaded and split as training does, the
    study's local training run for that many epochs on the training rows, both models
    scored on the held-out rows; ``export.json`` records it under ``adaptation``.

    Raises
    ------
    ConfigError
        ``out`` is not empty (without ``force``); a table study this hospital has no
        preprocessing record of (it never trained the job on its table);
        ``adapt_epochs`` below 0, or without data (``settings.data``, read only to adapt);
        a table encoded otherwise than this hospital's training record.
    DataError
        The data does not fit the study.
    """
    if settings.job is None:
        raise ConfigError("export needs --job NAME")
    if adapt_epochs < 0:
        raise ConfigError(f"--adapt-epochs must be 0 or more, not {adapt_epochs}")
    if adapt_epochs and settings.data is None:
        raise ConfigError(
            "--adapt-epochs needs --data: the table (or data factory) this hospital trained "
            "the job on"
        )
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"{out} is not empty: choose another --out, or pass --force")
    *_, ctx = open_job(settings, connection, events=events)
    record = ctx.state.load_preprocessing()
    if ctx.spec.data.is_table and record is None:
        raise ConfigError(
            f"this hospital has no preprocessing record for job {ctx.spec.name!r}: train it "
            f"on your table first (hefl-client train --job {ctx.spec.name} --data PATH)"
        )
    data = None
    if adapt_epochs:
        assert settings.data is not None
        data = adaptation_rows(
            ctx.spec, settings.data, site=settings.site, args=settings.data_args, record=record
        )
    version = load_global(ctx)
    adaptation = None
    if data is not None:
        config = adaptation_config(ctx.train_config, adapt_epochs)
        with events.bar(planned_steps(data.train, config), "adapt", "step") as bar:
            adaptation = adapt_model(
                ctx.model,
                data,
                ctx.train_config,
                adapt_epochs,
                version=version,
                on_step=lambda _loss: bar.update(),
            )
    return write_export(
        out,
        spec=ctx.spec,
        model=ctx.model,
        version=version,
        preprocessing_json=record,
        adaptation=None
        if adaptation is None
        else adaptation.to_dict(private_study=ctx.spec.privacy is not None),
        force=force,
    )
