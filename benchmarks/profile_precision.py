"""Precision of each CKKS profile on an add-only server: how the default was chosen.

Run: ``python -m benchmarks.profile_precision [--quick]``. For every profile, adds
updates drawn from N(0, 0.01) into one encrypted block (weight 1, exactly what the
server does) and reports the max absolute error against the plaintext sum after
1, 100, 1,000 and 10,000 additions, the implied noise coefficient, and what the
profile states (``error_bound``, ``max_magnitude``, bytes per parameter).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

import crypto
from benchmarks._report import format_table, write_json


def measure(profile: crypto.CkksProfile, checkpoints: list[int]) -> dict[str, Any]:
    keys = crypto.generate_key_material(profile)
    client = crypto.ClientCipher(keys.secret_context, profile)
    server = crypto.ServerCipher(keys.public_context, profile)
    rng = np.random.default_rng(0)
    model = server.load_model_block(client.encrypt_model_block(np.zeros(profile.block_size)))
    expected = np.zeros(profile.block_size)
    errors: dict[str, float] = {}
    update_bytes = 0
    for i in range(1, max(checkpoints) + 1):
        u = rng.normal(0, 0.01, profile.block_size)
        data = client.encrypt_update_block(u)
        update_bytes = len(data)
        server.add_weighted(model, server.load_update_block(data), 1.0)
        expected += u
        if i in checkpoints:
            out = client.decrypt_block(server.block_to_bytes(model))
            errors[str(i)] = float(np.max(np.abs(out - expected)))
    coefficient = max(
        e * 2.0**profile.update_scale_bits / math.sqrt(int(n)) for n, e in errors.items()
    )
    return {
        "profile": profile.name,
        "errors": errors,
        "measured_noise_coefficient": coefficient,
        "stated_noise_coefficient": profile.noise_coefficient,
        "stated_bound_at_max": profile.error_bound(max(checkpoints)),
        "max_magnitude": profile.max_magnitude,
        "weight_step": 2.0**-profile.weight_bits,
        "update_bytes_per_param": update_bytes / profile.block_size,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    checkpoints = [1, 10, 100] if args.quick else [1, 100, 1_000, 10_000]
    rows = []
    for profile in crypto.PROFILES.values():
        print(f"… {profile.name}", flush=True)
        rows.append(measure(profile, checkpoints))
    headers = [
        "profile",
        *(f"error after {n:,}" for n in checkpoints),
        "noise coeff (measured / stated)",
        "max |value|",
        "weight step",
        "update B/param",
    ]
    table = [
        [
            r["profile"],
            *(r["errors"][str(n)] for n in checkpoints),
            f"{r['measured_noise_coefficient']:.0f} / {r['stated_noise_coefficient']:.0f}",
            r["max_magnitude"],
            r["weight_step"],
            r["update_bytes_per_param"],
        ]
        for r in rows
    ]
    print(format_table(headers, table))
    payload = {"checkpoints": checkpoints, "rows": rows, "quick": args.quick}
    print(f"wrote {write_json('profile_precision', payload, args.out_dir)}")
    return payload


if __name__ == "__main__":
    main()
