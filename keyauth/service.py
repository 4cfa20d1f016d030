"""What the key authority does, free of HTTP: enrollment, access tokens, key epochs, revocation."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import crypto
from hefl_wire import (
    ADMIN_ROLE,
    ADMIN_SUBJECT,
    ALGORITHM,
    AUDIENCE,
    CLIENT_ROLE,
    ISSUER,
    VIEWER_ROLE,
    VIEWER_SUBJECT,
    AccessClaims,
    KeyIdStatement,
    TokenInvalidError,
    TokenVerifier,
)
from keyauth.errors import (
    AdminAuthError,
    AdminKeyMissingError,
    ClientCredentialsError,
    ClientNameInvalidError,
    ClientNameTakenError,
    ClientRevokedError,
    EnrollmentTokenUsedError,
    ExpiryOutOfRangeError,
    KeyEpochNotFoundError,
    PlaceholderAdminKeyError,
    StateError,
)
from keyauth.settings import KeyauthSettings
from keyauth.store import ClientRecord, EnrollmentTokenRecord, KeyauthStore, KeyEpoch
from keyauth.tokens import (
    IssuedToken,
    TokenSigner,
    generate_signing_key,
    signing_key_from_pem,
    signing_key_to_pem,
)

__all__ = [
    "CLIENT_NAME_PATTERN",
    "Enrollment",
    "IssuedEnrollmentToken",
    "KeyAuthority",
    "RevocationList",
    "SignedKeyId",
    "VerificationKey",
    "hash_secret",
    "seal_client_secret",
    "unseal_client_secret",
]

logger = logging.getLogger("keyauth")

CLIENT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_CLIENT_NAME = re.compile(CLIENT_NAME_PATTERN)


def hash_secret(secret: str) -> str:
    """SHA-256 of a client secret or enrollment token, as stored.

    Both are 256-bit values from ``secrets``: nobody can guess one, so a slow password hash
    (scrypt, argon2) would add cost and no security. The hash keeps a stolen database from
    being a list of working credentials.
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


_REDELIVERY_INFO = b"hefl enrollment re-delivery v1"
_NONCE_BYTES = 12


def _redelivery_cipher(token: str, client_id: str) -> AESGCM:
    # Keyed by the token, which keyauth stores only hashed: a stolen database cannot open
    # a pending secret, only the token's holder (who may enroll with it anyway) can.
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=client_id.encode(), info=_REDELIVERY_INFO
    ).derive(token.encode("utf-8"))
    return AESGCM(key)


def seal_client_secret(token: str, client_id: str, client_secret: str) -> bytes:
    """The client secret encrypted (AES-256-GCM) under a key derived from the enrollment token.

    Returns the 12-byte random nonce followed by the ciphertext and tag; the client id is
    authenticated data, so a sealed secret opens only for the client it was made for.
    """
    nonce = secrets.token_bytes(_NONCE_BYTES)
    cipher = _redelivery_cipher(token, client_id)
    return nonce + cipher.encrypt(nonce, client_secret.encode("utf-8"), client_id.encode())


def unseal_client_secret(token: str, client_id: str, sealed: bytes) -> str:
    """The client secret ``seal_client_secret`` sealed; ``InvalidTag`` for any other token."""
    nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
    cipher = _redelivery_cipher(token, client_id)
    return cipher.decrypt(nonce, ciphertext, client_id.encode()).decode("utf-8")


@dataclass(frozen=True)
class IssuedEnrollmentToken:
    token: str
    client_name: str
    expires_at: float


@dataclass(frozen=True)
class Enrollment:
    """An enrolled client. ``client_secret`` exists only here: it is stored hashed.

    ``redelivered`` is true when this is an unconfirmed earlier enrollment answered again.
    """

    client_id: str
    client_name: str
    client_secret: str
    key_epoch: int
    profile_name: str
    redelivered: bool = False


@dataclass(frozen=True)
class VerificationKey:
    algorithm: str
    issuer: str
    audience: str
    public_key_pem: str
    key_epoch: int
    profile_name: str


@dataclass(frozen=True)
class SignedKeyId:
    """A key epoch's key id, and keyauth's statement of it signed with the token key."""

    statement: KeyIdStatement
    signed: str


@dataclass(frozen=True)
class RevocationList:
    """The revoked clients' ids, oldest revocation first, and the ETag that names the list."""

    client_ids: tuple[str, ...]
    etag: str

    @classmethod
    def of(cls, client_ids: list[str]) -> RevocationList:
        # Named by its content: every keyauth process over the same state gives the same
        # ETag, so a server's conditional poll gets 304 whichever one answers.
        digest = hashlib.sha256("\n".join(client_ids).encode("utf-8")).hexdigest()
        return cls(tuple(client_ids), f'"{digest[:32]}"')


class KeyAuthority:
    """The key authority over a store. Constructing it makes sure the keys exist.

    On a fresh store it generates the token-signing key and key epoch 1; on an existing
    one it loads them, so a restart serves the same keys.

    Parameters
    ----------
    settings
        Lifetimes, the CKKS profile for new epochs and the admin key.
    store
        Where state lives; shared safely between threads.
    clock
        Seconds since the epoch; injectable for tests.
    """

    def __init__(
        self,
        settings: KeyauthSettings,
        store: KeyauthStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self._clock = clock
        with store.exclusive():
            pem = store.load_signing_key()
            if pem is None:
                pem = signing_key_to_pem(generate_signing_key())
                store.save_signing_key(pem)
                logger.info("generated the token-signing key")
            if store.latest_key_epoch() is None:
                self._generate_epoch(1)
        try:
            private_key = signing_key_from_pem(pem)
        except ValueError as exc:
            raise StateError(f"token-signing key unusable: {exc}") from None
        self._signer = TokenSigner(private_key, lifetime=settings.access_token_ttl, clock=clock)
        self._verifier = TokenVerifier(self._signer.public_key_pem)
        current = self.current_epoch()
        if current.profile_name != settings.profile:
            logger.info(
                "key epoch %d uses profile %s; %s applies from the next rotation",
                current.epoch,
                current.profile_name,
                settings.profile,
            )

    def _generate_epoch(self, number: int) -> KeyEpoch:
        profile = self.settings.ckks_profile
        epoch = KeyEpoch(
            epoch=number,
            created_at=self._clock(),
            material=crypto.generate_key_material(profile),
        )
        self.store.add_key_epoch(epoch)
        logger.info("generated key epoch %d (profile %s)", number, profile.name)
        return epoch

    # Administrators

    def authenticate_admin(self, presented_key: str | None, *, via_loopback: bool) -> None:
        """Accept the configured admin key; the placeholder key only over loopback.

        Raises
        ------
        AdminKeyMissingError
            No key was presented (401).
        AdminAuthError
            The key is wrong (401).
        PlaceholderAdminKeyError
            The placeholder key reached us on a non-loopback address (403): uvicorn's
            ``--host`` and ``KEYAUTH_HOST`` disagree.
        """
        if not presented_key:
            raise AdminKeyMissingError("the X-Admin-Key header is required")
        expected = self.settings.admin_key.get_secret_value().encode("utf-8")
        # Constant time: the comparison must not tell an attacker how much of a guess was right.
        if not hmac.compare_digest(presented_key.encode("utf-8"), expected):
            raise AdminAuthError("the admin key is not valid")
        if self.settings.admin_key_is_placeholder and not via_loopback:
            raise PlaceholderAdminKeyError(
                "the placeholder admin key is accepted on loopback only; set KEYAUTH_ADMIN_KEY"
            )

    def issue_admin_token(self) -> IssuedToken:
        """An administrator access token, for a caller ``authenticate_admin`` accepted.

        One admin identity across services: fl_server verifies it with the key that
        verifies client tokens, so the admin key never leaves keyauth.
        """
        issued = self._signer.issue(
            client_id=ADMIN_SUBJECT,
            client_name=ADMIN_SUBJECT,
            key_epoch=self.current_epoch().epoch,
            role=ADMIN_ROLE,
            lifetime=self.settings.admin_token_ttl,
        )
        # An audit line for each: who holds the admin key can create and stop jobs.
        logger.info("issued an administrator token, valid %d s", issued.lifetime)
        return issued

    def issue_viewer_token(self, expires_in: int | None = None) -> IssuedToken:
        """A viewer access token, for a caller ``authenticate_admin`` accepted.

        A viewer reads fl_server's status (the operator page: hospital names and their
        activity) and nothing else; every viewer is the same ``viewer`` identity. It is
        valid ``expires_in`` seconds, at most (and by default) ``viewer_token_ttl``: it
        cannot be revoked, so its lifetime is what bounds a token handed to the wrong person.

        Raises
        ------
        ExpiryOutOfRangeError
            ``expires_in`` is below 1 or above ``viewer_token_ttl`` (422).
        """
        ttl = self.settings.viewer_token_ttl
        lifetime = ttl if expires_in is None else expires_in
        if not 1 <= lifetime <= ttl:
            raise ExpiryOutOfRangeError(
                f"expires_in must be between 1 and {ttl} seconds (KEYAUTH_VIEWER_TOKEN_TTL)"
            )
        issued = self._signer.issue(
            client_id=VIEWER_SUBJECT,
            client_name=VIEWER_SUBJECT,
            key_epoch=self.current_epoch().epoch,
            role=VIEWER_ROLE,
            lifetime=lifetime,
        )
        logger.info("issued a viewer token, valid %d s", issued.lifetime)
        return issued

    def issue_enrollment_token(
        self, client_name: str, expires_in: int | None = None
    ) -> IssuedEnrollmentToken:
        """A single-use token that enrolls one client named ``client_name``."""
        if not _CLIENT_NAME.match(client_name):
            raise ClientNameInvalidError(f"client_name must match {CLIENT_NAME_PATTERN}")
        lifetime = self.settings.enrollment_token_ttl if expires_in is None else expires_in
        if not 1 <= lifetime <= self.settings.enrollment_token_max_ttl:
            raise ExpiryOutOfRangeError(
                f"expires_in must be 1..{self.settings.enrollment_token_max_ttl} seconds"
            )
        if self.store.active_client_named(client_name) is not None:
            raise ClientNameTakenError(
                f"an active client is named {client_name!r}; revoke it first"
            )
        token = secrets.token_urlsafe(32)
        now = self._clock()
        record = EnrollmentTokenRecord(
            token_hash=hash_secret(token),
            client_name=client_name,
            created_at=now,
            expires_at=now + lifetime,
        )
        self.store.add_enrollment_token(record)
        logger.info("issued an enrollment token for %s, valid %d s", client_name, lifetime)
        return IssuedEnrollmentToken(token, client_name, record.expires_at)

    def list_clients(self) -> list[ClientRecord]:
        return self.store.list_clients()

    def revoke_client(self, client_id: str) -> ClientRecord:
        """Revoke a client: no new access tokens, no secret context; idempotent."""
        client = self.store.revoke_client(client_id, now=self._clock())
        logger.info("revoked client %s (%s)", client.client_id, client.client_name)
        return client

    def revocations(self) -> RevocationList:
        """The revoked clients, public like a certificate revocation list (ids are random)."""
        return RevocationList.of(self.store.revoked_client_ids())

    def rotate_key_epoch(self) -> KeyEpoch:
        """Generate the keys of epoch N+1 with the configured profile; N stays downloadable."""
        with self.store.exclusive():
            return self._generate_epoch(self.current_epoch().epoch + 1)

    # Clients

    def enroll(self, token: str) -> Enrollment:
        """Redeem an enrollment token: a new client id and secret, in one transaction.

        A token already redeemed gets the same client id and secret again (``redelivered``)
        while that client is unconfirmed (no access token yet), unrevoked, and enrolled
        less than ``enrollment_redelivery_window`` seconds ago: an answer lost to a crash
        or a dropped connection is not an orphaned client.

        Raises
        ------
        EnrollmentTokenError, EnrollmentTokenExpiredError
            Unknown or expired token; nothing is created.
        EnrollmentTokenUsedError
            The token was redeemed and its enrollment can no longer be re-delivered.
        ClientNameTakenError
            An active client already has the token's name.
        """
        client_id = str(uuid.uuid4())
        client_secret = secrets.token_urlsafe(32)
        token_hash = hash_secret(token)
        try:
            client = self.store.enroll_client(
                token_hash,
                client_id=client_id,
                secret_hash=hash_secret(client_secret),
                now=self._clock(),
                sealed_secret=(
                    seal_client_secret(token, client_id, client_secret)
                    if self.settings.enrollment_redelivery_window > 0
                    else None
                ),
            )
        except EnrollmentTokenUsedError:
            # Serialized by the store: of two concurrent redemptions one enrolls, the
            # other finds that enrollment here and answers with the same credentials.
            client, client_secret = self._redeliverable(token, token_hash)
            redelivered = True
            logger.info(
                "re-delivered enrollment of client %s (%s)", client.client_id, client.client_name
            )
        else:
            redelivered = False
            logger.info("enrolled client %s (%s)", client.client_id, client.client_name)
        current = self.current_epoch()
        return Enrollment(
            client_id=client.client_id,
            client_name=client.client_name,
            client_secret=client_secret,
            key_epoch=current.epoch,
            profile_name=current.profile_name,
            redelivered=redelivered,
        )

    def _redeliverable(self, token: str, token_hash: str) -> tuple[ClientRecord, str]:
        """The client and secret a used token enrolled, if it may be answered again."""
        window = self.settings.enrollment_redelivery_window
        pending = self.store.pending_enrollment(token_hash)
        # The store finds only unconfirmed, unrevoked clients; the window is checked here
        # because a restart may have changed it since the enrollment.
        if window <= 0 or pending is None or self._clock() >= pending.used_at + window:
            # Telling the holder it was used lets a hospital notice a stolen token.
            raise EnrollmentTokenUsedError("enrollment token was already used") from None
        try:
            secret = unseal_client_secret(token, pending.client.client_id, pending.sealed_secret)
        except (InvalidTag, UnicodeDecodeError):
            secret = None
        if secret is None or not hmac.compare_digest(
            hash_secret(secret), pending.client.secret_hash
        ):
            logger.error(
                "pending secret of client %s does not open: not re-delivered",
                pending.client.client_id,
            )
            raise EnrollmentTokenUsedError("enrollment token was already used") from None
        return pending.client, secret

    def issue_access_token(self, client_id: str, client_secret: str) -> IssuedToken:
        """A short-lived signed access token for an enrolled, unrevoked client."""
        client = self.store.get_client(client_id)
        # Hash even for an unknown id, so timing does not tell which ids exist.
        presented = hash_secret(client_secret)
        stored = client.secret_hash if client is not None else hash_secret(secrets.token_hex())
        if client is None or not hmac.compare_digest(presented, stored):
            raise ClientCredentialsError("unknown client id or wrong client secret")
        if client.revoked:
            raise ClientRevokedError(f"client {client.client_id} has been revoked")
        if not client.confirmed:
            # The client holds its secret: the enrollment token is dead from now on.
            self.store.confirm_enrollment(client.client_id)
            logger.info("confirmed enrollment of client %s", client.client_id)
        return self._signer.issue(
            client_id=client.client_id,
            client_name=client.client_name,
            key_epoch=self.current_epoch().epoch,
        )

    def authenticate_client(self, access_token: str) -> AccessClaims:
        """Verify an access token and that its client still exists and is not revoked."""
        claims = self._verifier.verify(access_token, role=CLIENT_ROLE)
        client = self.store.get_client(claims.client_id)
        if client is None:
            raise TokenInvalidError("access token names no enrolled client")
        if client.revoked:
            raise ClientRevokedError(f"client {client.client_id} has been revoked")
        return claims

    def secret_context(self, access_token: str, epoch: int | None = None) -> KeyEpoch:
        """The key epoch whose secret context an authenticated client may download.

        Takes the raw token so that no caller can skip the revocation check against the
        store: the secret context goes to enrolled, unrevoked clients only.
        """
        claims = self.authenticate_client(access_token)
        key_epoch = self.key_epoch(epoch)
        logger.info(
            "secret context of epoch %d sent to client %s", key_epoch.epoch, claims.client_id
        )
        return key_epoch

    # Public

    def current_epoch(self) -> KeyEpoch:
        epoch = self.store.latest_key_epoch()
        if epoch is None:
            raise StateError("no key epoch exists")
        return epoch

    def key_epoch(self, epoch: int | None = None) -> KeyEpoch:
        """Epoch ``epoch``, or the current one for ``None``."""
        if epoch is None:
            return self.current_epoch()
        found = self.store.get_key_epoch(epoch)
        if found is None:
            raise KeyEpochNotFoundError(f"key epoch {epoch} does not exist")
        return found

    def key_id(self, epoch: int | None = None) -> SignedKeyId:
        """Epoch ``epoch``'s key id (the current epoch's for ``None``), signed.

        fl_server verifies the statement with the key that verifies access tokens, and
        binds each job to the key id of its epoch: keys generated again under the same
        epoch number (a lost state directory) get another id.
        """
        key_epoch = self.key_epoch(epoch)
        statement = KeyIdStatement(key_epoch.epoch, key_epoch.profile_name, key_epoch.key_id)
        return SignedKeyId(statement, self._signer.sign_statement(statement))

    def verification_key(self) -> VerificationKey:
        current = self.current_epoch()
        return VerificationKey(
            algorithm=ALGORITHM,
            issuer=ISSUER,
            audience=AUDIENCE,
            public_key_pem=self._signer.public_key_pem,
            key_epoch=current.epoch,
            profile_name=current.profile_name,
        )
