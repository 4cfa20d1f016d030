"""What the server needs from the key authority: the token key, a keyless context per epoch.

``MaterialSource`` is where it comes from: keyauth over HTTP in production
(``fl_server.keyauth_client.KeyauthMaterialSource``), fixed values in tests
(``KeyauthMaterial``). All of it is public: the server never holds a secret key. With
each epoch's context comes that epoch's key id, as keyauth states it signed: the keyless
context is the same for every key of a profile, so only the key id tells whether the
keys behind an epoch number are still the ones a job was created under.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from fl_server.errors import StartupError

__all__ = ["EpochContext", "KeyauthMaterial", "MaterialSource", "TokenKey"]


@dataclass(frozen=True)
class EpochContext:
    """The keyless CKKS context of one key epoch, that epoch's profile and its key id.

    ``key_id`` is the hex SHA-256 of the epoch's secret context, from keyauth's verified
    statement (``hefl_wire.KeyIdVerifier``); ``None`` only from a fixed source that
    states none (``KeyauthMaterial`` without ``key_id``, in tests).
    """

    key_epoch: int
    profile: str
    public_context: bytes = field(repr=False)
    key_id: str | None = None


@dataclass(frozen=True)
class TokenKey:
    """What verifies access tokens offline: keyauth's public key, issuer and audience."""

    verification_key_pem: str
    issuer: str = "hefl-keyauth"
    audience: str = "hefl"


class MaterialSource(abc.ABC):
    """Where the server gets the token key and the keyless context of each key epoch.

    Jobs may sit on different epochs (keyauth rotates; a new job binds the current one),
    so contexts are asked for by epoch; a source may cache them.
    """

    @abc.abstractmethod
    async def token_key(self) -> TokenKey:
        """The token verification key.

        Raises
        ------
        KeyauthUnavailableError
            The key authority gave none.
        """

    @abc.abstractmethod
    async def current_context(self) -> EpochContext:
        """The context and key id of the key authority's current epoch (what a new job binds).

        Raises
        ------
        KeyauthUnavailableError
            The key authority gave none.
        StartupError
            It answered something unusable (a key-id statement that does not verify).
        """

    @abc.abstractmethod
    async def epoch_context(self, key_epoch: int) -> EpochContext:
        """The context and key id of ``key_epoch`` (an existing job's).

        Raises
        ------
        KeyauthUnavailableError
            The key authority did not answer.
        StartupError
            It answered that it has no such epoch, or something unusable.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what the source holds."""


@dataclass(frozen=True)
class KeyauthMaterial(MaterialSource):
    """Fixed material of one key epoch: what tests and embedders pass to ``create_app``.

    ``public_context`` is the keyless CKKS context of ``key_epoch``, which is then the
    current epoch; ``verification_key_pem`` checks access tokens offline; ``key_id`` is the
    epoch's key id (``hefl_wire.key_id_of`` of its secret context), ``None`` to state none.
    """

    public_context: bytes
    key_epoch: int
    profile: str
    verification_key_pem: str
    issuer: str = "hefl-keyauth"
    audience: str = "hefl"
    key_id: str | None = None

    async def token_key(self) -> TokenKey:
        return TokenKey(self.verification_key_pem, self.issuer, self.audience)

    async def current_context(self) -> EpochContext:
        return EpochContext(self.key_epoch, self.profile, self.public_context, self.key_id)

    async def epoch_context(self, key_epoch: int) -> EpochContext:
        if key_epoch != self.key_epoch:
            raise StartupError(f"no key material for key epoch {key_epoch}")
        return await self.current_context()
