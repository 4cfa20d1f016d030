"""Pulling the global model: only changed blocks when the cache allows; decrypt, check, cache."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from crypto import (
    ENVELOPE_HEADERS,
    CkksProfile,
    ClientCipher,
    EncryptedModel,
    EnvelopeError,
    EnvelopeHead,
    EnvelopeParser,
    LayoutError,
    ModelLayout,
    get_profile,
    model_from_bytes,
)
from fl_client.errors import (
    IntegrityError,
    InvalidRequestError,
    NotFoundError,
    ProtocolError,
    VersionAheadError,
)
from fl_client.events import ProgressBar
from fl_client.rounds.context import RoundContext
from fl_client.rounds.integrity import require_intact
from fl_client.rounds.port import JobInfo, ModelDownload, OnChunk
from fl_client.state import ModelCache
from fl_client.updates import Blocks, decrypt_model, decrypt_model_stream, model_limits

__all__ = [
    "Fetch",
    "Pull",
    "decrypt_blocks",
    "decrypt_download",
    "download_bar",
    "open_model",
    "open_model_head",
    "pull_model",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pull:
    """The model after a pull, and what the pull downloaded."""

    cache: ModelCache
    nbytes: int
    nblocks: int


Fetch = Callable[[RoundContext, ModelCache | None], ModelDownload | None]
"""Downloads the model (only what changed since the cache given); ``None``: unchanged."""


def pull_model(
    ctx: RoundContext, layout: ModelLayout, job: JobInfo, *, fetch: Fetch | None = None
) -> Pull:
    """The current global model, decrypted and checked; only changed blocks when the
    cache allows. The cache keeps only models that passed every check. ``fetch`` is how
    it is downloaded (by default ``GET …/model``).

    Raises
    ------
    IntegrityError
        The model failed a check (``crypto.check_model``); it was reported to the server
        and the cache dropped, so the next pull takes the whole model.
    KeyIdMismatchError
        This hospital's secret context is not of the job's key id.
    """
    max_block_bytes = get_profile(job.profile).max_block_bytes
    cache = ctx.cache
    usable = (
        cache is not None
        and cache.key_epoch == job.key_epoch
        and cache.fingerprint == layout.fingerprint
    )
    fetch = fetch or _download
    try:
        pulled, profile = _pull(ctx, fetch, layout, job, cache if usable else None, max_block_bytes)
    except (InvalidRequestError, NotFoundError, VersionAheadError) as exc:
        if not usable:
            raise
        log.info("incremental pull refused (%s); pulling the whole model", exc.code)
        pulled, profile = _pull(ctx, fetch, layout, job, None, max_block_bytes)
    try:
        require_intact(ctx, job.name, layout, profile, pulled.cache.version, pulled.cache.blocks)
    except IntegrityError:
        ctx.cache = None
        raise
    if pulled.cache is not ctx.cache:
        ctx.cache = pulled.cache
        ctx.state.save_model_cache(pulled.cache)
    return pulled


def _pull(
    ctx: RoundContext,
    fetch: Fetch,
    layout: ModelLayout,
    job: JobInfo,
    cache: ModelCache | None,
    max_block_bytes: int,
) -> tuple[Pull, CkksProfile]:
    while True:
        download = fetch(ctx, cache)
        if download is None:
            if cache is None:
                raise ProtocolError("pull model: 304 Not Modified without a cached model")
            return Pull(cache, 0, 0), ctx.keys.for_job(job, cache.key_epoch).profile
        head = open_model_head(download, layout, max_block_bytes)
        if cache is None or head.key_epoch == cache.key_epoch:
            break
        # the cached blocks are under another key epoch: pull the whole model instead
        # (with no cache, this loop runs once more at most)
        cache = None
    cipher = ctx.keys.for_job(job, head.key_epoch)
    base = cache.blocks if cache is not None else None
    if base is None and head.block_count != layout.n_blocks:
        raise ProtocolError(
            f"pull model: {head.block_count} of {layout.n_blocks} blocks and nothing cached"
        )
    blocks = decrypt_download(ctx, cipher, download, layout, base, max_block_bytes)
    new = ModelCache(
        version=head.version,
        key_epoch=head.key_epoch,
        fingerprint=layout.fingerprint,
        blocks=blocks,
        etag=download.etag,
    )
    return Pull(new, len(download.data), head.block_count), cipher.profile


def decrypt_blocks(
    ctx: RoundContext,
    cipher: ClientCipher,
    model: EncryptedModel,
    layout: ModelLayout,
    base: Blocks | None,
) -> Blocks:
    """Decrypt a model envelope over ``base`` with a progress bar; a block that cannot be
    decrypted holds NaN, which the integrity check reports (never a crash)."""
    _check_block_size(cipher, layout, model.key_epoch)
    with ctx.events.bar(len(model.blocks), "decrypt", "block") as bar:
        return decrypt_model(cipher, model, layout, base, bar.update, undecryptable=np.nan)


def decrypt_download(
    ctx: RoundContext,
    cipher: ClientCipher,
    download: ModelDownload,
    layout: ModelLayout,
    base: Blocks | None,
    max_block_bytes: int,
) -> Blocks:
    """``decrypt_blocks`` of a downloaded envelope, read in pieces: each block is decrypted
    from the downloaded bytes, never all of them parsed into a second copy first."""
    head = open_model_head(download, layout, max_block_bytes)
    _check_block_size(cipher, layout, head.key_epoch)
    view = memoryview(download.data)
    pieces = (view[i : i + _PIECE] for i in range(0, len(view), _PIECE))
    with ctx.events.bar(head.block_count, "decrypt", "block") as bar, _malformed():
        _, blocks = decrypt_model_stream(
            cipher,
            pieces,
            model_limits(layout, max_block_bytes),
            layout,
            base,
            bar.update,
            undecryptable=np.nan,
        )
    return blocks


_PIECE = 1 << 20


def _check_block_size(cipher: ClientCipher, layout: ModelLayout, key_epoch: int) -> None:
    if cipher.profile.block_size != layout.block_size:
        raise ProtocolError(
            f"pull model: key epoch {key_epoch} has blocks of "
            f"{cipher.profile.block_size} values, the job's layout {layout.block_size}"
        )


def download_bar(bar: ProgressBar) -> OnChunk:
    """A download's ``on_chunk`` that moves ``bar``."""

    def on_chunk(n: int, total: int | None) -> None:
        if total:
            bar.set_total(total)
        bar.update(n)

    return on_chunk


def _download(ctx: RoundContext, cache: ModelCache | None) -> ModelDownload | None:
    with ctx.events.bar(None, "pull", "B", unit_scale=True) as bar:
        return ctx.server.get_model(
            since=cache.version if cache else None,
            etag=cache.etag if cache else None,
            on_chunk=download_bar(bar),
        )


@contextlib.contextmanager
def _malformed() -> Iterator[None]:
    try:
        yield
    except EnvelopeError as exc:
        raise ProtocolError(f"pull model: malformed envelope: {exc}") from exc
    except LayoutError as exc:
        raise ProtocolError(f"pull model: envelope for another layout: {exc}") from exc


def _check_version(download: ModelDownload, version: int) -> None:
    if version != download.version:
        raise ProtocolError(
            f"pull model: header says version {download.version}, envelope {version}"
        )


def open_model(
    download: ModelDownload, layout: ModelLayout, max_block_bytes: int
) -> EncryptedModel:
    """Parse a downloaded model envelope of ``layout``; its version is the header's."""
    with _malformed():
        model = model_from_bytes(download.data, model_limits(layout, max_block_bytes))
    _check_version(download, model.version)
    return model


def open_model_head(
    download: ModelDownload, layout: ModelLayout, max_block_bytes: int
) -> EnvelopeHead:
    """The head of a downloaded model envelope of ``layout`` (its blocks not parsed yet);
    its version is the header's."""
    parser = EnvelopeParser("model", model_limits(layout, max_block_bytes))
    size = ENVELOPE_HEADERS.prefix.size + ENVELOPE_HEADERS.model.size
    with _malformed():
        parser.feed(memoryview(download.data)[:size])
        if parser.head is None:
            parser.close()  # too short to hold a head: the truncation error
    assert parser.head is not None
    _check_version(download, parser.head.version)
    return parser.head
