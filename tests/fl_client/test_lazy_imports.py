"""What each entry point imports: the light commands and the training code skip heavy packages.

Each check runs in a fresh interpreter, since this test process has imported everything.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import fl_client

HEAVY = ("torch", "tenseal", "sklearn", "pandas", "pyarrow", "safetensors")
ROOT = Path(__file__).resolve().parents[2]


def _loaded_after(code: str, tmp_path: Path) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; which of ``HEAVY`` it loaded, and its ``result``."""
    script = (
        "import json, sys\nresult = None\n"
        + code
        + f"\nprint(json.dumps({{'loaded': sorted(m for m in {HEAVY!r} if m in sys.modules),"
        " 'result': result}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLCLIENT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    # no waiting between retries of a refused connection
    env["FLCLIENT_BACKOFF_BASE"] = "0"
    env["FLCLIENT_BACKOFF_MAX"] = "0"
    env["FLCLIENT_STATE_DIR"] = str(tmp_path / "state")
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return answer


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _cli(args: list[str]) -> str:
    # the exit code of main(args), --help's SystemExit included
    return (
        "from fl_client.cli import main\n"
        f"try:\n    result = main({args!r})\nexcept SystemExit as exc:\n    result = exc.code\n"
    )


def test_import_fl_client_loads_nothing_heavy_and_every_public_name_resolves(
    tmp_path: Path,
) -> None:
    answer = _loaded_after("import fl_client", tmp_path)
    assert answer["loaded"] == []

    # each name of __all__ from a fresh import (the names this process holds are loaded)
    answer = _loaded_after(
        "import fl_client\nresult = len([getattr(fl_client, n) for n in fl_client.__all__])",
        tmp_path,
    )
    assert answer["result"] == len(fl_client.__all__)
    assert sorted(dir(fl_client)) == dir(fl_client)
    assert set(fl_client.__all__) <= set(dir(fl_client))
    with pytest.raises(AttributeError):
        _ = fl_client.no_such_name  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["jobs", "--help"],
        ["jobs", "--server", "http://127.0.0.1:{port}"],  # not enrolled: refused locally
        ["status", "--server", "http://127.0.0.1:{port}"],  # the server does not answer
        ["enroll", "--keyauth", "http://127.0.0.1:{port}", "--token", "t"],  # nor keyauth
    ],
    ids=["help", "jobs-help", "jobs", "status", "enroll"],
)
def test_light_commands_start_without_torch_tenseal_or_sklearn(
    args: list[str], tmp_path: Path
) -> None:
    port = _closed_port()
    answer = _loaded_after(_cli([a.format(port=port) for a in args]), tmp_path)
    assert answer["result"] == (0 if "--help" in args else 1)
    assert answer["loaded"] == []


def test_training_code_loads_torch_only(tmp_path: Path) -> None:
    # what benchmarks/flower's ClientApp imports in every Flower process
    answer = _loaded_after(
        "from benchmarks.flower._data import load_site\n"
        "from fl_client.models import build_model, resolve_model\n"
        "from fl_client.training import TrainConfig, round_seed, train_local\n",
        tmp_path,
    )
    assert answer["loaded"] == ["torch"]


def test_crypto_loads_tenseal_on_first_use_of_a_cipher(tmp_path: Path) -> None:
    answer = _loaded_after(
        "import crypto\nresult = 'tenseal' in sys.modules\ncrypto.ClientCipher", tmp_path
    )
    assert answer == {"loaded": ["tenseal"], "result": False}
