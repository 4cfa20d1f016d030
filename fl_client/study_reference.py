"""Plaintext baselines of a table study: the spec's encoding, model and training, no cipher.

What the hospitals of a job would reach without encryption, on exactly the rows they
train and score on: each hospital's table read and encoded as ``hefl-client train`` does
(``fl_client.table.load_table``: the spec's split seed, standardization with that
hospital's own training rows), the spec's initial model, local training and compression.

* plaintext federated: the hospitals take turns, each pulling the model its predecessor
  produced, as many updates each as given (``fl_client.reference.plaintext_federated``);
* centralized: one model trained on every hospital's encoded training rows together.

Both are scored on each hospital's held-out rows and pooled as fl_server pools the
hospitals' reports: each metric weighted by the hospital's held-out rows.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

import crypto
from fl_client.data import ClientData
from fl_client.jobspec import compression_config, train_config
from fl_client.models import ModelFactory, resolve_model
from fl_client.reference import centralized_model, plaintext_federated, pooled_eval
from fl_client.table import load_table
from fl_client.training import EvalResult, evaluate
from hefl_study import StudySpec

__all__ = ["StudyBaselines", "study_baselines", "turns"]


@dataclass(frozen=True)
class StudyBaselines:
    """Both baselines, per hospital and pooled.

    Attributes
    ----------
    federated, centralized
        Pooled over the hospitals' held-out rows (row-weighted mean of each metric).
    federated_sites, centralized_sites
        Each hospital's own held-out rows, by the names ``study_baselines`` was given.
    updates
        Updates of the federated run (the length of its schedule).
    centralized_training
        ``"N epochs"`` or ``"N steps"`` of the centralized model.
    """

    federated: EvalResult
    centralized: EvalResult
    federated_sites: dict[str, EvalResult]
    centralized_sites: dict[str, EvalResult]
    updates: int
    centralized_training: str


def turns(updates_per_site: Sequence[int]) -> list[int]:
    """Site indices in turns until each has had its count: ``[2, 1]`` → ``[0, 1, 0]``."""
    remaining = list(updates_per_site)
    schedule: list[int] = []
    while any(remaining):
        for i, left in enumerate(remaining):
            if left:
                schedule.append(i)
                remaining[i] -= 1
    return schedule


def _model_factory(spec: StudySpec) -> ModelFactory:
    factory = resolve_model(spec.model.name or spec.model.factory or "")
    return functools.partial(factory, **spec.model.args) if spec.model.args else factory


def _pooled(datas: Sequence[ClientData]) -> ClientData:
    """Every hospital's encoded rows together (each encoded with its own statistics)."""

    def stacked(split: str) -> TensorDataset:
        parts = [getattr(d, split).tensors for d in datas]
        return TensorDataset(*(torch.cat(column) for column in zip(*parts, strict=True)))

    return replace(datas[0], train=stacked("train"), test=stacked("test"), site="pooled")


def study_baselines(
    spec: StudySpec, tables: Mapping[str, str | Path], updates_per_site: Sequence[int]
) -> StudyBaselines:
    """Plaintext federated and centralized training of ``spec`` on the hospitals' tables.

    Parameters
    ----------
    spec
        A study whose data is a table (``data.features``).
    tables
        Each hospital's ``.csv`` / ``.parquet`` file, by its name.
    updates_per_site
        Updates each hospital makes in the federated run, in the order of ``tables``
        (an encrypted run's counts, to compare with it). The centralized model trains
        for as many epochs as the turns of an average hospital times the spec's local
        epochs (with ``local_steps``: as many steps as the whole federated run).

    Raises
    ------
    DataError
        A table does not fit the study (as for ``hefl-client train``).
    ConfigError
        The spec's model cannot be built.
    """
    names = list(tables)
    datas = [load_table(tables[n], spec.data, site=n).client_data for n in names]
    factory = _model_factory(spec)
    config = train_config(spec)
    schedule = turns(updates_per_site)
    federated = plaintext_federated(
        datas,
        schedule,
        factory=factory,
        # every hospital of a job builds the spec's model and seeds its rounds with it
        seeds=[spec.model.seed] * len(datas),
        init_client=0,
        train_config=config,
        compression=compression_config(spec),
        block_size=crypto.get_profile(spec.profile).block_size,
        step=spec.training.client_step,
        personal=spec.communication.personal,
        weight=lambda _staleness: spec.server.mixing,
    )
    if config.steps is not None:
        central_config = replace(config, steps=config.steps * max(1, len(schedule)))
        trained = f"{central_config.steps} steps"
    else:
        epochs = max(1, round(len(schedule) / len(datas))) * config.epochs
        central_config = replace(config, epochs=epochs)
        trained = f"{epochs} epochs"
    model = centralized_model(
        _pooled(datas), factory=factory, seed=spec.model.seed, train_config=central_config
    )
    central_sites = [evaluate(model, d.test, config.task) for d in datas]
    return StudyBaselines(
        federated=federated.pooled,
        centralized=pooled_eval(central_sites),
        federated_sites=dict(zip(names, federated.per_client, strict=True)),
        centralized_sites=dict(zip(names, central_sites, strict=True)),
        updates=len(schedule),
        centralized_training=trained,
    )
