"""Crypto benchmark: hefl's compact update encoding against ``ts.ckks_vector`` (tutorial).

Run: ``python -m benchmarks.crypto_bench`` (add ``--quick`` for a smoke run). Prints a
markdown table and writes ``benchmarks/results/crypto_bench.json``. Both encodings are
measured in the same run on the same data, so their ratio is meaningful on a noisy machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tenseal as ts

import crypto
from benchmarks._report import best_of, format_table, write_json

TUTORIAL_MODULI = [60, 40, 40, 60]
TUTORIAL_N = 8192
TUTORIAL_SCALE = 2.0**40


def _chunks(values: np.ndarray, size: int) -> list[np.ndarray]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def bench_hefl(
    values: np.ndarray, adds: int, repeats: int, profile: crypto.CkksProfile
) -> dict[str, Any]:
    keys = crypto.generate_key_material(profile)
    client = crypto.ClientCipher(keys.secret_context, profile)
    server = crypto.ServerCipher(keys.public_context, profile)
    chunks = _chunks(values, profile.block_size)
    n = len(values)

    encrypted: list[bytes] = []

    def encrypt() -> None:
        encrypted[:] = [client.encrypt_update_block(c) for c in chunks]

    t_enc = best_of(repeats, encrypt)
    update_bytes = sum(len(b) for b in encrypted)
    zero = [client.encrypt_model_block(np.zeros(profile.block_size)) for _ in chunks]

    def ingest() -> None:
        model = [server.load_model_block(z) for z in zero]
        for m, b in zip(model, encrypted, strict=True):
            server.add_weighted(m, server.load_update_block(b), 1.0)

    # the model blocks are re-created per repeat; time only the update path
    t_load_model = best_of(repeats, lambda: [server.load_model_block(z) for z in zero])
    t_ingest = max(best_of(repeats, ingest) - t_load_model, 1e-9)
    model = [server.load_model_block(z) for z in zero]
    for m, b in zip(model, encrypted, strict=True):
        server.add_weighted(m, server.load_update_block(b), 1.0)
    model_bytes = [server.block_to_bytes(m) for m in model]
    t_dec = best_of(repeats, lambda: [client.decrypt_block(b) for b in model_bytes])

    err = _hefl_error(client, server, profile, adds)
    return {
        "encoding": f"hefl seeded/last-level/complex ({profile.name})",
        "params": n,
        "update_bytes_per_param": update_bytes / n,
        "model_bytes_per_param": sum(len(b) for b in model_bytes) / n,
        "encrypt_serialize_params_per_s": n / t_enc,
        "deserialize_add_params_per_s": n / t_ingest,
        "decrypt_params_per_s": n / t_dec,
        "additions": adds,
        "max_abs_error": err,
    }


def _hefl_error(
    client: crypto.ClientCipher, server: crypto.ServerCipher, profile: crypto.CkksProfile, adds: int
) -> float:
    rng = np.random.default_rng(1)
    model = server.load_model_block(client.encrypt_model_block(np.zeros(profile.block_size)))
    expected = np.zeros(profile.block_size)
    for _ in range(adds):
        u = rng.normal(0, 0.01, profile.block_size)
        server.add_weighted(model, server.load_update_block(client.encrypt_update_block(u)), 1.0)
        expected += u
    return float(np.max(np.abs(client.decrypt_block(server.block_to_bytes(model)) - expected)))


def bench_tutorial(values: np.ndarray, adds: int, repeats: int) -> dict[str, Any]:
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, TUTORIAL_N, coeff_mod_bit_sizes=TUTORIAL_MODULI)
    ctx.global_scale = TUTORIAL_SCALE
    public = ts.context_from(ctx.serialize(save_secret_key=False))
    slots = TUTORIAL_N // 2
    chunks = [c.tolist() for c in _chunks(values, slots)]
    n = len(values)
    encrypted: list[bytes] = []

    def encrypt() -> None:
        encrypted[:] = [ts.ckks_vector(ctx, c).serialize() for c in chunks]

    t_enc = best_of(repeats, encrypt)
    update_bytes = sum(len(b) for b in encrypted)
    zeros = [ts.ckks_vector(ctx, [0.0] * len(c)).serialize() for c in chunks]
    t_zero = best_of(repeats, lambda: [ts.ckks_vector_from(public, z) for z in zeros])

    def ingest() -> list[Any]:
        model = [ts.ckks_vector_from(public, z) for z in zeros]
        for m, b in zip(model, encrypted, strict=True):
            m.add_(ts.ckks_vector_from(public, b))
        return model

    t_ingest = max(best_of(repeats, ingest) - t_zero, 1e-9)
    model_bytes = [m.serialize() for m in ingest()]

    def decrypt() -> None:
        for b in model_bytes:
            v = ts.ckks_vector_from(ctx, b)
            v.decrypt()

    t_dec = best_of(repeats, decrypt)
    rng = np.random.default_rng(1)
    acc = ts.ckks_vector(ctx, [0.0] * slots)
    expected = np.zeros(slots)
    for _ in range(adds):
        u = rng.normal(0, 0.01, slots)
        acc.add_(ts.ckks_vector_from(public, ts.ckks_vector(ctx, u.tolist()).serialize()))
        expected += u
    err = float(np.max(np.abs(np.array(acc.decrypt()) - expected)))
    return {
        "encoding": "ts.ckks_vector tutorial (N=8192, [60,40,40,60], 2^40)",
        "params": n,
        "update_bytes_per_param": update_bytes / n,
        "model_bytes_per_param": sum(len(b) for b in model_bytes) / n,
        "encrypt_serialize_params_per_s": n / t_enc,
        "deserialize_add_params_per_s": n / t_ingest,
        "decrypt_params_per_s": n / t_dec,
        "additions": adds,
        "max_abs_error": err,
    }


def run(
    sizes: list[int], adds: int, repeats: int, progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    for n in sizes:
        values = rng.normal(0, 0.01, n)
        progress(f"hefl, {n:,} parameters")
        rows.append(bench_hefl(values, adds, repeats, crypto.DEFAULT_PROFILE))
        progress(f"ts.ckks_vector tutorial, {n:,} parameters")
        rows.append(bench_tutorial(values, adds, repeats))
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for smoke tests")
    parser.add_argument("--out-dir", type=Path, default=None, help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.quick:
        sizes, adds, repeats = [20_000], 50, 1
    else:
        sizes, adds, repeats = [100_000, 1_000_000], 1_000, 3
    rows = run(sizes, adds, repeats, lambda msg: print(f"… {msg}", flush=True))
    headers = [
        "encoding",
        "params",
        "update B/param",
        "model B/param",
        "encrypt+serialize params/s",
        "deserialize+add params/s",
        "decrypt params/s",
        f"max error after {adds} adds",
    ]
    keys = [
        "encoding",
        "params",
        "update_bytes_per_param",
        "model_bytes_per_param",
        "encrypt_serialize_params_per_s",
        "deserialize_add_params_per_s",
        "decrypt_params_per_s",
        "max_abs_error",
    ]
    print(format_table(headers, [[r[k] for k in keys] for r in rows]))
    speedups = {}
    for hefl_row, base_row in zip(rows[0::2], rows[1::2], strict=True):
        ratio = (
            hefl_row["encrypt_serialize_params_per_s"] / base_row["encrypt_serialize_params_per_s"]
        )
        speedups[str(hefl_row["params"])] = ratio
        print(
            f"{hefl_row['params']:,} params: hefl encrypts+serializes {ratio:.1f}x faster and "
            f"sends {base_row['update_bytes_per_param'] / hefl_row['update_bytes_per_param']:.1f}x "
            "fewer bytes than the tutorial encoding"
        )
    payload = {"rows": rows, "encrypt_speedup_vs_tutorial": speedups, "quick": args.quick}
    path = write_json("crypto_bench", payload, args.out_dir)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
