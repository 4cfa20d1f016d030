"""The one exception tree of ``crypto``.

::

    CryptoError
    ├── ProfileError            invalid CKKS parameter set
    ├── ContextError            context bytes unusable, or holding keys they must not hold
    ├── LayoutError             tensors that do not fit a model layout
    │   └── LayoutMismatchError two parties disagree on the layout (fingerprints differ)
    ├── ValueRangeError         a value beyond what the profile holds safely
    ├── CiphertextError         ciphertext bytes invalid for this context, level or scale
    └── EnvelopeError           malformed wire envelope
        ├── EnvelopeTruncatedError
        ├── EnvelopeTooLargeError
        ├── EnvelopeVersionError
        └── BlockIndexError     duplicated, unordered or out-of-range block indices

Every error carries a stable machine-readable ``code``. Which HTTP status answers it is
the services' business, not crypto's: fl_server translates them once at its edge
(``fl_server.errors.InvalidInputError.from_crypto``) with the status hefl_wire's registry
gives each code.
"""

from __future__ import annotations

__all__ = [
    "BlockIndexError",
    "CiphertextError",
    "ContextError",
    "CryptoError",
    "EnvelopeError",
    "EnvelopeTooLargeError",
    "EnvelopeTruncatedError",
    "EnvelopeVersionError",
    "LayoutError",
    "LayoutMismatchError",
    "ProfileError",
    "ValueRangeError",
]


class CryptoError(Exception):
    """Base of every error raised by ``crypto``."""

    code: str = "crypto_error"


class ProfileError(CryptoError):
    code = "profile_invalid"


class ContextError(CryptoError):
    code = "context_invalid"


class LayoutError(CryptoError):
    code = "layout_invalid"


class LayoutMismatchError(LayoutError):
    code = "layout_mismatch"


class ValueRangeError(CryptoError):
    code = "value_out_of_range"


class CiphertextError(CryptoError):
    code = "ciphertext_invalid"


class EnvelopeError(CryptoError):
    code = "envelope_malformed"


class EnvelopeTruncatedError(EnvelopeError):
    code = "envelope_truncated"


class EnvelopeTooLargeError(EnvelopeError):
    code = "envelope_too_large"


class EnvelopeVersionError(EnvelopeError):
    code = "envelope_version_unsupported"


class BlockIndexError(EnvelopeError):
    code = "block_index_invalid"
