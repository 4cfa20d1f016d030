"""The apply worker: tasks in submission order on one thread, a hook after each."""

from __future__ import annotations

import functools
import threading

import pytest

from fl_server.worker import ApplyWorker


def test_tasks_run_in_order_on_one_thread_and_close_runs_what_is_queued() -> None:
    # Prepare: the first task holds the worker so that the others queue up behind it.
    gate = threading.Event()
    ran: list[tuple[int, str]] = []
    hooks: list[bool] = []
    worker = ApplyWorker()
    worker.start(hooks.append)

    def task(n: int) -> int:
        if n == 0:
            gate.wait(5)
        ran.append((n, threading.current_thread().name))
        return n

    # Execute
    futures = [worker.submit(functools.partial(task, n)) for n in range(4)]
    assert worker.has_work()
    gate.set()
    worker.close()

    # Assert
    assert [f.result() for f in futures] == [0, 1, 2, 3]
    assert ran == [(n, "hefl-apply") for n in range(4)]
    assert hooks == [False] * 4  # each time something (at last, the stop) was waiting
    assert not worker.has_work()


def test_the_hook_after_a_lone_task_says_idle() -> None:
    hooked = threading.Event()
    hooks: list[bool] = []

    def hook(idle: bool) -> None:
        hooks.append(idle)
        hooked.set()

    worker = ApplyWorker()
    worker.start(hook)

    worker.submit(lambda: None).result()
    assert hooked.wait(5)
    worker.close()

    assert hooks == [True]


def test_a_failing_task_fails_its_future_only() -> None:
    worker = ApplyWorker()
    worker.start(lambda idle: None)

    def boom() -> None:
        raise ValueError("boom")

    failed = worker.submit(boom)
    after = worker.submit(lambda: "still running")
    worker.close()

    with pytest.raises(ValueError, match="boom"):
        failed.result()
    assert after.result() == "still running"
