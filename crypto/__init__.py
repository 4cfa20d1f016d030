"""hefl crypto: CKKS profiles, model layout, ciphertexts, wire envelope, compression, checks.

Pure: bytes and arrays in, bytes and arrays out. TenSEAL is imported only in ``_seal``
and no TenSEAL type leaves this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crypto._compression import (
    CompressedUpdate,
    all_blocks,
    blocks_for_fraction,
    random_block_indices,
    random_k_blocks,
    top_energy_blocks,
    top_k_blocks,
)
from crypto._envelope import (
    ENVELOPE_HEADERS,
    FORMAT_VERSION,
    CipherBlock,
    EncryptedModel,
    EncryptedUpdate,
    EnvelopeHead,
    EnvelopeHeader,
    EnvelopeHeaders,
    EnvelopeLimits,
    EnvelopeParser,
    cipher_block_to_bytes,
    model_from_bytes,
    model_head_to_bytes,
    model_to_bytes,
    update_from_bytes,
    update_head_to_bytes,
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
from crypto._integrity import INTEGRITY_CHECKS, IntegrityCheck, IntegrityCheckName, check_model
from crypto._keyid import key_id
from crypto._layout import (
    DEFAULT_CANARIES,
    ModelLayout,
    TensorSpec,
    build_layout,
    tensor_to_numpy,
)
from crypto._profiles import DEFAULT_PROFILE, PROFILES, CkksProfile, get_profile

if TYPE_CHECKING:
    from crypto._seal import (
        ClientCipher,
        EncryptedBlock,
        KeyMaterial,
        ServerCipher,
        generate_key_material,
    )

__all__ = [
    "DEFAULT_CANARIES",
    "DEFAULT_PROFILE",
    "ENVELOPE_HEADERS",
    "FORMAT_VERSION",
    "INTEGRITY_CHECKS",
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
    "EnvelopeHead",
    "EnvelopeHeader",
    "EnvelopeHeaders",
    "EnvelopeLimits",
    "EnvelopeParser",
    "EnvelopeTooLargeError",
    "EnvelopeTruncatedError",
    "EnvelopeVersionError",
    "IntegrityCheck",
    "IntegrityCheckName",
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
    "check_model",
    "cipher_block_to_bytes",
    "generate_key_material",
    "get_profile",
    "key_id",
    "model_from_bytes",
    "model_head_to_bytes",
    "model_to_bytes",
    "random_block_indices",
    "random_k_blocks",
    "tensor_to_numpy",
    "top_energy_blocks",
    "top_k_blocks",
    "update_from_bytes",
    "update_head_to_bytes",
    "update_to_bytes",
]

# TenSEAL loads on first use of what needs it (PEP 562): layouts, envelopes and profiles
# serve the client's training and enrollment, which never touch a ciphertext
_SEAL_NAMES = [
    "ClientCipher",
    "EncryptedBlock",
    "KeyMaterial",
    "ServerCipher",
    "generate_key_material",
]


# not seen by mypy: then an unknown name is still an error, not an ``object``
if not TYPE_CHECKING:
    import lazy_loader

    __getattr__, _, _ = lazy_loader.attach(__name__, submod_attrs={"_seal": _SEAL_NAMES})

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
