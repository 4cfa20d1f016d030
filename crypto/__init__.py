"""hefl crypto: CKKS profiles, model layout, compact ciphertexts, wire envelope, compression."""

from crypto._errors import (
    BlockIndexError,
    CiphertextError,
    ContextError,
    CryptoError,
    EnvelopeError,
    EnvelopeTooLargeError,
    EnvelopeTruncatedError,
    EnvelopeVersionError,
    LayoutError,
    LayoutMismatchError,
    ProfileError,
    ValueRangeError,
)
from crypto._profiles import DEFAULT_PROFILE, PROFILES, CkksProfile, get_profile
from crypto._seal import (
    ClientCipher,
    EncryptedBlock,
    KeyMaterial,
    ServerCipher,
    generate_key_material,
)

__all__ = [
    "DEFAULT_PROFILE",
    "PROFILES",
    "BlockIndexError",
    "CiphertextError",
    "CkksProfile",
    "ClientCipher",
    "ContextError",
    "CryptoError",
    "EncryptedBlock",
    "EnvelopeError",
    "EnvelopeTooLargeError",
    "EnvelopeTruncatedError",
    "EnvelopeVersionError",
    "KeyMaterial",
    "LayoutError",
    "LayoutMismatchError",
    "ProfileError",
    "ServerCipher",
    "ValueRangeError",
    "generate_key_material",
    "get_profile",
]
