"""Private directories: mode 0700, fsync'd into their parent, refused when unsafe."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hefl_durable import UnsafePathError, fsync_dir, make_private_dir
from tests.durable.conftest import CallLog


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077, 0o277])
def test_a_new_directory_is_0700_whatever_the_umask(
    tmp_path: Path, umask: Callable[[int], int], mask: int
) -> None:
    umask(mask)

    make_private_dir(tmp_path / "state")

    assert _mode(tmp_path / "state") == 0o700


def test_each_new_directory_is_fsynced_into_its_parent(
    tmp_path: Path, calls: CallLog, umask: Callable[[int], int]
) -> None:
    umask(0o022)

    make_private_dir(tmp_path / "a" / "b" / "state")

    assert calls.calls() == [
        ("mkdir", "a"),
        ("fsync", "."),
        ("mkdir", "a/b"),
        ("fsync", "a"),
        ("mkdir", "a/b/state"),
        ("fsync", "a/b"),
    ]
    # Only the directory asked for is private; its parents are made as ``mkdir -p`` would.
    assert _mode(tmp_path / "a" / "b" / "state") == 0o700
    assert _mode(tmp_path / "a") == 0o755


def test_an_existing_private_directory_is_left_as_it_is(
    tmp_path: Path, calls: CallLog, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "state").mkdir(mode=0o700)
    before = calls.calls()

    make_private_dir(tmp_path / "state")

    assert calls.calls() == before
    assert _mode(tmp_path / "state") == 0o700
    assert not caplog.records


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o705, 0o711])
def test_a_directory_others_can_read_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)

    with caplog.at_level(logging.WARNING, logger="hefl_durable"):
        make_private_dir(state)

    assert _mode(state) == 0o700
    assert f"tightening permissions of {state} from {mode:o} to 0700" in caplog.text


@pytest.mark.parametrize("mode", [0o720, 0o702, 0o770, 0o777, 0o1777])
def test_a_directory_others_can_write_in_is_refused(tmp_path: Path, mode: int) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)

    with pytest.raises(UnsafePathError, match=r"writable by other users.*chmod 700") as caught:
        make_private_dir(state)

    assert caught.value.path == state
    assert _mode(state) == mode  # left for the operator: what is inside may be planted


def test_a_directory_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    monkeypatch.setattr(os, "geteuid", lambda: state.stat().st_uid + 1)

    with pytest.raises(UnsafePathError, match="belongs to another user"):
        make_private_dir(state)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory away")
def test_a_directory_chowned_to_another_user_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 54321, -1)

    with pytest.raises(UnsafePathError, match="belongs to another user"):
        make_private_dir(state)


def test_a_file_where_the_directory_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").write_bytes(b"")

    with pytest.raises(UnsafePathError, match="is not a directory"):
        make_private_dir(tmp_path / "state")


def test_a_directory_made_meanwhile_by_another_process_is_checked_not_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: someone else creates the directory, loosely, just before our mkdir.
    real_mkdir = os.mkdir

    def racing_mkdir(path: Any, mode: int = 0o777, **kwargs: Any) -> None:
        real_mkdir(path, 0o755)
        os.chmod(path, 0o755)
        raise FileExistsError(path)

    monkeypatch.setattr(os, "mkdir", racing_mkdir)

    # Execute
    make_private_dir(tmp_path / "state")

    # Assert: treated as an existing directory, so checked and tightened out loud.
    assert _mode(tmp_path / "state") == 0o700
    assert "tightening permissions" in caplog.text


def test_fsync_dir_flushes_a_directory_and_refuses_a_file(tmp_path: Path, calls: CallLog) -> None:
    (tmp_path / "file").write_bytes(b"")

    fsync_dir(tmp_path)
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "file")

    assert calls.fsynced() == ["."]
