"""hefl crypto: CKKS profiles, model layout, compact ciphertexts, wire envelope, compression.

Pure: bytes and arrays in, bytes and arrays out. TenSEAL is imported only in ``_seal``
and no TenSEAL type leaves this package.
"""

from crypto._compression import (
    CompressedUpdate,
    all_blocks,
    blocks_for_fraction,
    random_block_indices,
    random_k_blocks,
    top_k_blocks,
)
from crypto._envelope import (
    ENVELOPE_HEADERS,
    FORMAT_VERSION,
    CipherBlock,
    EncryptedModel,
    EncryptedUpdate,
    EnvelopeHeader,
    EnvelopeHeaders,
    EnvelopeLimits,
    model_from_bytes,
    model_to_bytes,
    update_from_bytes,
    update_to_bytes,
)
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
from crypto._layout import ModelLayout, TensorSpec, build_layout, tensor_to_numpy
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
    "ENVELOPE_HEADERS",
    "FORMAT_VERSION",
    "PROFILES",
    "BlockIndexError",
    "CipherBlock",
    "CiphertextError",
    "CkksProfile",
    "ClientCipher",
    "CompressedUpdate",
    "ContextError",
    "CryptoError",
    "EncryptedBlock",
    "EncryptedModel",
    "EncryptedUpdate",
    "EnvelopeError",
    "EnvelopeHeader",
    "EnvelopeHeaders",
    "EnvelopeLimits",
    "EnvelopeTooLargeError",
    "EnvelopeTruncatedError",
    "EnvelopeVersionError",
    "KeyMaterial",
    "LayoutError",
    "LayoutMismatchError",
    "ModelLayout",
    "ProfileError",
    "ServerCipher",
    "TensorSpec",
    "ValueRangeError",
    "all_blocks",
    "blocks_for_fraction",
    "build_layout",
    "generate_key_material",
    "get_profile",
    "model_from_bytes",
    "model_to_bytes",
    "random_block_indices",
    "random_k_blocks",
    "tensor_to_numpy",
    "top_k_blocks",
    "update_from_bytes",
    "update_to_bytes",
]
