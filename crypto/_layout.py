"""Model layout: named tensors flattened into fixed-size blocks of ciphertext slots, and back."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from crypto._errors import LayoutError

__all__ = ["DEFAULT_CANARIES", "ModelLayout", "TensorSpec", "build_layout", "tensor_to_numpy"]

_FLOAT_DTYPES = ("float16", "float32", "float64")
# Format 2 added the canary slots. Format 1 is refused, not read as "no canaries": no
# deployment outlives the change, and a job without canaries could not be checked.
_LAYOUT_FORMAT = 2

DEFAULT_CANARIES = 4
"""Canary slots per block. A corrupted ciphertext (a flipped bit, another key) decrypts
to values of about 1e4 in every slot of its block, so one canary would almost always
catch it; four make a miss need four slots near 0 at once, for 4 of 4096 slots (0.1%)."""


@dataclass(frozen=True)
class TensorSpec:
    """One tensor's place in the flat parameter vector."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int

    @property
    def numel(self) -> int:
        # Python integers: a hostile shape must not wrap around int64 into a small count
        return math.prod(self.shape)


def tensor_to_numpy(value: Any) -> npt.NDArray[Any]:
    """A numpy array from a numpy array or a torch tensor (duck-typed: torch is not imported)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            raise LayoutError("bfloat16 tensors are not supported; convert the model to float32")
        value = value.numpy()
    return np.asarray(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _is_personal(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True)
class ModelLayout:
    """Where every shared tensor lives in a sequence of blocks of ``block_size`` values.

    Tensors are laid end to end in order in the first ``param_slots`` slots of each
    block; the last ``canaries`` slots of every block are canaries, and the last block's
    unused parameter slots are padding. Canaries and padding hold 0 in the initial model
    and in every honest update, so they decrypt to about 0 in every honest version
    (``zero_mask``): a block whose ciphertext was corrupted decrypts to garbage there.
    Tensors whose names match a ``personal`` pattern (``fnmatch`` globs) stay on the
    client and are left out. The layout is plain data with a stable ``fingerprint``,
    which covers the canary count.
    """

    tensors: tuple[TensorSpec, ...]
    block_size: int
    personal: tuple[str, ...] = ()
    canaries: int = DEFAULT_CANARIES

    def __post_init__(self) -> None:
        if self.block_size <= 0:
            raise LayoutError("block_size must be positive")
        if not 0 <= self.canaries < self.block_size:
            raise LayoutError(
                f"canaries must be in 0..{self.block_size - 1} (a block of {self.block_size} "
                f"slots needs one for a parameter), got {self.canaries}"
            )
        offset = 0
        seen: set[str] = set()
        for spec in self.tensors:
            if spec.name in seen:
                raise LayoutError(f"tensor {spec.name!r} appears twice")
            seen.add(spec.name)
            if spec.offset != offset:
                raise LayoutError(
                    f"tensor {spec.name!r} has offset {spec.offset}, expected {offset}"
                )
            if spec.dtype not in _FLOAT_DTYPES:
                raise LayoutError(f"tensor {spec.name!r} has unsupported dtype {spec.dtype}")
            if any(d < 0 for d in spec.shape):
                raise LayoutError(f"tensor {spec.name!r} has a negative dimension")
            offset += spec.numel
        if offset == 0:
            raise LayoutError("layout holds no parameters")

    @property
    def total_params(self) -> int:
        last = self.tensors[-1]
        return last.offset + last.numel

    @property
    def param_slots(self) -> int:
        """Slots per block that hold parameters: ``block_size - canaries``."""
        return self.block_size - self.canaries

    @property
    def n_blocks(self) -> int:
        return -(-self.total_params // self.param_slots)

    @property
    def zero_mask(self) -> npt.NDArray[np.bool_]:
        """``(n_blocks, block_size)``: ``True`` at every slot that holds no parameter (the
        canaries of each block and the last block's padding), which must decrypt to ~0."""
        padding = np.ones(self.n_blocks * self.param_slots, dtype=np.bool_)
        padding[: self.total_params] = False
        mask = np.ones((self.n_blocks, self.block_size), dtype=np.bool_)
        mask[:, : self.param_slots] = padding.reshape(self.n_blocks, self.param_slots)
        return mask

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.tensors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _LAYOUT_FORMAT,
            "block_size": self.block_size,
            "canaries": self.canaries,
            "personal": list(self.personal),
            "tensors": [
                {"name": s.name, "shape": list(s.shape), "dtype": s.dtype, "offset": s.offset}
                for s in self.tensors
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelLayout:
        try:
            if data["format"] == 1:
                raise LayoutError(
                    "layout format 1 (without canary slots) is no longer supported: build "
                    f"the layout again with this version of hefl (format {_LAYOUT_FORMAT})"
                )
            if data["format"] != _LAYOUT_FORMAT:
                raise LayoutError(f"unsupported layout format {data['format']!r}")
            tensors = tuple(
                TensorSpec(
                    name=_text(t["name"]),
                    shape=tuple(int(d) for d in t["shape"]),
                    dtype=_text(t["dtype"]),
                    offset=int(t["offset"]),
                )
                for t in data["tensors"]
            )
            return cls(
                tensors=tensors,
                block_size=int(data["block_size"]),
                personal=tuple(_text(p) for p in data["personal"]),
                canaries=int(data["canaries"]),
            )
        except LayoutError:
            raise
        # RecursionError: str() of a deeply nested name; OverflowError: int() of Infinity
        except (KeyError, TypeError, ValueError, RecursionError, OverflowError) as exc:
            raise LayoutError(f"malformed layout: {repr(exc)[:200]}") from None

    def to_json(self) -> bytes:
        """Canonical JSON: the bytes the fingerprint is computed over."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ModelLayout:
        """Parse ``to_json``'s output; anything else is a ``LayoutError``, never another
        exception (a body of a thousand nested arrays raises ``RecursionError`` inside
        ``json``, which must become a 4xx, not a 500)."""
        try:
            parsed = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise LayoutError(f"layout is not valid JSON: {exc}") from None
        except Exception as exc:  # RecursionError, MemoryError's kin: no parser crash escapes
            raise LayoutError(f"layout JSON could not be parsed: {type(exc).__name__}") from None
        if not isinstance(parsed, dict):
            raise LayoutError("layout JSON must be an object")
        return cls.from_dict(parsed)

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the canonical JSON: equal fingerprints mean identical layouts."""
        return hashlib.sha256(self.to_json()).digest()

    def flatten(self, tensors: Mapping[str, Any]) -> npt.NDArray[np.float64]:
        """Pack the shared tensors into an ``(n_blocks, block_size)`` float64 array.

        Canaries and padding are 0. Personal tensors in ``tensors`` are ignored; a
        missing, unknown or misshapen tensor is a ``LayoutError``. Exact: every supported
        dtype fits in float64.
        """
        known = set(self.names)
        unknown = [n for n in tensors if n not in known and not _is_personal(n, self.personal)]
        if unknown:
            raise LayoutError(f"tensors not in the layout: {unknown[:5]}")
        flat = np.zeros(self.n_blocks * self.param_slots, dtype=np.float64)
        for spec in self.tensors:
            if spec.name not in tensors:
                raise LayoutError(f"tensor {spec.name!r} is missing")
            arr = tensor_to_numpy(tensors[spec.name])
            if tuple(arr.shape) != spec.shape:
                raise LayoutError(
                    f"tensor {spec.name!r} has shape {tuple(arr.shape)}, layout says {spec.shape}"
                )
            flat[spec.offset : spec.offset + spec.numel] = arr.reshape(-1)
        blocks = np.zeros((self.n_blocks, self.block_size), dtype=np.float64)
        blocks[:, : self.param_slots] = flat.reshape(self.n_blocks, self.param_slots)
        return blocks

    def unflatten(self, blocks: npt.ArrayLike) -> dict[str, npt.NDArray[Any]]:
        """The inverse of ``flatten``: tensors with their layout shape and dtype (the
        canaries and padding are ignored)."""
        arr = np.asarray(blocks, dtype=np.float64)
        if arr.size != self.n_blocks * self.block_size:
            raise LayoutError(f"expected {self.n_blocks}x{self.block_size} values, got {arr.size}")
        flat = arr.reshape(self.n_blocks, self.block_size)[:, : self.param_slots].reshape(-1)
        return {
            spec.name: flat[spec.offset : spec.offset + spec.numel]
            .astype(spec.dtype)
            .reshape(spec.shape)
            for spec in self.tensors
        }


def build_layout(
    tensors: Mapping[str, Any],
    block_size: int,
    personal: Sequence[str] = (),
    *,
    canaries: int = DEFAULT_CANARIES,
) -> ModelLayout:
    """Lay out a ``state_dict`` (or a dict of numpy arrays) in blocks of ``block_size`` values.

    Parameters
    ----------
    tensors
        Ordered named tensors; order is kept and is part of the fingerprint.
    block_size
        Values per block: ``CkksProfile.block_size``.
    personal
        ``fnmatch`` patterns of tensor names that never leave the client (FedPer-style).
    canaries
        Canary slots at the end of every block (``DEFAULT_CANARIES``); fl_server refuses
        a layout without any.

    Raises
    ------
    LayoutError
        A shared tensor that is not floating point (e.g. BatchNorm's ``num_batches_tracked``):
        mark it personal. Or nothing left to share.
    """
    patterns = tuple(personal)
    specs: list[TensorSpec] = []
    offset = 0
    for name, value in tensors.items():
        if _is_personal(name, patterns):
            continue
        arr = tensor_to_numpy(value)
        if arr.dtype.name not in _FLOAT_DTYPES:
            raise LayoutError(
                f"tensor {name!r} has dtype {arr.dtype.name}; only floating tensors can be "
                "shared: list it among the personal patterns to keep it local"
            )
        spec = TensorSpec(name=name, shape=tuple(arr.shape), dtype=arr.dtype.name, offset=offset)
        specs.append(spec)
        offset += spec.numel
    if not specs:
        raise LayoutError("every tensor is personal: nothing left to share")
    return ModelLayout(
        tensors=tuple(specs), block_size=block_size, personal=patterns, canaries=canaries
    )
