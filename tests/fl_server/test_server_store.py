import ast
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fl_server.errors import StateError
from fl_server.store import (
    Checkpoint,
    ControlRecord,
    FileStore,
    JobRecord,
    MemoryStore,
    Store,
    UpdateRecord,
)


def record(seq: int, size: int = 300) -> UpdateRecord:
    envelope = os.urandom(size)
    return UpdateRecord(
        seq=seq,
        update_id=uuid.uuid4(),
        client_id="client-a",
        base_version=seq - 1,
        staleness=1,
        weight=0.5,
        version=seq,
        flush=True,
        received_at=1.5,
        digest=hashlib.sha256(envelope).digest(),
        envelope=envelope,
    )


def checkpoint(version: int, seq: int) -> Checkpoint:
    return Checkpoint(
        version=version, seq=seq, blocks=(b"block-0", b"block-1!"), state={"anything": [1, 2]}
    )


SPEC = '{"name":"job1"}'
JOB = JobRecord(
    "a1b2", "job1", SPEC, hashlib.sha256(SPEC.encode()).hexdigest(), 1, "test-n2048", 2.0
)
LAYOUT = b'{"format":1}'


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: Store = MemoryStore() if request.param == "memory" else FileStore(tmp_path / "s")
    yield opened
    opened.close()


def test_both_stores_keep_the_job_checkpoint_log_and_metrics(store: Store) -> None:
    assert store.load_job() is None
    assert store.load_layout() is None
    assert store.load_control() is None
    assert store.load_checkpoint() is None
    store.save_job(JOB)
    store.save_layout(LAYOUT)
    store.save_control(ControlRecord(paused=True, training_seconds=1.5))
    store.save_control(ControlRecord(stop_reason="stopped", training_seconds=2.5))
    store.write_checkpoint(checkpoint(0, 0))
    records = [record(1), record(2), record(3)]
    store.append_updates(records[:2])
    store.append_updates(records[2:])
    store.append_metrics({"version": 1, "metrics": {"loss": 0.5}})

    assert store.load_job() == JOB
    assert store.load_layout() == LAYOUT
    assert store.load_control() == ControlRecord(stop_reason="stopped", training_seconds=2.5)
    assert store.load_checkpoint() == checkpoint(0, 0)
    assert list(store.read_updates(0)) == records
    assert list(store.read_updates(2)) == records[2:]
    assert store.load_metrics() == [{"version": 1, "metrics": {"loss": 0.5}}]

    store.write_checkpoint(checkpoint(2, 2))
    assert list(store.read_updates(2)) == records[2:]


def test_file_store_survives_reopening(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.save_job(JOB)
    store.save_layout(LAYOUT)
    store.save_control(ControlRecord(paused=True, training_seconds=7.0))
    store.write_checkpoint(checkpoint(3, 3))
    later = [record(4), record(5)]
    store.append_updates(later)
    store.close()

    reopened = FileStore(tmp_path)
    assert reopened.load_job() == JOB
    assert reopened.load_layout() == LAYOUT
    assert reopened.load_control() == ControlRecord(paused=True, training_seconds=7.0)
    assert reopened.load_checkpoint() == checkpoint(3, 3)
    assert list(reopened.read_updates(3)) == later
    reopened.close()


def test_checkpoint_drops_the_log_it_covers(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.append_updates([record(1), record(2)])
    store.write_checkpoint(checkpoint(2, 2))
    assert list((tmp_path / "wal").iterdir()) == []
    store.append_updates([record(3)])
    store.close()

    reopened = FileStore(tmp_path)
    assert [r.seq for r in reopened.read_updates(2)] == [3]
    reopened.close()


def test_a_torn_last_record_is_cut_off_and_the_log_continues(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    first, second = record(1), record(2)
    store.append_updates([first, second])
    store.close()
    (segment,) = (tmp_path / "wal").iterdir()
    size = segment.stat().st_size
    with open(segment, "r+b") as f:
        f.truncate(size - 100)  # a crash inside the second append

    reopened = FileStore(tmp_path)
    assert list(reopened.read_updates(0)) == [first]
    assert segment.stat().st_size < size - 100
    again = record(2)
    reopened.append_updates([again])
    reopened.close()
    final = FileStore(tmp_path)
    assert list(final.read_updates(0)) == [first, again]
    final.close()


def test_a_damaged_record_before_good_ones_is_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.append_updates([record(1), record(2)])
    store.close()
    (segment,) = (tmp_path / "wal").iterdir()
    data = bytearray(segment.read_bytes())
    data[len(data) // 4] ^= 0xFF  # inside the first record's payload
    segment.write_bytes(bytes(data))

    reopened = FileStore(tmp_path)
    with pytest.raises(StateError, match="refusing to drop acknowledged updates"):
        list(reopened.read_updates(0))
    reopened.close()


def test_a_job_file_whose_spec_does_not_match_its_hash_is_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.save_job(JOB)
    store.close()
    path = tmp_path / "job.json"
    raw = json.loads(path.read_bytes())
    raw["spec"] = raw["spec"].replace("job1", "job2")
    path.write_text(json.dumps(raw))

    with pytest.raises(StateError, match="does not match its SHA-256"):
        FileStore(tmp_path).load_job()


def test_a_damaged_control_record_is_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    (tmp_path / "control.json").write_bytes(b'{"format": 1, "paused": "yes"}')

    with pytest.raises(StateError, match=r"control\.json is unreadable"):
        store.load_control()
    store.close()


def test_a_damaged_checkpoint_is_refused(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.write_checkpoint(checkpoint(1, 1))
    path = tmp_path / "checkpoint.bin"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(StateError, match="SHA-256"):
        store.load_checkpoint()
    store.close()


def test_one_server_per_state_directory(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    with pytest.raises(StateError, match="in use by another"):
        FileStore(tmp_path)
    store.close()
    FileStore(tmp_path).close()


def test_state_directory_and_files_are_private(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state")
    store.save_job(JOB)
    store.save_layout(LAYOUT)
    store.save_control(ControlRecord())
    store.write_checkpoint(checkpoint(0, 0))
    store.append_updates([record(1)])
    store.append_metrics({"loss": 1.0})
    store.close()
    paths = [tmp_path / "state", *(tmp_path / "state").rglob("*")]
    assert len(paths) == 9
    for path in paths:
        assert path.stat().st_mode & 0o077 == 0, path


def test_metrics_file_cuts_a_torn_line_and_compacts(tmp_path: Path) -> None:
    store = FileStore(tmp_path, max_metrics_reports=3)
    store.append_metrics({"n": 0})
    with open(tmp_path / "metrics.jsonl", "ab") as f:
        f.write(b'{"n": 1')  # a crash mid-write
    store.close()

    store = FileStore(tmp_path, max_metrics_reports=3)
    assert store.load_metrics() == [{"n": 0}]
    for n in range(1, 9):
        store.append_metrics({"n": n})
    assert store.load_metrics() == [{"n": 6}, {"n": 7}, {"n": 8}]
    lines = (tmp_path / "metrics.jsonl").read_bytes().splitlines()
    assert len(lines) <= 6
    store.close()


def test_the_package_exports_every_name_it_did_as_a_module() -> None:
    import fl_server.store

    assert fl_server.store.__all__ == [
        "Checkpoint",
        "ControlRecord",
        "DirectoryLock",
        "FileBlocks",
        "FileStore",
        "JobRecord",
        "LogRecord",
        "MemoryStore",
        "ReleaseRecord",
        "RemovedUpdate",
        "RepairRecord",
        "RotationEntry",
        "Store",
        "UpdateRecord",
        "read_job_file",
    ]
    for name in fl_server.store.__all__:
        assert hasattr(fl_server.store, name), name


def test_no_store_module_imports_a_web_framework() -> None:
    import fl_server.store

    imported: set[str] = set()
    for path in Path(fl_server.store.__file__ or "").parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
    assert not imported & {"fastapi", "starlette", "httpx", "uvicorn", "tenseal"}


@pytest.mark.parametrize("mode", [0o770, 0o777])
def test_a_state_directory_others_can_write_in_is_refused(tmp_path: Path, mode: int) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state").chmod(mode)

    with pytest.raises(StateError, match="writable by other users"):
        FileStore(tmp_path / "state")

    assert list((tmp_path / "state").iterdir()) == []


def test_a_state_directory_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "state").mkdir(mode=0o700)
    monkeypatch.setattr(os, "geteuid", lambda: tmp_path.stat().st_uid + 1)

    with pytest.raises(StateError, match="belongs to another user"):
        FileStore(tmp_path / "state")


def test_new_log_segments_and_the_metrics_file_are_synced_into_their_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: note which inodes get fsync'd.
    store = FileStore(tmp_path / "state")
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    # Execute
    store.append_updates([record(1)])
    after_append = list(synced)
    store.append_metrics({"loss": 1.0})
    store.close()

    # Assert: the new entries, then their content.
    (segment,) = (tmp_path / "state" / "wal").iterdir()
    wal_dir, state_dir = (tmp_path / "state" / "wal").stat(), (tmp_path / "state").stat()
    assert after_append == [wal_dir.st_ino, segment.stat().st_ino]
    metrics = (tmp_path / "state" / "metrics.jsonl").stat()
    assert synced[len(after_append) :] == [state_dir.st_ino, metrics.st_ino]


def test_a_loaded_checkpoint_reads_its_blocks_from_its_file_even_once_replaced(
    tmp_path: Path,
) -> None:
    # Prepare: a checkpoint on disk, loaded
    store = FileStore(tmp_path)
    store.save_job(JOB)
    store.write_checkpoint(checkpoint(3, 3))
    loaded = store.load_checkpoint()
    assert loaded is not None

    # Execute: a newer checkpoint replaces the file (atomically)
    store.write_checkpoint(
        Checkpoint(version=4, seq=4, blocks=(b"new-0", b"new-1"), state={"anything": []})
    )

    # Assert: the loaded one still reads the blocks it had, one at a time, sizes known
    assert not isinstance(loaded.blocks, tuple)
    assert [loaded.blocks.size(i) for i in range(2)] == [7, 8]  # type: ignore[attr-defined]
    assert list(loaded.blocks) == [b"block-0", b"block-1!"]
    newest = store.load_checkpoint()
    assert newest is not None
    assert list(newest.blocks) == [b"new-0", b"new-1"]
    store.close()
