"""keyauth's key-id statements on the wire: what verifies, and every way one is refused."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hefl_wire import (
    KEY_ID_TYPE,
    KeyIdStatement,
    KeyIdVerifier,
    KeyStatementError,
    TokenInvalidError,
    TokenVerifier,
    key_id_of,
    statement_to_payload,
)
from keyauth.tokens import TokenSigner, public_key_to_pem

KEY_ID = hashlib.sha256(b"secret context").hexdigest()
STATED = KeyIdStatement(key_epoch=2, profile="test-n2048", key_id=KEY_ID)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def verifier(key: Ed25519PrivateKey) -> KeyIdVerifier:
    return KeyIdVerifier(public_key_to_pem(key))


def signed(key: Ed25519PrivateKey, payload: dict[str, Any], typ: str | None = KEY_ID_TYPE) -> str:
    # PyJWT writes typ "JWT" unless told otherwise; a typ of None leaves it out.
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"typ": typ})


def payload(**changes: Any) -> dict[str, Any]:
    values = statement_to_payload(STATED, issued_at=int(time.time()))
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def test_the_key_id_is_the_hex_sha256_of_the_secret_context() -> None:
    assert key_id_of(b"secret context") == KEY_ID


def test_keyauths_statement_verifies_for_its_epoch(
    key: Ed25519PrivateKey, verifier: KeyIdVerifier
) -> None:
    statement = TokenSigner(key).sign_statement(STATED)

    assert verifier.verify(statement, key_epoch=2) == STATED
    assert verifier.verify(statement) == STATED
    assert jwt.get_unverified_header(statement)["typ"] == KEY_ID_TYPE


def test_a_forged_signature_is_refused(key: Ed25519PrivateKey, verifier: KeyIdVerifier) -> None:
    # The same header and signature over another key id.
    header, _, signature = TokenSigner(key).sign_statement(STATED).split(".")
    other = TokenSigner(key).sign_statement(KeyIdStatement(2, "test-n2048", "0" * 64))
    forged = ".".join([header, other.split(".")[1], signature])

    with pytest.raises(KeyStatementError, match="Signature verification failed"):
        verifier.verify(forged, key_epoch=2)


def test_a_statement_of_another_key_is_refused(verifier: KeyIdVerifier) -> None:
    other = TokenSigner(Ed25519PrivateKey.generate()).sign_statement(STATED)

    with pytest.raises(KeyStatementError, match="Signature verification failed"):
        verifier.verify(other, key_epoch=2)


def test_a_statement_of_another_epoch_is_refused(
    key: Ed25519PrivateKey, verifier: KeyIdVerifier
) -> None:
    statement = TokenSigner(key).sign_statement(STATED)

    with pytest.raises(KeyStatementError, match="about key epoch 2, not 1"):
        verifier.verify(statement, key_epoch=1)


@pytest.mark.parametrize(
    ("changes", "typ", "message"),
    [
        ({"purpose": "access"}, KEY_ID_TYPE, "not a key-id statement"),
        ({"purpose": None}, KEY_ID_TYPE, 'missing the "purpose" claim'),
        ({}, "JWT", "typ 'JWT'"),
        ({}, None, "typ None"),
        ({"key_id": "ABC"}, KEY_ID_TYPE, "64 hex digits"),
        ({"key_id": KEY_ID.upper()}, KEY_ID_TYPE, "64 hex digits"),
        ({"epoch": 0}, KEY_ID_TYPE, "valid key epoch"),
        ({"epoch": True}, KEY_ID_TYPE, "valid key epoch"),
        ({"profile": ""}, KEY_ID_TYPE, "no profile"),
        ({"iss": "someone-else"}, KEY_ID_TYPE, "issuer"),
        ({"aud": "elsewhere"}, KEY_ID_TYPE, "Audience"),
        ({"iat": None}, KEY_ID_TYPE, '"iat"'),
    ],
)
def test_a_statement_of_the_wrong_form_is_refused(
    key: Ed25519PrivateKey,
    verifier: KeyIdVerifier,
    changes: dict[str, Any],
    typ: str | None,
    message: str,
) -> None:
    with pytest.raises(KeyStatementError, match=message):
        verifier.verify(signed(key, payload(**changes), typ), key_epoch=2)


@pytest.mark.parametrize("statement", ["", "x" * 5000, "not.a.jwt", "a.b"])
def test_garbage_is_refused(verifier: KeyIdVerifier, statement: str) -> None:
    with pytest.raises(KeyStatementError):
        verifier.verify(statement)


def test_only_eddsa_is_accepted(verifier: KeyIdVerifier) -> None:
    # A header must never pick the algorithm: HS256 keyed with anything, or none.
    hs256 = jwt.encode(payload(), "s" * 32, algorithm="HS256", headers={"typ": KEY_ID_TYPE})
    unsigned = jwt.encode(payload(), "", algorithm="none", headers={"typ": KEY_ID_TYPE})

    for statement in (hs256, unsigned):
        with pytest.raises(KeyStatementError, match="alg value is not allowed"):
            verifier.verify(statement)


def test_an_access_token_is_no_statement(key: Ed25519PrivateKey, verifier: KeyIdVerifier) -> None:
    token = TokenSigner(key).issue(client_id="c", client_name="hospital-a", key_epoch=2).token

    with pytest.raises(KeyStatementError, match="purpose"):
        verifier.verify(token, key_epoch=2)


def test_a_statement_is_no_access_token(key: Ed25519PrivateKey) -> None:
    tokens = TokenVerifier(public_key_to_pem(key))
    statement = TokenSigner(key).sign_statement(STATED)
    # Even one that carries every claim of an access token, the purpose aside.
    dressed = signed(
        key,
        payload(sub="c", name="hospital-a", role="client", jti="j", exp=int(time.time()) + 60),
        typ="JWT",
    )

    for token in (statement, dressed):
        with pytest.raises(TokenInvalidError):
            tokens.verify(token)
    with pytest.raises(TokenInvalidError, match="not an access token"):
        tokens.verify(dressed)


def test_a_verifier_needs_an_ed25519_key() -> None:
    with pytest.raises(ValueError, match="not a PEM public key"):
        KeyIdVerifier("not a key")
