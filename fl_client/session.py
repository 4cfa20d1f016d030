"""A client session: credential, transports, and one job's spec, data, model and rounds."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fl_client.connection import Connection, connect
from fl_client.data import ClientData
from fl_client.errors import ConfigError, LocalStateError
from fl_client.events import EventSink
from fl_client.hospital_data import JobData, load_job_data
from fl_client.jobspec import compression_config, fetch_spec, train_config
from fl_client.models import model_from_spec
from fl_client.rounds.context import RoundContext
from fl_client.rounds.keys import KeyCache, LayoutCache
from fl_client.rounds.port import JobInfo, SecretContextSource, ServerPort
from fl_client.settings import ClientSettings
from fl_client.state import JobState, LocalState
from fl_client.table import preprocessing_to_json
from hefl_study import StudySpec, spec_to_json

if TYPE_CHECKING:
    from fl_client.privacy import HospitalPrivacy

__all__ = [
    "Connection",
    "Session",
    "connect",
    "job_state",
    "open_job",
    "open_session",
    "round_context",
]


@dataclass
class Session:
    """An enrolled client ready to train one job: its connection, the job, its rounds."""

    connection: Connection
    job: JobInfo
    spec: StudySpec
    data: JobData
    context: RoundContext

    def close(self) -> None:
        try:
            self.context.state.close()  # the last acknowledged progress, on disk
        finally:
            self.connection.close()


def open_session(
    settings: ClientSettings,
    *,
    events: EventSink,
    data: JobData | ClientData | None = None,
    keyauth_transport: httpx.BaseTransport | None = None,
    server_transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Session:
    """Connect, fetch the job and its verified spec, load and check the data, build the model.

    Nothing is sent to the server but reads: the layout and initial model go up with
    the first round, once everything here has been checked.

    Parameters
    ----------
    settings
        This hospital's own settings; ``settings.job`` names the job.
    events
        Where the rounds report what they do.
    data
        This hospital's data; by default loaded from ``settings.data`` and checked
        against the spec.
    keyauth_transport, server_transport
        httpx transports to use instead of the network (tests).

    Raises
    ------
    ConfigError
        No job named; data that is not the kind the study takes; a model factory that
        fails or a model that does not fit the study.
    SpecMismatchError
        The spec the server gave is not the job's.
    DataError
        The data does not fit the study.
    """
    if settings.job is None:
        raise ConfigError("which job? give --job NAME (hefl-client jobs lists them)")
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    connection = connect(
        settings,
        keyauth_transport=keyauth_transport,
        server_transport=server_transport,
        sleep=sleep,
        clock=clock,
    )
    try:
        job, spec, loaded, context = open_job(
            settings, connection, events=events, data=data, load_data=True, sleep=sleep, clock=clock
        )
    except BaseException:
        connection.close()
        raise
    joined = loaded if isinstance(loaded, JobData) else JobData(loaded, None, loaded.site)
    return Session(connection, job, spec, joined, context)


def open_job(
    settings: ClientSettings,
    connection: Connection,
    *,
    events: EventSink,
    data: JobData | ClientData | None = None,
    load_data: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[JobInfo, StudySpec, JobData | ClientData, RoundContext]:
    """The job ``settings.job``, its verified spec, the data and the rounds' context.

    ``data`` is what the context trains and scores on; without it, ``settings.data``
    loaded and checked against the spec if ``load_data``, else no rows (to pull the
    model only).

    Raises
    ------
    ConfigError
        No job or data named, or a model that does not fit the study.
    SpecMismatchError
        The spec the server gave is not the job's.
    DataError
        The data does not fit the study.
    """
    if settings.job is None:
        raise ConfigError("which job? give --job NAME (hefl-client jobs lists them)")
    port = connection.server.for_job(settings.job)
    job, spec = fetch_spec(port)
    if data is None and load_data:
        if settings.data is None:
            raise ConfigError("which data? give --data PATH (or a data factory)")
        data = load_job_data(spec, settings.data, site=settings.site, args=settings.data_args)
    elif data is None:
        nothing = TensorDataset(torch.zeros((0, *spec.data.example_shape)), torch.zeros(0))
        data = ClientData(nothing, nothing, spec.data.example_shape, spec.data.n_classes, "")
    context = round_context(
        settings,
        spec,
        port,
        connection.secret_contexts(),
        events=events,
        state=connection.state,
        data=data,
        sleep=sleep,
        clock=clock,
    )
    context.client_id = connection.credential.client_id
    context.job = job
    return job, spec, data, context


def job_state(state: LocalState, spec: StudySpec) -> JobState:
    """``jobs/<job>/`` of the state directory, holding this spec (saved the first time).

    Raises
    ------
    LocalStateError
        The directory holds another spec under this job's name (a server reset?): its
        progress, journal and cache belong to another study.
    """
    jobs = state.job(spec.name)
    canonical = spec_to_json(spec)
    stored = jobs.load_spec()
    if stored is None:
        jobs.save_spec(canonical)
    elif stored != canonical:
        raise LocalStateError(
            f"{jobs.root} holds the state of another study named {spec.name!r}; move it "
            "away (or use another --state-dir) to train the job the server has now"
        )
    return jobs


def _privacy(
    spec: StudySpec, model: nn.Module, data: ClientData, jobs: JobState
) -> HospitalPrivacy | None:
    """This hospital's DP-SGD when the study asks for it, with what it has spent so far.

    Raises
    ------
    ConfigError
        The model has a layer DP-SGD cannot train (named), or the ledger's accountant
        is not the study's.
    """
    if spec.privacy is None or spec.privacy.level != "sample":
        return None  # hospital-level DP: the client clips its update (``prepare_update``)
    if len(data.train) == 0:
        return None  # a context that only pulls the model (export) trains nothing
    # Opacus takes seconds to import: only a study with [privacy] pays for it
    from fl_client.privacy import HospitalPrivacy, check_private_model

    check_private_model(model)
    return HospitalPrivacy(spec.privacy, data.train, train_config(spec), jobs.load_privacy())


def round_context(
    settings: ClientSettings,
    spec: StudySpec,
    server: ServerPort,
    secret_contexts: SecretContextSource,
    *,
    events: EventSink,
    data: JobData | ClientData,
    state: LocalState | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> RoundContext:
    """What the rounds of ``spec``'s job need, over any ``server`` port.

    Parameters
    ----------
    server
        The job on fl_server as the rounds see it (a ``JobClient``, or an in-memory fake).
    secret_contexts
        Fetches a key epoch's secret context the state directory does not hold yet.
    data
        This hospital's checked data (with its preprocessing record, saved for the job).
    state
        The local state directory; by default ``settings.state_dir``.
    """
    if state is None:
        state = LocalState(settings.state_dir)
    jobs = job_state(state, spec)
    client_data = data.client_data if isinstance(data, JobData) else data
    if isinstance(data, JobData) and data.preprocessing is not None:
        jobs.save_preprocessing(preprocessing_to_json(data.preprocessing))
    model = model_from_spec(spec)
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return RoundContext(
        settings=settings,
        spec=spec,
        server=server,
        keys=KeyCache(state, secret_contexts, events),
        layouts=LayoutCache(initial_state, spec.communication.personal),
        state=jobs,
        events=events,
        model=model,
        data=client_data,
        train_config=train_config(spec),
        compression=compression_config(spec),
        sleep=sleep,
        clock=clock,
        cache=jobs.load_model_cache(),
        privacy=_privacy(spec, model, client_data, jobs),
        combined_requests=settings.round_requests != "separate",
        lease_with_update=settings.round_requests == "one",
    )
