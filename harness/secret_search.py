"""Secret search: the secret key's bytes in a process's memory or under a directory."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import crypto

__all__ = ["readable_regions", "search_files", "search_memory", "secret_key_needles"]


def secret_key_needles(secret_context: bytes, profile: crypto.CkksProfile) -> list[bytes]:
    """Distinctive windows of the secret key, as serialized and as SEAL holds it in memory."""
    import tenseal as ts
    import tenseal.sealapi as sealapi

    ctx = ts.context_from(secret_context)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "sk")
        ctx.secret_key().data.save(path)
        serialized = Path(path).read_bytes()
    # The raw key polynomial (NTT form, one u64 per coefficient per prime): what RAM holds.
    key = ctx.secret_key().data.data()
    coeffs = profile.poly_modulus_degree * (len(profile.coeff_mod_bit_sizes))
    raw = np.asarray([key[i] for i in range(coeffs)], dtype=np.uint64).tobytes()
    del sealapi
    needles = []
    for blob in (secret_context, serialized, raw):
        for start in (len(blob) // 4, len(blob) // 2, 3 * len(blob) // 4):
            needles.append(blob[start : start + 48])
    return needles


def readable_regions(pid: int) -> Iterator[tuple[int, int]]:
    """The (start, end) addresses of process ``pid``'s readable mappings."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        span, perms = parts[0], parts[1]
        if not perms.startswith("r") or (len(parts) > 5 and parts[5] in ("[vvar]", "[vsyscall]")):
            continue
        lo, hi = (int(x, 16) for x in span.split("-"))
        yield lo, hi


def search_memory(pid: int, needles: list[bytes]) -> tuple[int, int]:
    """(hits, bytes scanned) of ``needles`` in the readable memory of process ``pid``."""
    hits = 0
    scanned = 0
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for lo, hi in readable_regions(pid):
            try:
                mem.seek(lo)
                chunk = mem.read(hi - lo)
            except (OSError, OverflowError, ValueError):
                continue
            if not chunk:
                continue
            scanned += len(chunk)
            hits += sum(chunk.count(n) for n in needles)
    return hits, scanned


def search_files(root: Path, needles: list[bytes]) -> tuple[int, int]:
    """(hits, files searched) of ``needles`` in every file under ``root``."""
    hits = files = 0
    for path in root.rglob("*"):
        if path.is_file():
            files += 1
            data = path.read_bytes()
            hits += sum(data.count(n) for n in needles)
    return hits, files
