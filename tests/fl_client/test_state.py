"""Local state: permissions, atomic journal, no pickle."""

from __future__ import annotations

import io
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import hefl_durable
from fl_client import ConfigError, LocalStateError, NotEnrolledError
from fl_client.state import (
    Credential,
    EnvelopeFile,
    LocalState,
    ModelCache,
    PendingUpdate,
    Progress,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _credential() -> Credential:
    return Credential("http://127.0.0.1:8700", "c1", "hospital-a", "s3cret", 1, "test-n2048")


def test_directory_is_0700_and_every_file_0600(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir(mode=0o755)
    state = LocalState(root)
    state.save_credential(_credential())
    state.save_secret_context(1, "test-n2048", b"context")
    state.job("icu").commit_progress(Progress(rounds=2))

    assert _mode(root) == 0o700
    for path in root.rglob("*"):
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert (root / "jobs" / "icu" / "progress.npz").is_file()
    assert state.load_credential() == _credential()
    assert state.load_secret_context(1) == ("test-n2048", b"context")
    assert state.load_secret_context(2) is None
    assert "s3cret" not in repr(state.load_credential())


def test_a_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "state")
    state.save_credential(_credential())
    os.chmod(tmp_path / "state" / "credential.json", 0o644)

    with pytest.raises(LocalStateError, match="chmod 600"):
        state.load_credential()


def test_missing_credential_says_how_to_enroll(tmp_path: Path) -> None:
    with pytest.raises(NotEnrolledError, match="hefl-client enroll"):
        LocalState(tmp_path / "s").load_credential()


def test_pending_update_round_trips_and_acknowledging_commits_its_progress(
    tmp_path: Path,
) -> None:
    state = LocalState(tmp_path / "s").job("icu")
    update_id = uuid.uuid4()
    residual = np.arange(8.0).reshape(2, 4)
    personal: dict[str, npt.NDArray[Any]] = {
        "head.weight": np.ones((2, 3), dtype=np.float32),
        "head.bias": np.zeros(2),
    }
    pending = PendingUpdate(
        update_id=update_id,
        base_version=7,
        key_epoch=1,
        envelope=b"HEFL" + bytes(100),
        progress=Progress(rounds=3, fingerprint=b"f" * 32, residual=residual, personal=personal),
        summary={"wire": {"envelope_bytes": 104}},
    )
    state.write_pending(pending)

    loaded = state.load_pending()
    assert loaded is not None
    assert loaded.update_id == update_id
    assert loaded.envelope == pending.envelope
    assert loaded.base_version == 7
    assert loaded.summary == {"wire": {"envelope_bytes": 104}}
    assert loaded.progress.residual is not None
    assert np.array_equal(loaded.progress.residual, residual)
    assert set(loaded.progress.personal) == {"head.weight", "head.bias"}
    assert loaded.progress.personal["head.weight"].dtype == np.float32

    progress = state.acknowledge_pending(loaded)
    assert state.load_pending() is None
    assert progress.last_update_id == update_id
    again = state.load_progress()
    assert again.rounds == 3
    assert again.fingerprint == b"f" * 32
    assert again.residual is not None
    assert np.array_equal(again.residual, residual)
    assert again.last_update_id == update_id


def test_model_cache_round_trips(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "s").job("icu")
    cache = ModelCache(5, 1, b"x" * 32, np.random.default_rng(0).normal(size=(3, 4)), '"v5"')
    state.save_model_cache(cache)
    loaded = state.load_model_cache()
    assert loaded is not None
    assert np.array_equal(loaded.blocks, cache.blocks)
    assert (loaded.version, loaded.key_epoch, loaded.fingerprint, loaded.etag) == (
        5,
        1,
        b"x" * 32,
        '"v5"',
    )


def test_a_torn_model_cache_counts_as_none(tmp_path: Path) -> None:
    # Prepare: a cache cut short, as a power cut may leave it (it is not fsync'd)
    state = LocalState(tmp_path / "s").job("icu")
    cache = ModelCache(5, 1, b"x" * 32, np.zeros((3, 4)), None)
    state.save_model_cache(cache)
    path = state.root / "model-cache.npz"
    whole = path.read_bytes()

    for torn in (whole[: len(whole) // 2], whole[:-10], b""):
        path.write_bytes(torn)

        # Execute / Assert: no cache, so the next pull takes the whole model
        assert state.load_model_cache() is None


def test_the_committed_progress_is_on_disk_and_only_it_is_fsync_d(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    state = LocalState(tmp_path / "s").job("icu")
    pending = PendingUpdate(uuid.uuid4(), 1, 1, b"HEFL", Progress(rounds=1))
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    # Execute: a round's writes
    state.save_model_cache(ModelCache(1, 1, b"x" * 32, np.zeros((1, 4)), None))
    cache_syncs = len(synced)
    state.write_pending(pending)
    state.acknowledge_pending(pending)
    state.close()

    # Assert: the cache costs no fsync; the journal and the progress are durable
    assert cache_syncs == 0
    assert len(synced) == 4  # journal: file, directory; progress: file, directory
    fresh = LocalState(tmp_path / "s").job("icu")
    assert fresh.load_progress().last_update_id == pending.update_id
    assert fresh.load_pending() is None


def test_a_failed_commit_keeps_the_journal_and_fails_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the acknowledged progress cannot be written (disk full)
    state = LocalState(tmp_path / "s").job("icu")
    first = PendingUpdate(uuid.uuid4(), 1, 1, b"HEFL", Progress(rounds=1))
    state.write_pending(first)

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)

    # Execute: the commit fails on the writer thread
    state.acknowledge_pending(first)
    second = PendingUpdate(uuid.uuid4(), 2, 1, b"HEFL", Progress(rounds=2))

    # Assert: the next journal entry is refused for that failure, and the first entry
    # stays for a resend
    with pytest.raises(LocalStateError, match=r"could not write .*progress\.npz"):
        state.write_pending(second)
    monkeypatch.undo()
    fresh = LocalState(tmp_path / "s").job("icu")
    assert fresh.load_progress().rounds == 0
    journaled = fresh.load_pending()
    assert journaled is not None
    assert journaled.update_id == first.update_id


def test_pickled_content_in_a_state_file_is_never_unpickled(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "s").job("icu")
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    path = state.root / "progress.npz"
    path.write_bytes(buf.getvalue())
    path.chmod(0o600)

    with pytest.raises(LocalStateError, match="corrupt"):
        state.load_progress()


def test_writes_are_atomic_no_temporary_file_is_left(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "s").job("icu")
    for i in range(3):
        state.commit_progress(Progress(rounds=i))
    assert sorted(p.name for p in state.root.iterdir()) == ["progress.npz"]
    assert state.load_progress().rounds == 2


def test_the_package_exports_every_name_it_did_as_a_module() -> None:
    import fl_client.state

    assert fl_client.state.__all__ == [
        "Credential",
        "EnvelopeFile",
        "JobState",
        "LocalState",
        "ModelCache",
        "PendingUpdate",
        "PrivacyLedger",
        "Progress",
    ]
    for name in fl_client.state.__all__:
        assert hasattr(fl_client.state, name), name


def test_a_state_directory_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "state").mkdir(mode=0o700)
    monkeypatch.setattr(os, "geteuid", lambda: tmp_path.stat().st_uid + 1)

    with pytest.raises(LocalStateError, match=r"state directory .* belongs to another user"):
        LocalState(tmp_path / "state")


def test_a_state_directory_others_can_write_in_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state").chmod(0o777)

    with pytest.raises(LocalStateError, match=r"writable by other users .*chmod 700"):
        LocalState(tmp_path / "state")

    assert _mode(tmp_path / "state") == 0o777


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    state = LocalState(tmp_path / "s").job("icu")
    state.commit_progress(Progress(rounds=1))

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)

    # Execute
    with pytest.raises(LocalStateError, match=r"could not write .*progress\.npz"):
        state.commit_progress(Progress(rounds=2))
    monkeypatch.undo()

    # Assert
    assert sorted(p.name for p in state.root.iterdir()) == ["progress.npz"]
    assert state.load_progress().rounds == 1


@pytest.mark.parametrize("name", ["../escape", "", "UPPER", "a/b", "-x", "."])
def test_a_job_name_that_could_leave_jobs_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="not a job name"):
        LocalState(tmp_path / "s").job(name)

    assert not (tmp_path / "s" / "jobs").exists() or not any((tmp_path / "s" / "jobs").iterdir())


def test_each_job_keeps_its_own_progress_journal_and_cache(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "s")

    state.job("icu").commit_progress(Progress(rounds=4))
    state.job("heart").commit_progress(Progress(rounds=1))

    assert state.job("icu").load_progress().rounds == 4
    assert state.job("heart").load_progress().rounds == 1
    assert state.job("other").load_model_cache() is None


def test_a_secret_context_is_kept_with_its_key_id(tmp_path: Path) -> None:
    # Prepare
    import hashlib
    import json

    state = LocalState(tmp_path / "state")

    # Execute
    state.save_secret_context(1, "test-n2048", b"context")

    # Assert
    meta = json.loads((tmp_path / "state" / "secret-context-1.json").read_text())
    assert meta == {"profile": "test-n2048", "key_id": hashlib.sha256(b"context").hexdigest()}


def test_a_secret_context_half_replaced_by_a_crash_counts_as_not_stored(tmp_path: Path) -> None:
    # Prepare: the new bytes were written, the crash came before their key id
    state = LocalState(tmp_path / "state")
    state.save_secret_context(1, "test-n2048", b"old context")
    hefl_durable.write_atomic(tmp_path / "state" / "secret-context-1.bin", b"new context")

    # Execute
    loaded = state.load_secret_context(1)

    # Assert: fetched again by the next round
    assert loaded is None


def _update_head(update_id: uuid.UUID) -> bytes:
    import crypto

    return crypto.update_head_to_bytes(b"f" * 32, 7, 1, update_id, 1)


def test_a_pending_envelope_written_piece_by_piece_lives_in_its_own_file(tmp_path: Path) -> None:
    # Prepare: an envelope written in pieces, as it is encrypted
    state = LocalState(tmp_path / "s").job("icu")
    update_id = uuid.uuid4()
    pieces = [_update_head(update_id), b"\1" * 5000, b"\2" * 5000]

    def write(sink: hefl_durable.Writer) -> int:
        return sum(sink.write(p) for p in pieces)

    # Execute
    written, envelope = state.write_pending_envelope(write)
    state.write_pending(PendingUpdate(update_id, 7, 1, envelope, Progress(rounds=1)))
    loaded = state.load_pending()

    # Assert: the journal names the file, which is sent in pieces and dropped with the entry
    assert loaded is not None
    assert isinstance(loaded.envelope, EnvelopeFile)
    assert written == len(loaded.envelope) == 10000 + len(pieces[0])
    assert b"".join(loaded.envelope) == b"".join(pieces)
    assert b"".join(loaded.envelope) == b"".join(loaded.envelope)  # read again for a retry
    assert _mode(loaded.envelope.path) == 0o600
    state.acknowledge_pending(loaded)
    assert state.load_pending() is None
    state.close()  # the commit, and the file's removal, run on the writer thread
    assert not loaded.envelope.path.exists()


def test_an_envelope_file_without_its_journal_entry_is_no_pending_update(tmp_path: Path) -> None:
    # a crash after the envelope was written, before the journal named it
    state = LocalState(tmp_path / "s").job("icu")
    state.write_pending_envelope(lambda sink: sink.write(_update_head(uuid.uuid4())))

    assert state.load_pending() is None


def test_a_journal_entry_naming_another_updates_envelope_is_refused(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "s").job("icu")
    _, envelope = state.write_pending_envelope(lambda sink: sink.write(_update_head(uuid.uuid4())))
    state.write_pending(PendingUpdate(uuid.uuid4(), 7, 1, envelope, Progress(rounds=1)))

    # read back at the next start (a running state keeps the entry it wrote)
    restarted = LocalState(tmp_path / "s").job("icu")
    with pytest.raises(LocalStateError, match="is not the envelope of pending update"):
        restarted.load_pending()


def test_a_committed_entry_that_a_power_cut_brings_back_needs_no_envelope(tmp_path: Path) -> None:
    # Prepare: an acknowledged update; a power cut loses the entry's removal (not fsync'd)
    # but not its envelope file's
    state = LocalState(tmp_path / "s").job("icu")
    update_id = uuid.uuid4()
    _, envelope = state.write_pending_envelope(lambda sink: sink.write(_update_head(update_id)))
    pending = PendingUpdate(update_id, 7, 1, envelope, Progress(rounds=1))
    state.write_pending(pending)
    entry = (state.root / "pending-update.npz").read_bytes()
    state.acknowledge_pending(pending)
    state.close()
    hefl_durable.write_atomic(state.root / "pending-update.npz", entry)

    # Execute: the next start reads the journal
    restarted = LocalState(tmp_path / "s").job("icu")
    loaded = restarted.load_pending()

    # Assert: read without error, and it names the committed update (dropped unsent)
    assert loaded is not None
    assert loaded.update_id == restarted.load_progress().last_update_id == update_id
