"""An enrolled client's connections to keyauth and fl_server, opened without loading torch."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from fl_client.rounds.port import SecretContextSource
from fl_client.settings import ClientSettings
from fl_client.state import Credential, LocalState
from fl_client.transport import ClientOptions, KeyauthClient, ServerClient, TokenManager

__all__ = ["Connection", "connect"]


@dataclass
class Connection:
    """An enrolled client's open connections to keyauth and fl_server."""

    credential: Credential
    state: LocalState
    keyauth: KeyauthClient
    tokens: TokenManager
    server: ServerClient

    def secret_contexts(self) -> SecretContextSource:
        """Fetches a key epoch's secret context from keyauth with a fresh access token."""
        return lambda epoch: self.keyauth.secret_context(self.tokens.get(), epoch)

    def close(self) -> None:
        self.keyauth.close()
        self.server.close()


def connect(
    settings: ClientSettings,
    *,
    keyauth_transport: httpx.BaseTransport | None = None,
    server_transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Connection:
    """Load the credential and connect to keyauth and fl_server (nothing is sent yet).

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
    return Connection(credential, state, keyauth, tokens, server)
