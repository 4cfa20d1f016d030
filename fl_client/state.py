"""The client's local directory: credential, secret contexts, model cache, update journal.

Every file is written atomically (temporary file, fsync, rename, fsync of the directory)
with mode 0600 in a directory of mode 0700. Arrays are stored with ``numpy.savez`` and
read back with ``allow_pickle=False``: nothing here can execute code when loaded.
"""

from __future__ import annotations

import io
import json
import os
import stat
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fl_client.errors import LocalStateError, NotEnrolledError

__all__ = ["Credential", "LocalState", "ModelCache", "PendingUpdate", "Progress"]

Array = npt.NDArray[Any]

_CREDENTIAL = "credential.json"
_MODEL_CACHE = "model-cache.npz"
_PROGRESS = "progress.npz"
_PENDING = "pending-update.npz"


@dataclass(frozen=True)
class Credential:
    """What enrollment gave this client; ``client_secret`` is never printed."""

    keyauth_url: str
    client_id: str
    client_name: str
    client_secret: str = field(repr=False)
    key_epoch: int
    profile: str


@dataclass(frozen=True)
class ModelCache:
    """The last pulled global model, decrypted: lets the next pull ask only for changes."""

    version: int
    key_epoch: int
    fingerprint: bytes
    blocks: npt.NDArray[np.float64]
    etag: str | None = None


@dataclass(frozen=True)
class Progress:
    """What this client has committed: rounds acknowledged, error-feedback residual,
    the local values of its personal tensors, and the last acknowledged update id."""

    rounds: int = 0
    fingerprint: bytes | None = None
    residual: npt.NDArray[np.float64] | None = None
    personal: Mapping[str, Array] = field(default_factory=dict)
    last_update_id: uuid.UUID | None = None


@dataclass(frozen=True)
class PendingUpdate:
    """An update written down before it is sent, and the progress it commits once acked.

    ``summary`` is plain JSON data about the round (wire bytes, training loss, ...).
    """

    update_id: uuid.UUID
    base_version: int
    key_epoch: int
    envelope: bytes = field(repr=False)
    progress: Progress
    summary: Mapping[str, Any] = field(default_factory=dict)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LocalStateError(f"{what} is corrupt: {exc}") from exc


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


class LocalState:
    """The state directory of one client.

    Parameters
    ----------
    root
        The directory; created with mode 0700 if missing, tightened to 0700 if looser.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = self.root.stat()
            if info.st_uid != os.getuid():
                raise LocalStateError(f"state directory {self.root} belongs to another user")
            if stat.S_IMODE(info.st_mode) & 0o077:
                self.root.chmod(0o700)
        except OSError as exc:
            raise LocalStateError(f"state directory {self.root} is unusable: {exc}") from exc

    # -- low level -------------------------------------------------------------------

    def _write(self, name: str, data: bytes) -> None:
        path = self.root / name
        tmp = self.root / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                self._write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(self.root)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise LocalStateError(f"could not write {path}: {exc}") from exc

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def _read(self, name: str) -> bytes | None:
        path = self.root / name
        try:
            info = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LocalStateError(f"could not read {path}: {exc}") from exc
        if stat.S_IMODE(info.st_mode) & 0o077:
            # like ssh: a secret others can read is already compromised; do not use it silently
            raise LocalStateError(
                f"{path} is accessible to other users (mode {stat.S_IMODE(info.st_mode):o}); "
                "run: chmod 600 " + str(path)
            )
        try:
            return path.read_bytes()
        except OSError as exc:
            raise LocalStateError(f"could not read {path}: {exc}") from exc

    def _delete(self, name: str) -> None:
        try:
            (self.root / name).unlink(missing_ok=True)
            _fsync_dir(self.root)
        except OSError as exc:
            raise LocalStateError(f"could not delete {self.root / name}: {exc}") from exc

    # -- credential and keys -----------------------------------------------------------

    def save_credential(self, credential: Credential) -> None:
        data = {
            "keyauth_url": credential.keyauth_url,
            "client_id": credential.client_id,
            "client_name": credential.client_name,
            "client_secret": credential.client_secret,
            "key_epoch": credential.key_epoch,
            "profile": credential.profile,
        }
        self._write(_CREDENTIAL, json.dumps(data, indent=2).encode())

    def load_credential(self) -> Credential:
        raw = self._read(_CREDENTIAL)
        if raw is None:
            raise NotEnrolledError(
                f"no credential in {self.root}: run `hefl-client enroll --token ...` first"
            )
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
            raise LocalStateError(f"{self.root / _CREDENTIAL} is corrupt: {exc!r}") from None

    def save_secret_context(self, key_epoch: int, profile: str, data: bytes) -> None:
        self._write(f"secret-context-{key_epoch}.bin", data)
        self._write(f"secret-context-{key_epoch}.json", json.dumps({"profile": profile}).encode())

    def load_secret_context(self, key_epoch: int) -> tuple[str, bytes] | None:
        """``(profile name, context bytes)`` of a key epoch, or ``None`` if not stored."""
        data = self._read(f"secret-context-{key_epoch}.bin")
        meta = self._read(f"secret-context-{key_epoch}.json")
        if data is None or meta is None:
            return None
        try:
            profile = str(json.loads(meta)["profile"])
        except (ValueError, KeyError, TypeError) as exc:
            raise LocalStateError(f"secret context metadata of epoch {key_epoch}: {exc!r}") from exc
        return profile, data

    # -- model cache -------------------------------------------------------------------

    def save_model_cache(self, cache: ModelCache) -> None:
        meta = {
            "version": cache.version,
            "key_epoch": cache.key_epoch,
            "fingerprint": cache.fingerprint.hex(),
            "etag": cache.etag,
        }
        self._write(_MODEL_CACHE, _pack(meta, {"blocks": cache.blocks}))

    def load_model_cache(self) -> ModelCache | None:
        raw = self._read(_MODEL_CACHE)
        if raw is None:
            return None
        meta, arrays = _unpack(raw, "the model cache")
        return ModelCache(
            version=int(meta["version"]),
            key_epoch=int(meta["key_epoch"]),
            fingerprint=bytes.fromhex(meta["fingerprint"]),
            blocks=np.asarray(arrays["blocks"], dtype=np.float64),
            etag=meta["etag"],
        )

    # -- progress and the pending-update journal ----------------------------------------

    def load_progress(self) -> Progress:
        raw = self._read(_PROGRESS)
        if raw is None:
            return Progress()
        meta, arrays = _unpack(raw, "the progress file")
        try:
            return _progress_from_parts(meta, arrays, "")
        except (KeyError, ValueError, TypeError) as exc:
            raise LocalStateError(f"the progress file is corrupt: {exc!r}") from exc

    def commit_progress(self, progress: Progress) -> None:
        meta, arrays = _progress_parts(progress, "")
        self._write(_PROGRESS, _pack(meta, arrays))

    def write_pending(self, pending: PendingUpdate) -> None:
        """Journal an update before sending it, so a restart resends the same bytes and id."""
        meta, arrays = _progress_parts(pending.progress, "progress.")
        head = {
            "update_id": str(pending.update_id),
            "base_version": pending.base_version,
            "key_epoch": pending.key_epoch,
            "summary": dict(pending.summary),
            "progress": meta,
        }
        arrays["envelope"] = np.frombuffer(pending.envelope, dtype=np.uint8)
        self._write(_PENDING, _pack(head, arrays))

    def load_pending(self) -> PendingUpdate | None:
        raw = self._read(_PENDING)
        if raw is None:
            return None
        head, arrays = _unpack(raw, "the pending update")
        try:
            return PendingUpdate(
                update_id=uuid.UUID(head["update_id"]),
                base_version=int(head["base_version"]),
                key_epoch=int(head["key_epoch"]),
                envelope=bytes(arrays["envelope"]),
                progress=_progress_from_parts(head["progress"], arrays, "progress."),
                summary=dict(head["summary"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise LocalStateError(f"the pending update is corrupt: {exc!r}") from exc

    def clear_pending(self) -> None:
        self._delete(_PENDING)

    def acknowledge_pending(self, pending: PendingUpdate) -> Progress:
        """Commit the progress a pending update carries, then drop the journal entry.

        Crash-safe in this order: a crash in between leaves the entry, whose resend the
        server acknowledges as a duplicate, and committing it again changes nothing.
        """
        progress = replace(pending.progress, last_update_id=pending.update_id)
        self.commit_progress(progress)
        self.clear_pending()
        return progress
