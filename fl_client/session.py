"""A client session built from settings: credential, transports, data, model, round context."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from fl_client.data import ClientData, load_client_data
from fl_client.events import EventSink
from fl_client.models import ModelFactory, build_model, resolve_model
from fl_client.rounds.context import RoundContext
from fl_client.rounds.keys import KeyCache, LayoutCache
from fl_client.rounds.port import SecretContextSource, ServerPort
from fl_client.settings import ClientSettings
from fl_client.state import Credential, LocalState
from fl_client.training import TrainConfig
from fl_client.transport import ClientOptions, KeyauthClient, ServerClient, TokenManager
from fl_client.updates import CompressionConfig

__all__ = ["Session", "compression_config", "open_session", "round_context", "train_config"]


@dataclass
class Session:
    """An enrolled client ready to train: its open connections and its round context."""

    credential: Credential
    keyauth: KeyauthClient
    tokens: TokenManager
    server: ServerClient
    context: RoundContext

    def close(self) -> None:
        self.keyauth.close()
        self.server.close()


def open_session(
    settings: ClientSettings,
    *,
    events: EventSink,
    data: ClientData | None = None,
    model_factory: ModelFactory | None = None,
    keyauth_transport: httpx.BaseTransport | None = None,
    server_transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Session:
    """Load the credential, connect to keyauth and fl_server, load data, build the model.

    Parameters
    ----------
    settings
        Everything configurable (``FLCLIENT_*``).
    events
        Where the rounds report what they do.
    data
        This client's data; by default loaded from ``settings.data`` and ``settings.site``.
    model_factory
        By default resolved from ``settings.model``.
    keyauth_transport, server_transport
        httpx transports to use instead of the network (tests).

    Raises
    ------
    NotEnrolledError
        ``settings.state_dir`` holds no credential yet.
    """
    state = LocalState(settings.state_dir)
    credential = state.load_credential()
    # the key authority that enrolled this client, unless the settings name another
    keyauth_url = (
        settings.keyauth_url
        if "keyauth_url" in settings.model_fields_set
        else credential.keyauth_url
    )
    keyauth = KeyauthClient(
        ClientOptions.from_settings(keyauth_url, settings, transport=keyauth_transport, sleep=sleep)
    )
    tokens = TokenManager(
        keyauth,
        credential.client_id,
        credential.client_secret,
        refresh_margin=settings.token_refresh_margin,
        clock=clock,
    )
    server = ServerClient(
        ClientOptions.from_settings(
            settings.server_url, settings, transport=server_transport, sleep=sleep
        ),
        tokens=tokens,
    )
    context = round_context(
        settings,
        server,
        lambda epoch: keyauth.secret_context(tokens.get(), epoch),
        events=events,
        state=state,
        data=data,
        model_factory=model_factory,
        sleep=sleep,
        clock=clock,
    )
    return Session(credential, keyauth, tokens, server, context)


def round_context(
    settings: ClientSettings,
    server: ServerPort,
    secret_contexts: SecretContextSource,
    *,
    events: EventSink,
    state: LocalState | None = None,
    data: ClientData | None = None,
    model_factory: ModelFactory | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> RoundContext:
    """What the rounds need, over any ``server`` port: data, seeded model, configs, caches.

    Parameters
    ----------
    server
        fl_server as the rounds see it (a ``ServerClient``, or an in-memory fake).
    secret_contexts
        Fetches a key epoch's secret context the state directory does not hold yet.
    state
        The local state directory; by default ``settings.state_dir``.
    """
    if state is None:
        state = LocalState(settings.state_dir)
    data = data or load_client_data(
        settings.data,
        settings.site,
        n_sites=settings.n_sites,
        alpha=settings.dirichlet_alpha,
        seed=settings.data_seed,
        test_fraction=settings.test_fraction,
    )
    factory = model_factory or resolve_model(settings.model)
    model = build_model(factory, data.input_shape, data.n_classes, settings.seed)
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return RoundContext(
        settings=settings,
        server=server,
        keys=KeyCache(state, secret_contexts, events),
        layouts=LayoutCache(initial_state, settings.personal),
        state=state,
        events=events,
        model=model,
        data=data,
        train_config=train_config(settings),
        compression=compression_config(settings),
        sleep=sleep,
        clock=clock,
        cache=state.load_model_cache(),
    )


def train_config(settings: ClientSettings) -> TrainConfig:
    """The local training ``settings`` ask for."""
    return TrainConfig(
        epochs=settings.local_epochs,
        steps=settings.local_steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        optimizer=settings.optimizer,
        momentum=settings.momentum,
    )


def compression_config(settings: ClientSettings) -> CompressionConfig:
    """The block selection ``settings`` ask for."""
    return CompressionConfig(
        method=settings.compression,
        fraction=settings.block_fraction,
        seed=settings.compression_seed,
        error_feedback=settings.error_feedback,
    )
