"""The transport-free service: enrollment, access tokens, revocation, key epochs, admin auth."""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

import crypto
from hefl_wire import ADMIN_ROLE, TokenVerifier
from keyauth.errors import (
    AdminAuthError,
    ClientCredentialsError,
    ClientNameTakenError,
    ClientRevokedError,
    EnrollmentTokenError,
    EnrollmentTokenExpiredError,
    EnrollmentTokenUsedError,
    ExpiryOutOfRangeError,
    KeyEpochNotFoundError,
    PlaceholderAdminKeyError,
    RequestError,
    StateError,
    TokenError,
)
from keyauth.service import (
    Enrollment,
    KeyAuthority,
    hash_secret,
    seal_client_secret,
    unseal_client_secret,
)
from keyauth.settings import KeyauthSettings
from keyauth.store import InMemoryStore, SqliteStore
from keyauth.tokens import TokenSigner, signing_key_from_pem
from tests.keyauth.keyauth_helpers import ADMIN_KEY, FakeClock, make_settings


def _enroll(authority: KeyAuthority, name: str = "hospital-a") -> tuple[str, str]:
    issued = authority.issue_enrollment_token(name)
    enrollment = authority.enroll(issued.token)
    return enrollment.client_id, enrollment.client_secret


def test_first_start_creates_signing_key_and_epoch_one(authority: KeyAuthority) -> None:
    current = authority.current_epoch()

    assert current.epoch == 1
    assert current.profile_name == "test-n2048"
    assert authority.store.load_signing_key() is not None
    assert crypto.ClientCipher(current.material.secret_context, crypto.get_profile("test-n2048"))


def test_restart_on_the_same_store_serves_the_same_keys(
    settings: KeyauthSettings, clock: FakeClock
) -> None:
    store = InMemoryStore()
    first = KeyAuthority(settings, store, clock=clock)

    second = KeyAuthority(settings, store, clock=clock)

    assert second.current_epoch() == first.current_epoch()
    assert second.verification_key() == first.verification_key()


def test_unusable_signing_key_refuses_to_start(settings: KeyauthSettings) -> None:
    store = InMemoryStore()
    store.save_signing_key(b"not a key")

    with pytest.raises(StateError, match="signing key"):
        KeyAuthority(settings, store)


@pytest.mark.parametrize(
    ("presented", "code"), [(None, "admin_key_missing"), ("", "admin_key_missing"), ("x", None)]
)
def test_admin_needs_the_right_key(
    authority: KeyAuthority, presented: str | None, code: str | None
) -> None:
    with pytest.raises(AdminAuthError) as caught:
        authority.authenticate_admin(presented, via_loopback=True)

    assert caught.value.code == (code or "admin_key_invalid")
    assert caught.value.http_status == 401
    authority.authenticate_admin(ADMIN_KEY, via_loopback=False)


def test_admin_key_with_non_ascii_characters_is_simply_wrong(authority: KeyAuthority) -> None:
    with pytest.raises(AdminAuthError):
        authority.authenticate_admin("schlüssel-ä" * 3, via_loopback=True)


def test_placeholder_admin_key_works_on_loopback_only(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, admin_key="change-me")
    authority = KeyAuthority(settings, InMemoryStore())

    authority.authenticate_admin("change-me", via_loopback=True)
    with pytest.raises(PlaceholderAdminKeyError) as caught:
        authority.authenticate_admin("change-me", via_loopback=False)

    assert caught.value.http_status == 403
    # A wrong key still gets the plain 401: only the key holder learns about the placeholder.
    with pytest.raises(AdminAuthError) as wrong:
        authority.authenticate_admin("guess", via_loopback=False)
    assert wrong.value.code == "admin_key_invalid"


def test_enrollment_token_expiry_uses_the_configured_default(
    authority: KeyAuthority, clock: FakeClock
) -> None:
    issued = authority.issue_enrollment_token("hospital-a")
    chosen = authority.issue_enrollment_token("hospital-b", expires_in=60)

    assert issued.expires_at == clock.now + 3600
    assert chosen.expires_at == clock.now + 60
    assert issued.token != chosen.token


@pytest.mark.parametrize("expires_in", [0, -5, 7 * 86_400 + 1])
def test_enrollment_token_expiry_out_of_range(authority: KeyAuthority, expires_in: int) -> None:
    with pytest.raises(ExpiryOutOfRangeError) as caught:
        authority.issue_enrollment_token("hospital-a", expires_in=expires_in)

    assert caught.value.http_status == 422


@pytest.mark.parametrize("name", ["", "-leading-dash", "has space", "a" * 64, "slash/name", "ä"])
def test_invalid_client_names_are_refused(authority: KeyAuthority, name: str) -> None:
    with pytest.raises(RequestError) as caught:
        authority.issue_enrollment_token(name)

    assert caught.value.code == "client_name_invalid"


def test_no_token_for_the_name_of_an_active_client(authority: KeyAuthority) -> None:
    client_id, _ = _enroll(authority)

    with pytest.raises(ClientNameTakenError):
        authority.issue_enrollment_token("hospital-a")
    authority.revoke_client(client_id)

    assert authority.issue_enrollment_token("hospital-a").client_name == "hospital-a"


def test_enrollment_returns_credentials_and_stores_only_hashes(authority: KeyAuthority) -> None:
    issued = authority.issue_enrollment_token("hospital-a")

    enrollment = authority.enroll(issued.token)

    assert enrollment.client_name == "hospital-a"
    assert enrollment.key_epoch == 1
    assert enrollment.profile_name == "test-n2048"
    assert len(enrollment.client_secret) >= 43  # 256 random bits
    (record,) = authority.list_clients()
    assert record.client_id == enrollment.client_id
    assert record.secret_hash == hash_secret(enrollment.client_secret)
    assert enrollment.client_secret not in repr(asdict(record))


def test_enrollment_token_is_dead_once_the_client_has_an_access_token(
    authority: KeyAuthority,
) -> None:
    issued = authority.issue_enrollment_token("hospital-a")
    enrollment = authority.enroll(issued.token)
    authority.issue_access_token(enrollment.client_id, enrollment.client_secret)

    with pytest.raises(EnrollmentTokenUsedError) as caught:
        authority.enroll(issued.token)

    assert caught.value.http_status == 403
    assert len(authority.list_clients()) == 1


def test_enrollment_token_is_single_use_without_a_redelivery_window(
    tmp_path: Path, clock: FakeClock
) -> None:
    settings = make_settings(tmp_path / "state", enrollment_redelivery_window=0)
    authority = KeyAuthority(settings, InMemoryStore(), clock=clock)
    issued = authority.issue_enrollment_token("hospital-a")
    authority.enroll(issued.token)

    with pytest.raises(EnrollmentTokenUsedError) as caught:
        authority.enroll(issued.token)

    assert caught.value.http_status == 403
    (client,) = authority.list_clients()
    assert client.confirmed  # nothing sealed, nothing to re-deliver


# Re-delivery of an unconfirmed enrollment


def test_a_lost_enrollment_answer_is_delivered_again(authority: KeyAuthority) -> None:
    # Prepare: the first answer was lost on its way to the hospital.
    issued = authority.issue_enrollment_token("hospital-a")
    first = authority.enroll(issued.token)

    # Execute
    again = authority.enroll(issued.token)

    # Assert: the same client, and its credentials work.
    assert not first.redelivered
    assert again.redelivered
    assert asdict(again) == asdict(first) | {"redelivered": True}
    assert [c.client_id for c in authority.list_clients()] == [first.client_id]
    assert authority.issue_access_token(again.client_id, again.client_secret)


def test_redelivery_ends_with_the_first_access_token(authority: KeyAuthority) -> None:
    issued = authority.issue_enrollment_token("hospital-a")
    enrollment = authority.enroll(issued.token)
    assert not authority.list_clients()[0].confirmed

    authority.issue_access_token(enrollment.client_id, enrollment.client_secret)

    assert authority.list_clients()[0].confirmed
    assert authority.store.pending_enrollment(hash_secret(issued.token)) is None
    with pytest.raises(EnrollmentTokenUsedError):
        authority.enroll(issued.token)


def test_wrong_credentials_do_not_confirm_an_enrollment(authority: KeyAuthority) -> None:
    issued = authority.issue_enrollment_token("hospital-a")
    enrollment = authority.enroll(issued.token)

    with pytest.raises(ClientCredentialsError):
        authority.issue_access_token(enrollment.client_id, "guess")

    assert authority.enroll(issued.token).client_secret == enrollment.client_secret


def test_redelivery_ends_with_its_window(authority: KeyAuthority, clock: FakeClock) -> None:
    window = authority.settings.enrollment_redelivery_window
    assert window == 600  # the default
    issued = authority.issue_enrollment_token("hospital-a")
    enrollment = authority.enroll(issued.token)
    clock.advance(window - 1)
    assert authority.enroll(issued.token).client_id == enrollment.client_id

    clock.advance(1)

    with pytest.raises(EnrollmentTokenUsedError):
        authority.enroll(issued.token)
    assert len(authority.list_clients()) == 1


def test_redelivery_outlives_the_token_expiry_within_its_window(
    authority: KeyAuthority, clock: FakeClock
) -> None:
    # The window counts from the enrollment: a token redeemed just before it expired
    # can still fetch the lost answer.
    issued = authority.issue_enrollment_token("hospital-a", expires_in=10)
    clock.advance(9)
    enrollment = authority.enroll(issued.token)
    clock.advance(60)

    assert authority.enroll(issued.token).client_secret == enrollment.client_secret


def test_a_revoked_client_is_never_redelivered(authority: KeyAuthority) -> None:
    issued = authority.issue_enrollment_token("hospital-a")
    enrollment = authority.enroll(issued.token)

    authority.revoke_client(enrollment.client_id)

    with pytest.raises(EnrollmentTokenUsedError):
        authority.enroll(issued.token)
    assert authority.store.pending_enrollment(hash_secret(issued.token)) is None


def test_redelivery_answers_with_the_current_key_epoch(authority: KeyAuthority) -> None:
    issued = authority.issue_enrollment_token("hospital-a")
    authority.enroll(issued.token)
    authority.rotate_key_epoch()

    assert authority.enroll(issued.token).key_epoch == 2


def test_a_sealed_secret_that_does_not_open_is_not_redelivered(
    authority: KeyAuthority, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a token whose client's sealed secret was made with another token.
    issued = authority.issue_enrollment_token("hospital-a")
    client = authority.store.enroll_client(
        hash_secret(issued.token),
        client_id="c-1",
        secret_hash=hash_secret("s"),
        now=clock(),
        sealed_secret=seal_client_secret("another token", "c-1", "s"),
    )

    # Execute
    with pytest.raises(EnrollmentTokenUsedError):
        authority.enroll(issued.token)

    # Assert
    assert "does not open" in caplog.text
    assert authority.list_clients() == [client]


def test_sealed_secret_opens_only_with_its_token_and_client() -> None:
    sealed = seal_client_secret("the token", "c-1", "the secret")

    assert unseal_client_secret("the token", "c-1", sealed) == "the secret"
    assert b"the secret" not in sealed
    assert sealed != seal_client_secret("the token", "c-1", "the secret")  # random nonce
    for token, client_id in [("another token", "c-1"), ("the token", "c-2")]:
        with pytest.raises(InvalidTag):
            unseal_client_secret(token, client_id, sealed)


def test_the_database_cannot_tell_the_secret_without_the_token(
    settings: KeyauthSettings, clock: FakeClock
) -> None:
    # Prepare
    store = SqliteStore(settings.state_dir)
    authority = KeyAuthority(settings, store, clock=clock)
    issued = authority.issue_enrollment_token("hospital-a")
    enrollment = authority.enroll(issued.token)
    pending = store.pending_enrollment(hash_secret(issued.token))
    store.close()

    # Execute: everything a thief of the state directory gets.
    stolen = b"".join(path.read_bytes() for path in settings.state_dir.rglob("*") if path.is_file())

    # Assert: neither the secret nor the token is in it, and the sealed secret it does
    # hold opens with the token only.
    assert pending is not None
    assert pending.sealed_secret in stolen
    for secret in (enrollment.client_secret, issued.token):
        assert secret.encode() not in stolen
    with pytest.raises(InvalidTag):
        unseal_client_secret(hash_secret(issued.token), enrollment.client_id, pending.sealed_secret)
    assert (
        unseal_client_secret(issued.token, enrollment.client_id, pending.sealed_secret)
        == enrollment.client_secret
    )


def test_concurrent_enrollments_with_one_token_get_one_client(
    settings: KeyauthSettings, clock: FakeClock
) -> None:
    # Prepare: separate stores are separate SQLite connections, as separate workers have.
    stores = [SqliteStore(settings.state_dir) for _ in range(6)]
    authorities = [KeyAuthority(settings, store, clock=clock) for store in stores]
    token = authorities[0].issue_enrollment_token("hospital-a").token
    answers: list[object] = [None] * len(authorities)
    barrier = threading.Barrier(len(authorities))

    def enroll(i: int) -> None:
        barrier.wait()
        answers[i] = authorities[i].enroll(token)

    # Execute
    threads = [threading.Thread(target=enroll, args=(i,)) for i in range(len(authorities))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Assert: one enrollment, the others its re-delivery.
    try:
        enrollments = [a for a in answers if isinstance(a, Enrollment)]
        assert len(enrollments) == len(authorities)
        assert sorted(e.redelivered for e in enrollments) == [False] + [True] * 5
        assert len({(e.client_id, e.client_secret) for e in enrollments}) == 1
        assert len(authorities[0].list_clients()) == 1
    finally:
        for store in stores:
            store.close()


def test_expired_enrollment_token_creates_nothing(
    authority: KeyAuthority, clock: FakeClock
) -> None:
    issued = authority.issue_enrollment_token("hospital-a", expires_in=60)
    clock.advance(61)

    with pytest.raises(EnrollmentTokenExpiredError) as caught:
        authority.enroll(issued.token)

    assert caught.value.http_status == 401
    assert authority.list_clients() == []


def test_unknown_enrollment_token_creates_nothing(authority: KeyAuthority) -> None:
    with pytest.raises(EnrollmentTokenError) as caught:
        authority.enroll("made-up-token")

    assert caught.value.code == "enrollment_token_invalid"
    assert authority.list_clients() == []


def test_access_token_for_right_credentials(authority: KeyAuthority) -> None:
    client_id, secret = _enroll(authority)

    issued = authority.issue_access_token(client_id, secret)

    claims = TokenVerifier(authority.verification_key().public_key_pem).verify(issued.token)
    assert claims.client_id == client_id
    assert claims.client_name == "hospital-a"
    assert claims.key_epoch == 1
    assert issued.lifetime == 300


@pytest.mark.parametrize("wrong", ["id", "secret"])
def test_wrong_credentials_get_no_access_token(authority: KeyAuthority, wrong: str) -> None:
    client_id, secret = _enroll(authority)
    if wrong == "id":
        # a different first character, whatever the random id starts with
        client_id = ("1" if client_id[0] == "0" else "0") + client_id[1:]
    else:
        secret = secret[:-1] + ("A" if secret[-1] != "A" else "B")

    with pytest.raises(ClientCredentialsError) as caught:
        authority.issue_access_token(client_id, secret)

    assert caught.value.http_status == 401


def test_revoked_client_gets_no_access_token(authority: KeyAuthority) -> None:
    client_id, secret = _enroll(authority)
    authority.revoke_client(client_id)

    with pytest.raises(ClientRevokedError) as caught:
        authority.issue_access_token(client_id, secret)

    assert caught.value.http_status == 403


def test_secret_context_goes_to_an_enrolled_client(authority: KeyAuthority) -> None:
    client_id, secret = _enroll(authority)
    token = authority.issue_access_token(client_id, secret).token

    epoch = authority.secret_context(token)

    assert epoch == authority.current_epoch()


def test_secret_context_is_refused_once_revoked_even_with_a_live_token(
    authority: KeyAuthority,
) -> None:
    client_id, secret = _enroll(authority)
    token = authority.issue_access_token(client_id, secret).token
    authority.revoke_client(client_id)

    with pytest.raises(ClientRevokedError):
        authority.secret_context(token)


def test_secret_context_refuses_a_token_for_an_unknown_client(
    authority: KeyAuthority, clock: FakeClock
) -> None:
    # A validly signed token whose client this authority never enrolled.
    pem = authority.store.load_signing_key()
    assert pem is not None
    signer = TokenSigner(signing_key_from_pem(pem), clock=clock)
    token = signer.issue(client_id="ghost", client_name="ghost", key_epoch=1).token

    with pytest.raises(TokenError) as caught:
        authority.secret_context(token)

    assert caught.value.code == "token_invalid"


@pytest.mark.parametrize("token", ["", "garbage"])
def test_secret_context_refuses_bad_tokens(authority: KeyAuthority, token: str) -> None:
    with pytest.raises(TokenError):
        authority.secret_context(token)


def test_secret_context_refuses_an_expired_token(authority: KeyAuthority, clock: FakeClock) -> None:
    client_id, secret = _enroll(authority)
    clock.advance(-1000)  # the token is issued in the past: expired long ago by now
    token = authority.issue_access_token(client_id, secret).token

    with pytest.raises(TokenError) as caught:
        authority.secret_context(token)

    assert caught.value.code == "token_expired"


# The administrator's access token


def test_admin_token_names_the_one_admin_identity(authority: KeyAuthority) -> None:
    issued = authority.issue_admin_token()

    claims = TokenVerifier(authority.verification_key().public_key_pem).verify(
        issued.token, role=ADMIN_ROLE
    )
    assert (claims.client_id, claims.client_name, claims.role) == ("admin", "admin", "admin")
    assert claims.key_epoch == 1


def test_admin_token_lives_admin_token_ttl(tmp_path: Path, clock: FakeClock) -> None:
    settings = make_settings(tmp_path / "state", access_token_ttl=600, admin_token_ttl=60)
    authority = KeyAuthority(settings, InMemoryStore(), clock=clock)

    issued = authority.issue_admin_token()

    assert issued.lifetime == 60
    assert issued.claims.expires_at == int(clock.now) + 60


def test_admin_token_carries_the_current_key_epoch(authority: KeyAuthority) -> None:
    authority.rotate_key_epoch()

    assert authority.issue_admin_token().claims.key_epoch == 2


def test_admin_token_gets_no_secret_context(authority: KeyAuthority) -> None:
    token = authority.issue_admin_token().token

    with pytest.raises(TokenError) as caught:
        authority.secret_context(token)

    assert (caught.value.code, caught.value.http_status) == ("token_wrong_role", 403)


def test_rotation_creates_the_next_epoch_and_keeps_the_old_one(authority: KeyAuthority) -> None:
    client_id, secret = _enroll(authority)
    old = authority.current_epoch()

    new = authority.rotate_key_epoch()

    assert new.epoch == 2
    assert new.material.secret_context != old.material.secret_context
    assert authority.current_epoch() == new
    assert authority.key_epoch(1) == old
    token = authority.issue_access_token(client_id, secret)
    assert token.claims.key_epoch == 2
    assert authority.secret_context(token.token, 1) == old
    assert authority.verification_key().key_epoch == 2


def test_rotation_uses_the_configured_profile(settings: KeyauthSettings, clock: FakeClock) -> None:
    store = InMemoryStore()
    KeyAuthority(settings, store, clock=clock)
    reconfigured = settings.model_copy(update={"profile": "n4096-s40"})

    authority = KeyAuthority(reconfigured, store, clock=clock)
    rotated = authority.rotate_key_epoch()

    assert authority.key_epoch(1).profile_name == "test-n2048"
    assert rotated.profile_name == "n4096-s40"
    assert crypto.ServerCipher(rotated.material.public_context, crypto.get_profile("n4096-s40"))


def test_unknown_epoch_is_not_found(authority: KeyAuthority) -> None:
    with pytest.raises(KeyEpochNotFoundError) as caught:
        authority.key_epoch(2)

    assert caught.value.http_status == 404


def test_durable_restart_keeps_keys_clients_and_credentials(
    settings: KeyauthSettings, clock: FakeClock
) -> None:
    # Prepare
    store = SqliteStore(settings.state_dir)
    first = KeyAuthority(settings, store, clock=clock)
    client_id, secret = _enroll(first)
    old_token = first.issue_access_token(client_id, secret).token
    first.rotate_key_epoch()
    old_pem = first.verification_key().public_key_pem
    old_material = first.key_epoch(1).material
    store.close()

    # Execute
    reopened = SqliteStore(settings.state_dir)
    second = KeyAuthority(settings, reopened, clock=clock)

    # Assert
    try:
        assert second.current_epoch().epoch == 2
        assert second.verification_key().public_key_pem == old_pem
        assert second.secret_context(old_token, 1).material == old_material
        assert second.issue_access_token(client_id, secret).claims.key_epoch == 2
    finally:
        reopened.close()


def test_logs_never_contain_secrets(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    caplog.set_level(logging.DEBUG)
    settings = make_settings(tmp_path / "state")
    store = SqliteStore(settings.state_dir)

    # Execute: every operation, successful and refused.
    authority = KeyAuthority(settings, store, clock=clock)
    issued = authority.issue_enrollment_token("hospital-a")
    enrollment = authority.enroll(issued.token)
    authority.enroll(issued.token)  # re-delivered
    access = authority.issue_access_token(enrollment.client_id, enrollment.client_secret)
    with pytest.raises(EnrollmentTokenUsedError):
        authority.enroll(issued.token)
    authority.secret_context(access.token)
    authority.authenticate_admin(ADMIN_KEY, via_loopback=True)
    admin_token = authority.issue_admin_token()
    with pytest.raises(AdminAuthError):
        authority.authenticate_admin(ADMIN_KEY + "x", via_loopback=True)
    authority.rotate_key_epoch()
    authority.revoke_client(enrollment.client_id)
    with pytest.raises(ClientRevokedError):
        authority.secret_context(access.token)
    store.close()

    # Assert
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "enrolled client" in logged
    assert f"re-delivered enrollment of client {enrollment.client_id}" in logged
    assert "issued an administrator token" in logged
    tokens = [issued.token, access.token, admin_token.token]
    for secret in [*tokens, enrollment.client_secret, ADMIN_KEY]:
        assert secret not in logged
    pem = (settings.state_dir / "signing-key.pem").read_text()
    assert pem.splitlines()[1] not in logged
