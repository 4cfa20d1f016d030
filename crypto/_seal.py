"""The one module that touches TenSEAL: key material, client encryption, server additions."""

from __future__ import annotations

import contextlib
import math
import os
import struct
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal as ts
import tenseal.sealapi as sealapi

from crypto._errors import CiphertextError, ContextError, ValueRangeError
from crypto._keyid import key_id
from crypto._profiles import CkksProfile

__all__ = [
    "ClientCipher",
    "EncryptedBlock",
    "KeyMaterial",
    "ServerCipher",
    "generate_key_material",
    "key_id",
]

_SEAL_MAGIC = 0xA15E
_SEAL_HEADER = struct.Struct(
    "<HBBBBHQ"
)  # magic, header size, major, minor, compression, reserved, size


class _Channel:
    """Bytes in and out of SEAL objects, which the Python binding saves and loads only by path.

    The path is an anonymous in-memory file (memfd), so no ciphertext ever reaches a disk;
    where memfd does not exist a private temporary file stands in.
    """

    def __init__(self) -> None:
        if hasattr(os, "memfd_create"):
            self._fd = os.memfd_create("hefl-seal", os.MFD_CLOEXEC)
            self.path = f"/proc/self/fd/{self._fd}"
        else:  # pragma: no cover - non-Linux fallback
            self._fd, self.path = tempfile.mkstemp(prefix="hefl-seal-")

    def dump(self, obj: Any) -> bytes:
        obj.save(self.path)
        size = os.fstat(self._fd).st_size
        return os.pread(self._fd, size, 0)

    def feed(self, data: bytes) -> str:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        return self.path

    def __del__(self) -> None:
        with contextlib.suppress(OSError):  # already closed at interpreter exit
            os.close(self._fd)


_local = threading.local()


def _channel() -> _Channel:
    # One channel per thread: the server applies updates from a worker thread.
    channel: _Channel | None = getattr(_local, "channel", None)
    if channel is None:
        channel = _local.channel = _Channel()
    return channel


@dataclass(frozen=True)
class KeyMaterial:
    """One key epoch's serialized contexts.

    ``secret_context`` is for enrolled clients only; ``public_context`` holds no key at
    all (about 100 bytes) and is all the server needs to add ciphertexts.
    """

    profile_name: str
    secret_context: bytes
    public_context: bytes

    @property
    def key_id(self) -> str:
        """The key id of this epoch's keys (``key_id`` of the secret context)."""
        return key_id(self.secret_context)


def generate_key_material(profile: CkksProfile) -> KeyMaterial:
    """Generate a fresh CKKS secret key for ``profile`` and serialize both contexts."""
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        profile.poly_modulus_degree,
        coeff_mod_bit_sizes=list(profile.coeff_mod_bit_sizes),
    )
    # Clients encrypt symmetrically and decrypt: the secret key is all they need.
    secret = ctx.serialize(
        save_public_key=False, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
    )
    public = ctx.serialize(
        save_public_key=False, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )
    return KeyMaterial(profile_name=profile.name, secret_context=secret, public_context=public)


def _load_context(data: bytes, profile: CkksProfile) -> Any:
    try:
        ctx = ts.context_from(bytes(data))
    except Exception as exc:  # TenSEAL raises ValueError/RuntimeError on garbage
        raise ContextError(f"context bytes could not be parsed: {exc}") from exc
    parms = ctx.seal_context().data.key_context_data().parms()
    bits = tuple(m.bit_count() for m in parms.coeff_modulus())
    if parms.poly_modulus_degree() != profile.poly_modulus_degree or (
        bits != profile.coeff_mod_bit_sizes
    ):
        raise ContextError(
            f"context (N={parms.poly_modulus_degree()}, primes={list(bits)}) does not match "
            f"profile {profile.name!r} (N={profile.poly_modulus_degree}, "
            f"primes={list(profile.coeff_mod_bit_sizes)})"
        )
    return ctx


def _check_header(data: bytes, max_bytes: int) -> None:
    """Reject what SEAL should never be asked to parse, before it parses anything."""
    if len(data) > max_bytes:
        raise CiphertextError(f"ciphertext of {len(data)} bytes exceeds the {max_bytes} allowed")
    if len(data) < _SEAL_HEADER.size:
        raise CiphertextError("ciphertext shorter than its header")
    magic, header_size, _major, _minor, compression, _reserved, size = _SEAL_HEADER.unpack_from(
        data
    )
    if magic != _SEAL_MAGIC or header_size != _SEAL_HEADER.size:
        raise CiphertextError("not a SEAL ciphertext (bad magic)")
    if compression not in (0, 1, 2):
        raise CiphertextError(f"unknown SEAL compression mode {compression}")
    if size != len(data):
        raise CiphertextError(f"ciphertext declares {size} bytes but {len(data)} were given")


def _pack(values: npt.ArrayLike, profile: CkksProfile) -> list[complex]:
    """Two reals per slot: value 2i is the real part and 2i+1 the imaginary part of slot i."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size > profile.block_size:
        raise ValueRangeError(f"block of {arr.size} values exceeds {profile.block_size} slots")
    if not np.all(np.isfinite(arr)):
        raise ValueRangeError("values must be finite (found NaN or inf)")
    peak = float(np.max(np.abs(arr))) if arr.size else 0.0
    if peak > profile.max_magnitude:
        raise ValueRangeError(
            f"value of magnitude {peak:.4g} exceeds the {profile.max_magnitude:g} that "
            f"profile {profile.name!r} holds safely"
        )
    padded = np.zeros(profile.block_size, dtype=np.float64)
    padded[: arr.size] = arr
    packed: list[complex] = padded.view(np.complex128).tolist()
    return packed


class ClientCipher:
    """A client's view: holds the secret key, encrypts updates and decrypts the model.

    Parameters
    ----------
    secret_context
        The serialized secret context an enrolled client received from the key authority.
    profile
        The profile the key epoch was generated with; a mismatch is a ``ContextError``.
    """

    def __init__(self, secret_context: bytes, profile: CkksProfile) -> None:
        ctx = _load_context(secret_context, profile)
        if not ctx.is_private():
            raise ContextError("a client needs the secret context; this one holds no secret key")
        self.profile = profile
        self._ctx = ctx  # keeps the SEAL context alive for the objects below
        self._sc = ctx.seal_context().data
        secret_key = ctx.secret_key().data
        self._encoder = sealapi.CKKSEncoder(self._sc)
        self._encryptor = sealapi.Encryptor(self._sc, secret_key)
        self._decryptor = sealapi.Decryptor(self._sc, secret_key)
        self._parms_id = self._sc.last_parms_id()

    def _encrypt(self, values: npt.ArrayLike, scale: float) -> bytes:
        plain = sealapi.Plaintext()
        self._encoder.encode(_pack(values, self.profile), self._parms_id, scale, plain)
        # Symmetric encryption is serialized with its seed: half the ciphertext is a seed.
        return _channel().dump(self._encryptor.encrypt_symmetric(plain))

    def encrypt_update_block(self, values: npt.ArrayLike) -> bytes:
        """Encrypt up to ``block_size`` update values (about 8 bytes per value)."""
        return self._encrypt(values, self.profile.update_scale)

    def encrypt_model_block(self, values: npt.ArrayLike) -> bytes:
        """Encrypt up to ``block_size`` model values at the model scale (an initial model)."""
        return self._encrypt(values, self.profile.model_scale)

    def decrypt_block(self, data: bytes) -> npt.NDArray[np.float64]:
        """Decrypt a model or update block into ``block_size`` float64 values.

        The values are not checked: a corrupted block decrypts to garbage, which
        ``check_model`` finds. A block SEAL cannot decode at all (a scale of NaN) is a
        ``CiphertextError``.
        """
        ct = _load_ciphertext(self._sc, data, self.profile)
        plain = sealapi.Plaintext()
        try:
            self._decryptor.decrypt(ct, plain)
            slots = np.asarray(self._encoder.decode_complex(plain), dtype=np.complex128)
        except (RuntimeError, ValueError) as exc:
            raise CiphertextError(f"ciphertext could not be decrypted: {exc}") from exc
        return slots.view(np.float64).copy()


def _load_ciphertext(sc: Any, data: bytes, profile: CkksProfile) -> Any:
    _check_header(data, profile.max_block_bytes)
    ct = sealapi.Ciphertext()
    try:
        ct.load(sc, _channel().feed(data))
    except (RuntimeError, ValueError) as exc:
        raise CiphertextError(f"ciphertext rejected by SEAL: {exc}") from exc
    if ct.size() != 2:
        raise CiphertextError(f"ciphertext has {ct.size()} polynomials, expected 2")
    if ct.parms_id() != sc.last_parms_id():
        raise CiphertextError("ciphertext is not at the lowest modulus level of this context")
    if not ct.is_ntt_form():
        raise CiphertextError("ciphertext is not in NTT form")
    return ct


class EncryptedBlock:
    """A ciphertext block held by the server; opaque outside ``crypto``."""

    __slots__ = ("_ct",)

    def __init__(self, ct: Any) -> None:
        self._ct = ct


class ServerCipher:
    """The server's view: a keyless context, enough to add ciphertexts and nothing more.

    Parameters
    ----------
    public_context
        The keyless context from the key authority. One holding a secret key is refused.
    profile
        The profile of the key epoch.
    """

    def __init__(self, public_context: bytes, profile: CkksProfile) -> None:
        ctx = _load_context(public_context, profile)
        if ctx.is_private():
            # The server must never hold a secret key: refuse rather than silently drop it.
            raise ContextError("context holds a secret key; the server takes only the keyless one")
        self.profile = profile
        self._ctx = ctx
        self._sc = ctx.seal_context().data
        self._evaluator = sealapi.Evaluator(self._sc)
        self._encoder = sealapi.CKKSEncoder(self._sc)
        self._weights: dict[int, Any] = {}

    def _load(self, data: bytes, scale: float, what: str) -> EncryptedBlock:
        ct = _load_ciphertext(self._sc, data, self.profile)
        if ct.scale != scale:
            raise CiphertextError(
                f"{what} block has scale 2^{np.log2(ct.scale) if ct.scale > 0 else 'nan'}, "
                f"expected 2^{int(np.log2(scale))}"
            )
        return EncryptedBlock(ct)

    def load_update_block(self, data: bytes) -> EncryptedBlock:
        """Parse and validate one client-encrypted update block."""
        return self._load(data, self.profile.update_scale, "update")

    def load_model_block(self, data: bytes) -> EncryptedBlock:
        """Parse and validate one model block (a stored model or a client's initial model)."""
        return self._load(data, self.profile.model_scale, "model")

    def _weight_plain(self, factor: int) -> Any:
        plain = self._weights.get(factor)
        if plain is None:
            plain = sealapi.Plaintext()
            # An integer at scale 1 is an exact constant polynomial: no level is used.
            self._encoder.encode(float(factor), self._sc.last_parms_id(), 1.0, plain)
            self._weights[factor] = plain
        return plain

    def weight_update(self, update: EncryptedBlock, weight: float) -> EncryptedBlock:
        """Turn an update block into a model-scale block worth ``weight`` times the update.

        Multiplies by the integer ``round(weight * 2**weight_bits)`` and relabels the scale
        from ``2**update_scale_bits`` to ``2**model_scale_bits``: the update is weighted,
        never the model, and no modulus level is consumed. ``update`` is consumed.
        """
        factor = self.profile.quantize_weight(weight)
        if factor == 0:
            raise ValueError(
                f"weight {weight!r} rounds to zero at {self.profile.weight_bits} weight bits"
            )
        if update._ct.scale != self.profile.update_scale:
            raise CiphertextError("block is not an unweighted update")
        self._evaluator.multiply_plain_inplace(update._ct, self._weight_plain(factor))
        update._ct.scale = self.profile.model_scale
        return update

    def add_into(self, model: EncryptedBlock, block: EncryptedBlock) -> None:
        """``model += block`` for two model-scale blocks (a weighted update, or a buffer)."""
        if model._ct.scale != self.profile.model_scale or block._ct.scale != model._ct.scale:
            raise CiphertextError("both blocks must be at the model scale")
        self._evaluator.add_inplace(model._ct, block._ct)

    def add_weighted(self, model: EncryptedBlock, update: EncryptedBlock, weight: float) -> None:
        """``model += weight * update``; ``update`` is consumed."""
        self.add_into(model, self.weight_update(update, weight))

    def subtract_from(self, model: EncryptedBlock, block: EncryptedBlock) -> None:
        """``model -= block`` for two model-scale blocks: the exact inverse of ``add_into``.

        Addition and subtraction are exact in the ring (every coefficient modulo the data
        prime), so ``add_into(m, b)`` then ``subtract_from(m, b)`` gives ``m`` back bit for
        bit, however many other blocks were added in between.
        """
        if model._ct.scale != self.profile.model_scale or block._ct.scale != model._ct.scale:
            raise CiphertextError("both blocks must be at the model scale")
        self._evaluator.sub_inplace(model._ct, block._ct)

    def subtract_weighted(
        self, model: EncryptedBlock, update: EncryptedBlock, weight: float
    ) -> None:
        """``model -= weight * update``: removes exactly what ``add_weighted`` added.

        ``update`` is the same update block, loaded again from the same bytes, and
        ``weight`` the weight it was added with: both go through ``weight_update``'s
        integer quantization, so the weighted block is bit for bit the one that was
        added. ``update`` is consumed.
        """
        self.subtract_from(model, self.weight_update(update, weight))

    def _noise_plain(
        self, seed: int, std: float, zero_mask: npt.NDArray[np.bool_], index: int
    ) -> Any:
        if not (math.isfinite(std) and std >= 0):
            raise ValueError(f"noise std must be finite and non-negative, got {std!r}")
        mask = np.asarray(zero_mask, dtype=np.bool_).reshape(-1)
        if mask.size != self.profile.block_size:
            raise ValueError(f"zero mask of {mask.size} values, expected {self.profile.block_size}")
        # One stream per (seed, block): a block's noise does not depend on the others.
        values = np.random.default_rng([seed, index]).normal(0.0, std, mask.size)
        values[mask] = 0.0  # canaries and padding stay 0: the integrity check still holds
        plain = sealapi.Plaintext()
        self._encoder.encode(
            _pack(values, self.profile), self._sc.last_parms_id(), self.profile.model_scale, plain
        )
        return plain

    def add_noise(
        self,
        model: EncryptedBlock,
        seed: int,
        std: float,
        *,
        index: int,
        zero_mask: npt.NDArray[np.bool_],
    ) -> None:
        """``model += n``: Gaussian noise of ``std`` at every value ``zero_mask`` leaves free.

        ``n`` is drawn from ``(seed, index)`` (numpy's PCG64) and encoded as a plaintext at
        the model scale, so the same seed gives the same ciphertext: a replay or a rebuild
        adds (or ``subtract_noise`` removes) exactly this noise. No key is needed: adding a
        plaintext to a ciphertext is what a keyless context can do. Values where
        ``zero_mask`` is true (canaries, padding) get none.
        """
        if model._ct.scale != self.profile.model_scale:
            raise CiphertextError("noise goes into a model-scale block")
        self._evaluator.add_plain_inplace(model._ct, self._noise_plain(seed, std, zero_mask, index))

    def subtract_noise(
        self,
        model: EncryptedBlock,
        seed: int,
        std: float,
        *,
        index: int,
        zero_mask: npt.NDArray[np.bool_],
    ) -> None:
        """``model -= n``: removes exactly what ``add_noise`` with the same arguments added."""
        if model._ct.scale != self.profile.model_scale:
            raise CiphertextError("noise goes into a model-scale block")
        self._evaluator.sub_plain_inplace(model._ct, self._noise_plain(seed, std, zero_mask, index))

    def block_to_bytes(self, block: EncryptedBlock) -> bytes:
        """Serialize a block for storage or download (16 bytes per value once added to)."""
        return _channel().dump(block._ct)
