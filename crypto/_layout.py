"""Model layout: named tensors flattened into fixed-size blocks of ciphertext slots, and back."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from crypto._errors import LayoutError

__all__ = ["ModelLayout", "TensorSpec", "build_layout", "tensor_to_numpy"]

_FLOAT_DTYPES = ("float16", "float32", "float64")
_LAYOUT_FORMAT = 1


@dataclass(frozen=True)
class TensorSpec:
    """One tensor's place in the flat parameter vector."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def tensor_to_numpy(value: Any) -> npt.NDArray[Any]:
    """A numpy array from a numpy array or a torch tensor (duck-typed: torch is not imported)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            raise LayoutError("bfloat16 tensors are not supported; convert the model to float32")
        value = value.numpy()
    return np.asarray(value)


def _is_personal(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True)
class ModelLayout:
    """Where every shared tensor lives in a sequence of blocks of ``block_size`` values.

    Tensors are laid end to end in order; the last block is zero-padded. Tensors whose
    names match a ``personal`` pattern (``fnmatch`` globs) stay on the client and are
    left out. The layout is plain data with a stable ``fingerprint``.
    """

    tensors: tuple[TensorSpec, ...]
    block_size: int
    personal: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.block_size <= 0:
            raise LayoutError("block_size must be positive")
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
    def n_blocks(self) -> int:
        return -(-self.total_params // self.block_size)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.tensors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _LAYOUT_FORMAT,
            "block_size": self.block_size,
            "personal": list(self.personal),
            "tensors": [
                {"name": s.name, "shape": list(s.shape), "dtype": s.dtype, "offset": s.offset}
                for s in self.tensors
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelLayout:
        try:
            if data["format"] != _LAYOUT_FORMAT:
                raise LayoutError(f"unsupported layout format {data['format']!r}")
            tensors = tuple(
                TensorSpec(
                    name=str(t["name"]),
                    shape=tuple(int(d) for d in t["shape"]),
                    dtype=str(t["dtype"]),
                    offset=int(t["offset"]),
                )
                for t in data["tensors"]
            )
            return cls(
                tensors=tensors,
                block_size=int(data["block_size"]),
                personal=tuple(str(p) for p in data["personal"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LayoutError(f"malformed layout: {exc!r}") from exc

    def to_json(self) -> bytes:
        """Canonical JSON: the bytes the fingerprint is computed over."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ModelLayout:
        try:
            parsed = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise LayoutError(f"layout is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise LayoutError("layout JSON must be an object")
        return cls.from_dict(parsed)

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the canonical JSON: equal fingerprints mean identical layouts."""
        return hashlib.sha256(self.to_json()).digest()

    def flatten(self, tensors: Mapping[str, Any]) -> npt.NDArray[np.float64]:
        """Pack the shared tensors into an ``(n_blocks, block_size)`` float64 array.

        Personal tensors in ``tensors`` are ignored; a missing, unknown or misshapen
        tensor is a ``LayoutError``. Exact: every supported dtype fits in float64.
        """
        known = set(self.names)
        unknown = [n for n in tensors if n not in known and not _is_personal(n, self.personal)]
        if unknown:
            raise LayoutError(f"tensors not in the layout: {unknown[:5]}")
        flat = np.zeros(self.n_blocks * self.block_size, dtype=np.float64)
        for spec in self.tensors:
            if spec.name not in tensors:
                raise LayoutError(f"tensor {spec.name!r} is missing")
            arr = tensor_to_numpy(tensors[spec.name])
            if tuple(arr.shape) != spec.shape:
                raise LayoutError(
                    f"tensor {spec.name!r} has shape {tuple(arr.shape)}, layout says {spec.shape}"
                )
            flat[spec.offset : spec.offset + spec.numel] = arr.reshape(-1)
        return flat.reshape(self.n_blocks, self.block_size)

    def unflatten(self, blocks: npt.ArrayLike) -> dict[str, npt.NDArray[Any]]:
        """The inverse of ``flatten``: tensors with their layout shape and dtype."""
        arr = np.asarray(blocks, dtype=np.float64)
        if arr.size != self.n_blocks * self.block_size:
            raise LayoutError(f"expected {self.n_blocks}x{self.block_size} values, got {arr.size}")
        flat = arr.reshape(-1)
        return {
            spec.name: flat[spec.offset : spec.offset + spec.numel]
            .astype(spec.dtype)
            .reshape(spec.shape)
            for spec in self.tensors
        }


def build_layout(
    tensors: Mapping[str, Any], block_size: int, personal: Sequence[str] = ()
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
    return ModelLayout(tensors=tuple(specs), block_size=block_size, personal=patterns)
