"""Pulling the global model: only changed blocks when the cache allows; decrypt, check, cache."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from crypto import (
    CkksProfile,
    ClientCipher,
    EncryptedModel,
    EnvelopeError,
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
from fl_client.updates import Blocks, decrypt_model, model_limits

__all__ = ["Fetch", "Pull", "decrypt_blocks", "download_bar", "open_model", "pull_model"]

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
        model = open_model(download, layout, max_block_bytes)
        if cache is None or model.key_epoch == cache.key_epoch:
            break
        # the cached blocks are under another key epoch: pull the whole model instead
        # (with no cache, this loop runs once more at most)
        cache = None
    cipher = ctx.keys.for_job(job, model.key_epoch)
    base = cache.blocks if cache is not None else None
    if base is None and len(model.blocks) != layout.n_blocks:
        raise ProtocolError(
            f"pull model: {len(model.blocks)} of {layout.n_blocks} blocks and nothing cached"
        )
    blocks = decrypt_blocks(ctx, cipher, model, layout, base)
    new = ModelCache(
        version=model.version,
        key_epoch=model.key_epoch,
        fingerprint=layout.fingerprint,
        blocks=blocks,
        etag=download.etag,
    )
    return Pull(new, len(download.data), len(model.blocks)), cipher.profile


def decrypt_blocks(
    ctx: RoundContext,
    cipher: ClientCipher,
    model: EncryptedModel,
    layout: ModelLayout,
    base: Blocks | None,
) -> Blocks:
    """Decrypt a model envelope over ``base`` with a progress bar; a block that cannot be
    decrypted holds NaN, which the integrity check reports (never a crash)."""
    if cipher.profile.block_size != layout.block_size:
        raise ProtocolError(
            f"pull model: key epoch {model.key_epoch} has blocks of "
            f"{cipher.profile.block_size} values, the job's layout {layout.block_size}"
        )
    with ctx.events.bar(len(model.blocks), "decrypt", "block") as bar:
        return decrypt_model(cipher, model, layout, base, bar.update, undecryptable=np.nan)


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


def open_model(
    download: ModelDownload, layout: ModelLayout, max_block_bytes: int
) -> EncryptedModel:
    """Parse a downloaded model envelope of ``layout``; its version is the header's."""
    try:
        model = model_from_bytes(download.data, model_limits(layout, max_block_bytes))
    except EnvelopeError as exc:
        raise ProtocolError(f"pull model: malformed envelope: {exc}") from exc
    except LayoutError as exc:
        raise ProtocolError(f"pull model: envelope for another layout: {exc}") from exc
    if model.version != download.version:
        raise ProtocolError(
            f"pull model: header says version {download.version}, envelope {model.version}"
        )
    return model
