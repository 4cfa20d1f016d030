"""What the server needs from the key authority: the keyless context and the token key."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KeyauthMaterial"]


@dataclass(frozen=True)
class KeyauthMaterial:
    """What the server needs from the key authority: all of it public.

    ``public_context`` is the keyless CKKS context of ``key_epoch``;
    ``verification_key_pem`` checks client access tokens offline.
    """

    public_context: bytes
    key_epoch: int
    profile: str
    verification_key_pem: str
    issuer: str = "hefl-keyauth"
    audience: str = "hefl"
