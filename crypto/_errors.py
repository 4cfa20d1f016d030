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

Every error carries a stable machine-readable ``code`` and the HTTP status a
service should answer with, so the services translate them in one handler.
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
    http_status: int = 400


class ProfileError(CryptoError):
    code = "profile_invalid"


class ContextError(CryptoError):
    code = "context_invalid"
    http_status = 422


class LayoutError(CryptoError):
    code = "layout_invalid"
    http_status = 422


class LayoutMismatchError(LayoutError):
    code = "layout_mismatch"
    http_status = 409


class ValueRangeError(CryptoError):
    code = "value_out_of_range"
    http_status = 422


class CiphertextError(CryptoError):
    code = "ciphertext_invalid"
    http_status = 422


class EnvelopeError(CryptoError):
    code = "envelope_malformed"
    http_status = 400


class EnvelopeTruncatedError(EnvelopeError):
    code = "envelope_truncated"


class EnvelopeTooLargeError(EnvelopeError):
    code = "envelope_too_large"
    http_status = 413


class EnvelopeVersionError(EnvelopeError):
    code = "envelope_version_unsupported"


class BlockIndexError(EnvelopeError):
    code = "block_index_invalid"
    http_status = 422
