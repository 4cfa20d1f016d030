"""Local state to and from bytes: JSON for the credential, ``.npz`` never pickled for arrays."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fl_client.errors import LocalStateError
from fl_client.state._records import (
    Array,
    Credential,
    EnvelopeFile,
    ModelCache,
    PendingUpdate,
    PrivacyLedger,
    Progress,
)

__all__ = [
    "credential_from_bytes",
    "credential_to_bytes",
    "model_cache_from_bytes",
    "model_cache_to_bytes",
    "pending_from_bytes",
    "pending_to_bytes",
    "privacy_ledger_from_bytes",
    "privacy_ledger_to_bytes",
    "progress_from_bytes",
    "progress_to_bytes",
]


def _pack(meta: Mapping[str, Any], arrays: Mapping[str, Array]) -> bytes:
    buf = io.BytesIO()
    payload = {f"a{i}": np.asarray(a) for i, a in enumerate(arrays.values())}
    names = list(arrays)
    meta_bytes = json.dumps({"meta": dict(meta), "names": names}, sort_keys=True).encode()
    payload["__meta__"] = np.frombuffer(meta_bytes, dtype=np.uint8)
    np.savez(buf, allow_pickle=False, **payload)
    return buf.getvalue()


def _unpack(data: bytes, what: str) -> tuple[dict[str, Any], dict[str, Array]]:
    try:
        # never allow_pickle: a pickled object array executes code when loaded
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            head = json.loads(bytes(npz["__meta__"]).decode())
            arrays = {name: npz[f"a{i}"] for i, name in enumerate(head["names"])}
        return dict(head["meta"]), arrays
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise LocalStateError(f"{what} is corrupt: {exc}") from exc


def credential_to_bytes(credential: Credential) -> bytes:
    data = {
        "keyauth_url": credential.keyauth_url,
        "client_id": credential.client_id,
        "client_name": credential.client_name,
        "client_secret": credential.client_secret,
        "key_epoch": credential.key_epoch,
        "profile": credential.profile,
    }
    return json.dumps(data, indent=2).encode()


def credential_from_bytes(raw: bytes, what: str) -> Credential:
    """The credential in ``raw``; ``LocalStateError`` naming ``what`` if it is corrupt."""
    try:
        data = json.loads(raw)
        return Credential(
            keyauth_url=str(data["keyauth_url"]),
            client_id=str(data["client_id"]),
            client_name=str(data["client_name"]),
            client_secret=str(data["client_secret"]),
            key_epoch=int(data["key_epoch"]),
            profile=str(data["profile"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise LocalStateError(f"{what} is corrupt: {exc!r}") from None


def privacy_ledger_to_bytes(ledger: PrivacyLedger) -> bytes:
    data = {
        "accountant": ledger.accountant,
        "history": [list(entry) for entry in ledger.history],
        "rounds": ledger.rounds,
    }
    return json.dumps(data, indent=2, allow_nan=False).encode()


def privacy_ledger_from_bytes(raw: bytes, what: str) -> PrivacyLedger:
    """The ledger in ``raw``; ``LocalStateError`` naming ``what`` if it is corrupt.

    A corrupt ledger is an error, never a fresh start: forgetting spent steps would
    hand a hospital its privacy budget again.
    """
    try:
        data = json.loads(raw)
        history = tuple(
            (float(sigma), float(rate), int(steps)) for sigma, rate, steps in data["history"]
        )
        ledger = PrivacyLedger(
            accountant=str(data["accountant"]), history=history, rounds=int(data["rounds"])
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise LocalStateError(f"{what} is corrupt: {exc!r}") from None
    if ledger.rounds < 0 or any(
        not (sigma > 0 and 0 < rate <= 1 and steps >= 0) for sigma, rate, steps in history
    ):
        raise LocalStateError(f"{what} is corrupt: a value out of range")
    return ledger


def model_cache_to_bytes(cache: ModelCache) -> bytes:
    meta = {
        "version": cache.version,
        "key_epoch": cache.key_epoch,
        "fingerprint": cache.fingerprint.hex(),
        "etag": cache.etag,
    }
    return _pack(meta, {"blocks": cache.blocks})


def model_cache_from_bytes(raw: bytes) -> ModelCache:
    meta, arrays = _unpack(raw, "the model cache")
    return ModelCache(
        version=int(meta["version"]),
        key_epoch=int(meta["key_epoch"]),
        fingerprint=bytes.fromhex(meta["fingerprint"]),
        blocks=np.asarray(arrays["blocks"], dtype=np.float64),
        etag=meta["etag"],
    )


def _progress_parts(progress: Progress, prefix: str) -> tuple[dict[str, Any], dict[str, Array]]:
    meta = {
        "rounds": progress.rounds,
        "fingerprint": progress.fingerprint.hex() if progress.fingerprint else None,
        "last_update_id": str(progress.last_update_id) if progress.last_update_id else None,
        "personal": list(progress.personal),
        "has_residual": progress.residual is not None,
    }
    arrays: dict[str, Array] = {}
    if progress.residual is not None:
        arrays[f"{prefix}residual"] = progress.residual
    for i, value in enumerate(progress.personal.values()):
        arrays[f"{prefix}personal{i}"] = value
    return meta, arrays


def _progress_from_parts(
    meta: Mapping[str, Any], arrays: Mapping[str, Array], prefix: str
) -> Progress:
    names = [str(n) for n in meta["personal"]]
    return Progress(
        rounds=int(meta["rounds"]),
        fingerprint=bytes.fromhex(meta["fingerprint"]) if meta["fingerprint"] else None,
        residual=np.asarray(arrays[f"{prefix}residual"], dtype=np.float64)
        if meta["has_residual"]
        else None,
        personal={n: arrays[f"{prefix}personal{i}"] for i, n in enumerate(names)},
        last_update_id=uuid.UUID(meta["last_update_id"]) if meta["last_update_id"] else None,
    )


def progress_to_bytes(progress: Progress) -> bytes:
    meta, arrays = _progress_parts(progress, "")
    return _pack(meta, arrays)


def progress_from_bytes(raw: bytes) -> Progress:
    meta, arrays = _unpack(raw, "the progress file")
    try:
        return _progress_from_parts(meta, arrays, "")
    except (KeyError, ValueError, TypeError) as exc:
        raise LocalStateError(f"the progress file is corrupt: {exc!r}") from exc


def pending_to_bytes(pending: PendingUpdate) -> bytes:
    meta, arrays = _progress_parts(pending.progress, "progress.")
    head = {
        "update_id": str(pending.update_id),
        "base_version": pending.base_version,
        "key_epoch": pending.key_epoch,
        "summary": dict(pending.summary),
        "progress": meta,
    }
    if isinstance(pending.envelope, EnvelopeFile):
        head["envelope_file"] = pending.envelope.path.name
    else:
        arrays["envelope"] = np.frombuffer(pending.envelope, dtype=np.uint8)
    return _pack(head, arrays)


def pending_from_bytes(raw: bytes, directory: Path | None = None) -> PendingUpdate:
    """The pending update; an envelope kept in its own file is looked for in ``directory``."""
    head, arrays = _unpack(raw, "the pending update")
    try:
        name = head.get("envelope_file")
        envelope: bytes | EnvelopeFile
        if name is None:
            envelope = bytes(arrays["envelope"])
        elif directory is None or Path(name).name != name:
            raise ValueError(f"envelope file {name!r} outside the job's directory")
        else:
            envelope = EnvelopeFile(directory / name)
        return PendingUpdate(
            update_id=uuid.UUID(head["update_id"]),
            base_version=int(head["base_version"]),
            key_epoch=int(head["key_epoch"]),
            envelope=envelope,
            progress=_progress_from_parts(head["progress"], arrays, "progress."),
            summary=dict(head["summary"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise LocalStateError(f"the pending update is corrupt: {exc!r}") from exc
