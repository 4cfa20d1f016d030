"""A key rotation of a running study under load: how long it takes, what is retrained, lost.

``python -m benchmarks.rotation [--quick]`` runs ``harness.rotation.run_rotation``: keyauth
and fl_server under uvicorn, three heart-disease hospitals training (``fl_client``'s
``Runner`` over HTTP, a 50 ms pause per training step, as a hospital's slower training
would), one revoked, then ``hefl-admin job rotate``; prints a table and writes
``benchmarks/results/rotation.json``. The e2e tests run its short form
(``tests/fl_server/test_server_rotation_e2e.py``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import crypto
from benchmarks._report import format_table, write_json
from harness.rotation import decrypt_with, run_rotation

HEADERS = (
    "profile",
    "buffer",
    "rotated at version",
    "admin command → new epoch (s)",
    "of which hefl-admin (s)",
    "freeze → swap durable (s)",
    "acknowledged",
    "applied",
    "retrained (server / clients)",
    "lost",
    "revoked key: max abs error",
)


def _one(work: Path, profile: str, buffer_size: int, target: int) -> dict[str, Any]:
    run = run_rotation(work, profile=profile, buffer_size=buffer_size, target_updates=target)
    figures = run.figures()
    true, _ = decrypt_with(run.new_context, run.final_model, run.layout, profile)
    garbage, check = decrypt_with(run.revoked_secret_context, run.final_model, run.layout, profile)
    figures.update(
        profile=profile,
        buffer_size=buffer_size,
        target_updates=target,
        revoked_max_abs_error=float(np.max(np.abs(garbage - true))),
        revoked_check=check.check,
    )
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run, test profile")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration")
    parser.add_argument("--target", type=int, default=60, help="updates to train")
    args = parser.parse_args(argv)
    configs = (
        [("test-n2048", 1)]
        if args.quick
        else [(crypto.DEFAULT_PROFILE.name, 1), (crypto.DEFAULT_PROFILE.name, 4)]
    )
    runs = []
    with tempfile.TemporaryDirectory(prefix="hefl-rotation-") as tmp:
        for i, (profile, buffer_size) in enumerate(configs):
            for r in range(1 if args.quick else args.repeats):
                work = Path(tmp) / f"{i}-{r}"
                work.mkdir()
                runs.append(_one(work, profile, buffer_size, args.target))
                print(f"run {len(runs)}: {runs[-1]}", flush=True)
    rows = [
        (
            f["profile"],
            f["buffer_size"],
            f["rotated_at_version"],
            f["rotation_seconds"],
            f["command_seconds"],
            f["server_seconds"],
            f["updates_acknowledged"],
            f["updates_applied"],
            f"{f['updates_retrained_server']} / {f['updates_retrained_clients']}",
            f["updates_lost"],
            f"{f['revoked_max_abs_error']:.2e} ({f['revoked_check']} check fails)",
        )
        for f in runs
    ]
    print(format_table(HEADERS, rows))
    results = {"quick": args.quick, "runs": runs}
    out = write_json("rotation", results)
    print(f"\nwrote {out}")
    return results


if __name__ == "__main__":
    main()
