"""Access tokens: what keyauth's TokenSigner signs, everything hefl_wire's TokenVerifier refuses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hefl_wire import (
    ADMIN_ROLE,
    CLIENT_ROLE,
    MAX_TOKEN_CHARS,
    AccessClaims,
    TokenError,
    TokenVerifier,
)
from keyauth.tokens import (
    TokenSigner,
    generate_signing_key,
    public_key_to_pem,
    signing_key_from_pem,
    signing_key_to_pem,
)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return generate_signing_key()


@pytest.fixture
def verifier(key: Ed25519PrivateKey) -> TokenVerifier:
    return TokenVerifier(public_key_to_pem(key))


def _issue(key: Ed25519PrivateKey, *, issued_at: float | None = None, **kwargs: Any) -> str:
    clock = (lambda: issued_at) if issued_at is not None else time.time
    signer = TokenSigner(key, lifetime=300, clock=clock)
    fields: dict[str, Any] = {"client_id": "c-1", "client_name": "hospital-a", "key_epoch": 3}
    fields.update(kwargs)
    return signer.issue(**fields).token


def _signed(key: Ed25519PrivateKey, **overrides: Any) -> str:
    """A token with exactly the given payload changes, properly signed by ``key``."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": "hefl-keyauth",
        "aud": "hefl",
        "sub": "c-1",
        "name": "hospital-a",
        "role": "client",
        "epoch": 1,
        "iat": now,
        "exp": now + 300,
        "jti": "j-1",
    }
    for name, value in overrides.items():
        if value is None:
            payload.pop(name)
        else:
            payload[name] = value
    return jwt.encode(payload, key, algorithm="EdDSA")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def test_issued_token_round_trips_to_its_claims(
    key: Ed25519PrivateKey, verifier: TokenVerifier
) -> None:
    # Prepare
    signer = TokenSigner(key, lifetime=120)

    # Execute
    issued = signer.issue(client_id="c-42", client_name="hospital-b", key_epoch=7)
    claims = verifier.verify(issued.token)

    # Assert
    assert claims == issued.claims
    assert claims.client_id == "c-42"
    assert claims.client_name == "hospital-b"
    assert claims.role == "client"
    assert claims.key_epoch == 7
    assert issued.lifetime == 120
    assert claims.expires_at == pytest.approx(time.time() + 120, abs=2)


def test_token_carries_exactly_the_contract_claims(key: Ed25519PrivateKey) -> None:
    signer = TokenSigner(key, lifetime=300)
    token = signer.issue(client_id="c-1", client_name="h", key_epoch=2).token

    header = jwt.get_unverified_header(token)
    payload = jwt.decode(token, options={"verify_signature": False})

    assert header["alg"] == "EdDSA"
    assert set(payload) == {"iss", "aud", "sub", "name", "role", "epoch", "iat", "exp", "jti"}
    assert payload["iss"] == "hefl-keyauth"
    assert payload["aud"] == "hefl"
    assert payload["sub"] == "c-1"
    assert payload["epoch"] == 2
    assert payload["exp"] - payload["iat"] == 300


def test_token_ids_are_unique(key: Ed25519PrivateKey, verifier: TokenVerifier) -> None:
    ids = {verifier.verify(_issue(key)).token_id for _ in range(20)}
    assert len(ids) == 20


def test_expired_token_is_refused_as_expired(
    key: Ed25519PrivateKey, verifier: TokenVerifier
) -> None:
    token = _issue(key, issued_at=time.time() - 400)  # expired 100 s ago

    with pytest.raises(TokenError) as caught:
        verifier.verify(token)

    assert caught.value.code == "token_expired"
    assert caught.value.http_status == 401


def test_leeway_tolerates_small_clock_skew(key: Ed25519PrivateKey) -> None:
    token = _issue(key, issued_at=time.time() - 302)  # expired 2 s ago

    assert TokenVerifier(public_key_to_pem(key), leeway=5).verify(token).client_id == "c-1"
    with pytest.raises(TokenError, match="expired"):
        TokenVerifier(public_key_to_pem(key), leeway=0).verify(token)


def test_token_signed_by_another_key_is_invalid(verifier: TokenVerifier) -> None:
    forged = _issue(generate_signing_key())

    with pytest.raises(TokenError) as caught:
        verifier.verify(forged)

    assert caught.value.code == "token_invalid"
    assert caught.value.http_status == 401


def test_tampered_payload_is_invalid(key: Ed25519PrivateKey, verifier: TokenVerifier) -> None:
    header, payload, signature = _issue(key).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    tampered = ".".join([header, _b64(json.dumps(claims).encode()), signature])

    with pytest.raises(TokenError) as caught:
        verifier.verify(tampered)

    assert caught.value.code == "token_invalid"


@pytest.mark.parametrize(
    ("issuer", "audience"), [("someone-else", "hefl"), ("hefl-keyauth", "another-service")]
)
def test_wrong_issuer_or_audience_is_invalid(
    key: Ed25519PrivateKey, verifier: TokenVerifier, issuer: str, audience: str
) -> None:
    token = _signed(key, iss=issuer, aud=audience)

    with pytest.raises(TokenError) as caught:
        verifier.verify(token)

    assert caught.value.code == "token_invalid"


@pytest.mark.parametrize(
    ("held", "needed"),
    [(CLIENT_ROLE, ADMIN_ROLE), (ADMIN_ROLE, CLIENT_ROLE), ("observer", CLIENT_ROLE)],
)
def test_a_token_of_another_role_is_forbidden(
    key: Ed25519PrivateKey, verifier: TokenVerifier, held: str, needed: str
) -> None:
    token = _issue(key, role=held)

    with pytest.raises(TokenError) as caught:
        verifier.verify(token, role=needed)

    assert caught.value.code == "token_wrong_role"
    assert caught.value.http_status == 403


def test_the_client_role_is_what_verify_needs_by_default(
    key: Ed25519PrivateKey, verifier: TokenVerifier
) -> None:
    with pytest.raises(TokenError) as caught:
        verifier.verify(_issue(key, role=ADMIN_ROLE))

    assert caught.value.code == "token_wrong_role"
    assert verifier.verify(_issue(key)).role == CLIENT_ROLE


def test_each_role_passes_where_it_is_needed(
    key: Ed25519PrivateKey, verifier: TokenVerifier
) -> None:
    admin = _issue(key, client_id="admin", client_name="admin", role=ADMIN_ROLE)
    client = _issue(key)

    assert verifier.verify(admin, role=ADMIN_ROLE).client_id == "admin"
    assert verifier.verify(client, role=CLIENT_ROLE).client_id == "c-1"
    assert verifier.verify(admin, role=(CLIENT_ROLE, ADMIN_ROLE)).role == ADMIN_ROLE
    assert verifier.verify(client, role=(CLIENT_ROLE, ADMIN_ROLE)).role == CLIENT_ROLE


@pytest.mark.parametrize("role", ["observer", "", (), ("client", "server")])
def test_verify_refuses_to_check_for_a_role_nobody_holds(
    key: Ed25519PrivateKey, verifier: TokenVerifier, role: str | tuple[str, ...]
) -> None:
    # A caller's typo, not the token's fault: it must not look like a 403 to the client.
    with pytest.raises(ValueError, match="role must be"):
        verifier.verify(_issue(key, role="observer"), role=role)


def test_unsigned_token_is_invalid(verifier: TokenVerifier) -> None:
    payload = jwt.decode(_signed(generate_signing_key()), options={"verify_signature": False})
    unsigned = _b64(b'{"alg":"none","typ":"JWT"}') + "." + _b64(json.dumps(payload).encode()) + "."

    with pytest.raises(TokenError) as caught:
        verifier.verify(unsigned)

    assert caught.value.code == "token_invalid"


def test_hmac_token_keyed_with_the_public_key_is_invalid(
    key: Ed25519PrivateKey, verifier: TokenVerifier
) -> None:
    # The classic algorithm confusion: HS256 "signed" with the published verification key.
    payload = jwt.decode(_signed(key), options={"verify_signature": False})
    signing_input = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(json.dumps(payload).encode())
    mac = hmac.new(public_key_to_pem(key).encode(), signing_input.encode(), hashlib.sha256)
    confused = signing_input + "." + _b64(mac.digest())

    with pytest.raises(TokenError) as caught:
        verifier.verify(confused)

    assert caught.value.code == "token_invalid"


@pytest.mark.parametrize("claim", ["sub", "name", "role", "epoch", "jti", "exp", "iat"])
def test_token_missing_a_claim_is_invalid(
    key: Ed25519PrivateKey, verifier: TokenVerifier, claim: str
) -> None:
    with pytest.raises(TokenError) as caught:
        verifier.verify(_signed(key, **{claim: None}))

    assert caught.value.code == "token_invalid"


@pytest.mark.parametrize(
    "overrides",
    [{"epoch": True}, {"epoch": "1"}, {"epoch": 0}, {"sub": ""}, {"role": 5}, {"name": []}],
)
def test_token_with_ill_typed_claims_is_invalid(
    key: Ed25519PrivateKey, verifier: TokenVerifier, overrides: dict[str, Any]
) -> None:
    with pytest.raises(TokenError) as caught:
        verifier.verify(_signed(key, **overrides))

    assert caught.value.code == "token_invalid"


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("", "token_missing"),
        ("not-a-jwt", "token_invalid"),
        ("a.b.c", "token_invalid"),
        ("x" * (MAX_TOKEN_CHARS + 1), "token_invalid"),
    ],
)
def test_garbage_is_refused(verifier: TokenVerifier, token: str, code: str) -> None:
    with pytest.raises(TokenError) as caught:
        verifier.verify(token)

    assert caught.value.code == code
    assert caught.value.http_status == 401


def test_verifier_refuses_keys_that_are_not_ed25519() -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )

    with pytest.raises(ValueError, match="Ed25519"):
        TokenVerifier(ec_pem)
    with pytest.raises(ValueError, match="not a PEM public key"):
        TokenVerifier("-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n")


def test_signing_key_pem_round_trip(key: Ed25519PrivateKey) -> None:
    pem = signing_key_to_pem(key)

    restored = signing_key_from_pem(pem)

    assert public_key_to_pem(restored) == public_key_to_pem(key)
    assert b"PRIVATE KEY" in pem


def test_signing_key_from_pem_refuses_garbage_and_other_key_types() -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

    with pytest.raises(ValueError, match="not a PEM private key"):
        signing_key_from_pem(b"garbage")
    with pytest.raises(ValueError, match="Ed25519"):
        signing_key_from_pem(ec_pem)


def test_signer_refuses_non_positive_lifetime(key: Ed25519PrivateKey) -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenSigner(key, lifetime=0)
    with pytest.raises(ValueError, match="positive"):
        TokenSigner(key).issue(client_id="c", client_name="n", key_epoch=1, lifetime=0)


def test_a_token_may_have_its_own_lifetime(key: Ed25519PrivateKey) -> None:
    signer = TokenSigner(key, lifetime=300, clock=lambda: 1_700_000_000.0)

    issued = signer.issue(client_id="c", client_name="n", key_epoch=1, lifetime=60)

    assert issued.lifetime == 60
    assert issued.claims.expires_at == 1_700_000_060.0
    assert signer.issue(client_id="c", client_name="n", key_epoch=1).lifetime == 300


def test_token_error_codes_are_closed() -> None:
    with pytest.raises(ValueError, match="'token_whatever' is not in hefl_wire's registry"):

        class WhateverTokenError(TokenError):
            code = "token_whatever"


def test_access_claims_are_immutable() -> None:
    claims = AccessClaims("c", "n", "client", 1, 0.0, "j")
    with pytest.raises(AttributeError):
        claims.role = "admin"  # type: ignore[misc]


def test_tokens_module_imports_no_web_framework() -> None:
    # The aggregation server imports keyauth.tokens; it must stay a pure module.
    code = (
        "import sys, keyauth.tokens; "
        "loaded = {'fastapi', 'starlette', 'httpx', 'uvicorn'} & set(sys.modules); "
        "print(sorted(loaded))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def _counting_decode(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens whose signature ``hefl_wire`` checks from now on, in order."""
    decoded: list[str] = []
    real = jwt.decode

    def decode(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr("hefl_wire._tokens.jwt.decode", decode)
    return decoded


def test_a_remembered_token_is_checked_once_and_its_role_every_time(
    key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    verifier = TokenVerifier(public_key_to_pem(key), cache_size=8)
    token, other = _issue(key), _issue(key, client_id="c-2")
    decoded = _counting_decode(monkeypatch)

    # Execute
    first = verifier.verify(token)
    again = verifier.verify(token)
    verifier.verify(other)
    with pytest.raises(TokenError) as wrong_role:
        verifier.verify(token, role=ADMIN_ROLE)

    # Assert
    assert first == again
    assert decoded == [token, other]
    assert wrong_role.value.code == "token_wrong_role"


def test_a_token_differing_from_a_remembered_one_is_checked(key: Ed25519PrivateKey) -> None:
    verifier = TokenVerifier(public_key_to_pem(key), cache_size=8)
    token = _issue(key)
    verifier.verify(token)
    head, _, signature = token.rpartition(".")
    forged = _issue(generate_signing_key())
    tampered = f"{head}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"

    for bad in (forged, tampered, f"{forged.rpartition('.')[0]}.{signature}"):
        with pytest.raises(TokenError) as caught:
            verifier.verify(bad)
        assert caught.value.code == "token_invalid"


def test_a_remembered_token_is_forgotten_when_it_expires(
    key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a clock the cache reads; the token's own exp, as PyJWT checks it
    now = [time.time()]
    verifier = TokenVerifier(public_key_to_pem(key), leeway=5, cache_size=8, clock=lambda: now[0])
    token = _issue(key)
    expires = verifier.verify(token).expires_at
    decoded = _counting_decode(monkeypatch)

    # Execute: just before exp + leeway, then at it
    now[0] = expires + 5 - 0.01
    verifier.verify(token)
    checked_before = list(decoded)
    now[0] = expires + 5
    verifier.verify(token)

    # Assert: remembered until PyJWT would refuse it, then checked afresh
    assert checked_before == []
    assert decoded == [token]


def test_a_remembered_token_is_refused_once_expired(key: Ed25519PrivateKey) -> None:
    # Prepare: a token that expires within a second (no leeway)
    verifier = TokenVerifier(public_key_to_pem(key), leeway=0, cache_size=8)
    token = _issue(key, issued_at=time.time() - 298.5)
    expires = verifier.verify(token).expires_at

    # Execute
    while time.time() < expires + 0.01:
        time.sleep(0.05)
    with pytest.raises(TokenError) as caught:
        verifier.verify(token)

    # Assert
    assert caught.value.code == "token_expired"


def test_the_remembered_tokens_are_bounded_least_recently_used_first(
    key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = TokenVerifier(public_key_to_pem(key), cache_size=2)
    a, b, c = (_issue(key, client_id=f"c-{i}") for i in range(3))
    decoded = _counting_decode(monkeypatch)

    for token in (a, b, a, c, a, b):
        verifier.verify(token)

    # c pushes out b (a was used since), then b pushes out c
    assert decoded == [a, b, c, b]
