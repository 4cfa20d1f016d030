"""A corpus of hostile update envelopes, and the check that each is refused with a problem."""

from __future__ import annotations

import gzip
import math
import random
import struct
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import crypto
from harness.live import live_job
from harness.parties import Party, decrypt_model, model_envelope, random_blocks, update_envelope

__all__ = [
    "CorpusResult",
    "Hostile",
    "check_answer",
    "corpus_live",
    "envelope_corpus",
    "flip_bit",
    "raw_update",
    "run_corpus",
]

_HEADERS = crypto.ENVELOPE_HEADERS
# SEAL's own serialization header, which opens every ciphertext (crypto/_seal.py checks
# it): magic u16 | header size u8 | version u8 u8 | compression u8 | reserved u16 | size u64.
_SEAL_HEADER = 16
_SEAL_SIZE_AT = 8


def _with_scale(secret_context: bytes, block: bytes, scale: float) -> bytes:
    """The same ciphertext with its scale field overwritten (NaN, inf, 0, negative, huge)."""
    import tenseal as ts  # only here: the corpus forges what crypto/ would refuse to write
    import tenseal.sealapi as sealapi

    sc = ts.context_from(secret_context).seal_context().data
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "ct")
        Path(path).write_bytes(block)
        ct = sealapi.Ciphertext()
        ct.load(sc, path)
        ct.scale = scale
        ct.save(path)
        return Path(path).read_bytes()


def raw_update(
    fingerprint: bytes,
    blocks: list[tuple[int, bytes]],
    *,
    base: int = 0,
    epoch: int = 1,
    count: int | None = None,
    lengths: list[int] | None = None,
) -> bytes:
    """An update envelope written by hand, to say what ``update_to_bytes`` refuses to."""
    prefix = _HEADERS.prefix.codec
    head = prefix.pack(_HEADERS.magic, crypto.FORMAT_VERSION, _HEADERS.kind_update, 0, fingerprint)
    n = len(blocks) if count is None else count
    head += _HEADERS.update.codec.pack(base, epoch, uuid.uuid4().bytes, n)
    body = b""
    for k, (index, data) in enumerate(blocks):
        length = len(data) if lengths is None else lengths[k]
        body += _HEADERS.block.codec.pack(index, length) + data
    return head + body


@dataclass(frozen=True)
class Hostile:
    """One hostile request body for ``POST /v1/jobs/{job}/updates``."""

    name: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _field_bounds() -> tuple[set[int], int]:
    """Where every header field of an update starts, and where its first ciphertext starts."""
    update_at = _HEADERS.prefix.size
    block_at = update_at + _HEADERS.update.size
    bounds = {_HEADERS.prefix.offset(name) for name, _ in _HEADERS.prefix.fields}
    bounds |= {update_at + _HEADERS.update.offset(name) for name, _ in _HEADERS.update.fields}
    bounds |= {block_at + _HEADERS.block.offset(name) for name, _ in _HEADERS.block.fields}
    data_at = block_at + _HEADERS.block.size
    return bounds | {data_at}, data_at


def envelope_corpus(
    party: Party, layout: crypto.ModelLayout, *, random_bodies: int = 20, seed: int = 0
) -> list[Hostile]:
    """Hostile bodies for a job at version 0 on ``layout``; none may change the model."""
    rng = random.Random(seed)
    profile = party.profile
    fp = layout.fingerprint
    values = random_blocks(layout, profile, seed)
    _, good = update_envelope(party, layout, values, 0)
    block = party.cipher.encrypt_update_block(values[0])
    out: list[Hostile] = []

    # Random bytes, and random bytes behind a valid prefix.
    bounds, data_at = _field_bounds()
    for k in range(random_bodies):
        size = rng.choice([1, 7, 40, 80, 500, 5000, 40000])
        junk = rng.randbytes(size)
        out.append(Hostile(f"random {k} ({size} B)", junk))
        out.append(Hostile(f"valid head + random {k}", good[:data_at] + junk))

    # Truncation at every field boundary of the envelope and of the first SEAL header.
    bounds |= {data_at + o for o in (1, 2, 3, 4, 8, 15, 16, 100)}
    first_end = data_at + len(block)
    bounds |= {first_end, first_end + 4, first_end + 8, len(good) - 1}
    for cut in sorted(b for b in bounds if b < len(good)):
        out.append(Hostile(f"truncated at {cut}", good[:cut]))

    # Header fields that lie.
    def patched(name: str, value: int) -> bytes:
        header, at = _HEADERS.prefix, 0
        if name not in dict(header.fields):
            header, at = _HEADERS.update, _HEADERS.prefix.size
        data = bytearray(good)
        header.field_codec(name).pack_into(data, at + header.offset(name), value)
        return bytes(data)

    out += [
        Hostile("bad magic", b"XEFL" + good[len(_HEADERS.magic) :]),
        Hostile("format 2", patched("format", 2)),
        Hostile("kind model", patched("kind", _HEADERS.kind_model)),
        Hostile("kind 9", patched("kind", 9)),
        Hostile("reserved bits", patched("reserved", 1)),
        Hostile("other layout fingerprint", raw_update(b"\x07" * 32, [(0, block)])),
        Hostile("key epoch + 1", patched("key_epoch", party.key_epoch + 1)),
        Hostile("key epoch 0", patched("key_epoch", 0)),
        Hostile("key epoch u32 max", patched("key_epoch", 2**32 - 1)),
        Hostile("base version from the future", patched("base_version", 10**6)),
        Hostile("base version u64 max", patched("base_version", 2**64 - 1)),
        Hostile("block count 0", raw_update(fp, [])),
        Hostile("block count u32 max", patched("block_count", 2**32 - 1)),
        Hostile("block count + 1", patched("block_count", layout.n_blocks + 1)),
        Hostile("declared length u32 max", raw_update(fp, [(0, block)], lengths=[2**32 - 1])),
        Hostile(
            "declared length past the end", raw_update(fp, [(0, block)], lengths=[len(block) + 9])
        ),
        Hostile("declared length 0", raw_update(fp, [(0, b"")], lengths=[0])),
        Hostile("block index u32 max", raw_update(fp, [(2**32 - 1, block)])),
        Hostile("block index = n_blocks", raw_update(fp, [(layout.n_blocks, block)])),
        Hostile("duplicated block index", raw_update(fp, [(0, block), (0, block)])),
        Hostile("unordered block indices", raw_update(fp, [(1, block), (0, block)])),
        Hostile("oversized block", raw_update(fp, [(0, block * 4)])),
        Hostile("trailing byte", good + b"\x00"),
        Hostile("a model envelope", model_envelope(party, layout, values)),
    ]

    # Ciphertexts that parse as envelopes but not as this context's update blocks.
    seal_garbage = bytearray(block)
    seal_garbage[_SEAL_HEADER + 10 : _SEAL_HEADER + 200] = rng.randbytes(190)
    header_size_lie = bytearray(block)
    struct.pack_into("<Q", header_size_lie, _SEAL_SIZE_AT, 2**62)
    out += [
        Hostile(
            "model-scale block", raw_update(fp, [(0, party.cipher.encrypt_model_block(values[0]))])
        ),
        Hostile("SEAL payload garbage", raw_update(fp, [(0, bytes(seal_garbage))])),
        Hostile("SEAL declares 2^62 bytes", raw_update(fp, [(0, bytes(header_size_lie))])),
        Hostile("SEAL bad magic", raw_update(fp, [(0, b"\x00\x00" + block[2:])])),
        Hostile("SEAL compression 7", raw_update(fp, [(0, block[:4] + b"\x07" + block[5:])])),
        Hostile("SEAL random 300 B", raw_update(fp, [(0, rng.randbytes(300))])),
    ]
    # Another context: other degree N or other primes. (The same parameters under another
    # secret key cannot be told apart by a keyless server: it would add noise. Not here.)
    for other in crypto.PROFILES.values():
        if other.name == profile.name:
            continue
        foreign = crypto.ClientCipher(crypto.generate_key_material(other).secret_context, other)
        forged = foreign.encrypt_update_block(values[0][: other.block_size])
        out.append(Hostile(f"context of profile {other.name}", raw_update(fp, [(0, forged)])))
    for label, scale in [
        ("NaN", math.nan),
        ("+inf", math.inf),
        ("-inf", -math.inf),
        ("0", 0.0),
        ("-2^24", -(2.0**24)),
        ("2^200", 2.0**200),
        ("2^24 + 1", 2.0**24 + 1),
    ]:
        forged = _with_scale(party.secret_context, block, scale)
        out.append(Hostile(f"scale {label}", raw_update(fp, [(0, forged)])))

    # Compression on the wire: the server must not inflate a body it did not agree to.
    bomb = gzip.compress(b"\x00" * (64 * 1024 * 1024), compresslevel=9)
    out += [
        Hostile("gzip bomb (64 MiB of zeros)", bomb, {"Content-Encoding": "gzip"}),
        Hostile("gzip of a valid update", gzip.compress(good), {"Content-Encoding": "gzip"}),
        Hostile("valid update, says gzip", good, {"Content-Encoding": "gzip"}),
        Hostile("valid update, says deflate, br", good, {"Content-Encoding": "deflate, br"}),
    ]
    return out


@dataclass
class CorpusResult:
    """How the server answered a corpus: counts by status and code, and every bad answer."""

    tried: int
    by_status: dict[int, int]
    by_code: dict[str, int]
    failures: list[str]
    seconds: float


def check_answer(name: str, answer: httpx.Response) -> str | None:
    """Why ``answer`` is not an acceptable refusal of a hostile request, or None."""
    if not 400 <= answer.status_code < 500:
        return f"{name}: status {answer.status_code} {answer.text[:200]}"
    if answer.headers.get("content-type") != "application/problem+json":
        return f"{name}: content-type {answer.headers.get('content-type')}"
    code = answer.json().get("code")
    if not isinstance(code, str) or not code:
        return f"{name}: no code in {answer.text[:200]}"
    return None


def run_corpus(post: Callable[[Hostile], httpx.Response], corpus: list[Hostile]) -> CorpusResult:
    """Send every body of ``corpus`` through ``post`` and check each answer."""
    by_status: dict[int, int] = {}
    by_code: dict[str, int] = {}
    failures: list[str] = []
    start = time.perf_counter()
    for item in corpus:
        answer = post(item)
        problem = check_answer(item.name, answer)
        if problem:
            failures.append(problem)
        by_status[answer.status_code] = by_status.get(answer.status_code, 0) + 1
        if answer.headers.get("content-type") == "application/problem+json":
            code = str(answer.json().get("code"))
            by_code[code] = by_code.get(code, 0) + 1
    return CorpusResult(len(corpus), by_status, by_code, failures, time.perf_counter() - start)


def corpus_live(work: Path, seed: int) -> dict[str, Any]:
    """The whole corpus (200 random bodies) against live services; the model must not move."""
    with live_job(work, "corpus", n_params=5000, seed=3) as job:
        party, server = job.party, job.server
        before = httpx.get(job.url("/model"), headers=party.auth, timeout=30)
        corpus = envelope_corpus(party, job.layout, random_bodies=200, seed=seed)
        with httpx.Client(timeout=60) as http:
            result = run_corpus(
                lambda h: http.post(
                    job.url("/updates"), content=h.body, headers={**party.auth, **h.headers}
                ),
                corpus,
            )
            after = http.get(job.url("/model"), headers=party.auth)
        version, model = decrypt_model(party, job.layout, after.content)
        assert server.alive()
    return {
        **result.__dict__,
        "model_bytes_unchanged": after.content == before.content,
        "version_after": version,
        "max_model_change": float(np.max(np.abs(model - job.initial))),
    }


def flip_bit(block: bytes, server: crypto.ServerCipher) -> bytes:
    """``block`` with one bit of its ciphertext body flipped, where ``server`` still loads it
    (a flip the server cannot notice: most are, issue 13)."""
    for position in range(len(block) // 2, len(block)):
        flipped = bytearray(block)
        flipped[position] ^= 0x10
        try:
            server.load_update_block(bytes(flipped))
        except crypto.CryptoError:
            continue
        return bytes(flipped)
    raise AssertionError("no bit flip the server accepts")
