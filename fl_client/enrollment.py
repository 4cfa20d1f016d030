"""Enrollment: redeem a token once; store the credential and the secret context (0600)."""

from __future__ import annotations

import httpx

from crypto import get_profile
from fl_client.errors import ConfigError, NotEnrolledError
from fl_client.events import Enrolled, EventSink
from fl_client.settings import ClientSettings
from fl_client.state import Credential, LocalState
from fl_client.transport import ClientOptions, KeyauthClient

__all__ = ["enroll"]


def enroll(
    settings: ClientSettings,
    token: str,
    *,
    transport: httpx.BaseTransport | None = None,
    reporter: EventSink | None = None,
) -> Credential:
    """Redeem an enrollment token; store the credential and the secret context (0600).

    Refuses to overwrite an existing credential: enrolling twice would silently drop
    the first identity.

    Parameters
    ----------
    settings
        ``state_dir``, ``keyauth_url`` and how to reach it.
    token
        The single-use enrollment token.
    transport
        An httpx transport to use instead of the network (tests).
    reporter
        Told ``enrolled`` at the end.
    """
    state = LocalState(settings.state_dir)
    try:
        existing: Credential | None = state.load_credential()
    except NotEnrolledError:
        existing = None
    if existing is not None:
        raise ConfigError(
            f"{settings.state_dir} already holds the credential of client "
            f"{existing.client_name!r} ({existing.client_id}); use another --state-dir"
        )
    client = KeyauthClient(
        ClientOptions.from_settings(settings.keyauth_url, settings, transport=transport)
    )
    try:
        answer = client.enroll(token)
        credential = Credential(
            keyauth_url=client.base_url,
            client_id=answer.client_id,
            client_name=answer.client_name,
            client_secret=answer.client_secret,
            key_epoch=answer.key_epoch,
            profile=answer.profile,
        )
        # Store the secret before the first access token: that token confirms the
        # enrollment, after which keyauth never shows the secret again.
        state.save_credential(credential)
        access = client.issue_token(credential.client_id, credential.client_secret)
        context = client.secret_context(access.token, answer.key_epoch)
        get_profile(context.profile)  # an unknown profile is an error now, not mid-training
        state.save_secret_context(context.key_epoch, context.profile, context.data)
    finally:
        client.close()
    if reporter is not None:
        reporter.emit(
            Enrolled(
                client_id=credential.client_id,
                client_name=credential.client_name,
                key_epoch=credential.key_epoch,
                profile=credential.profile,
                state_dir=str(settings.state_dir),
            )
        )
    return credential
