"""Pulling the global model: only changed blocks when the cache allows; check, decrypt, cache."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from crypto import (
    CryptoError,
    EncryptedModel,
    EnvelopeError,
    LayoutError,
    ModelLayout,
    get_profile,
    model_from_bytes,
)
from fl_client.errors import InvalidRequestError, NotFoundError, ProtocolError, VersionAheadError
from fl_client.rounds.context import RoundContext
from fl_client.rounds.port import JobInfo, ModelDownload
from fl_client.state import ModelCache
from fl_client.updates import decrypt_model, model_limits

__all__ = ["Pull", "pull_model"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pull:
    """The model after a pull, and what the pull downloaded."""

    cache: ModelCache
    nbytes: int
    nblocks: int


def pull_model(ctx: RoundContext, layout: ModelLayout, job: JobInfo) -> Pull:
    """The current global model, decrypted; only changed blocks when the cache allows."""
    max_block_bytes = get_profile(job.profile).max_block_bytes
    cache = ctx.cache
    usable = (
        cache is not None
        and cache.key_epoch == job.key_epoch
        and cache.fingerprint == layout.fingerprint
    )
    try:
        return _pull(ctx, layout, cache if usable else None, max_block_bytes)
    except (InvalidRequestError, NotFoundError, VersionAheadError) as exc:
        if not usable:
            raise
        log.info("incremental pull refused (%s); pulling the whole model", exc.code)
        return _pull(ctx, layout, None, max_block_bytes)


def _pull(
    ctx: RoundContext, layout: ModelLayout, cache: ModelCache | None, max_block_bytes: int
) -> Pull:
    while True:
        download = _download(ctx, cache)
        if download is None:
            if cache is None:
                raise ProtocolError("pull model: 304 Not Modified without a cached model")
            return Pull(cache, 0, 0)
        model = _open(download, layout, max_block_bytes)
        if cache is None or model.key_epoch == cache.key_epoch:
            break
        # the cached blocks are under another key epoch: pull the whole model instead
        # (with no cache, this loop runs once more at most)
        cache = None
    cipher = ctx.keys.cipher(model.key_epoch)
    if cipher.profile.block_size != layout.block_size:
        raise ProtocolError(
            f"pull model: key epoch {model.key_epoch} has blocks of "
            f"{cipher.profile.block_size} values, the job's layout {layout.block_size}"
        )
    base = cache.blocks if cache is not None else None
    if base is None and len(model.blocks) != layout.n_blocks:
        raise ProtocolError(
            f"pull model: {len(model.blocks)} of {layout.n_blocks} blocks and nothing cached"
        )
    with ctx.events.bar(len(model.blocks), "decrypt", "block") as bar:
        try:
            blocks = decrypt_model(cipher, model, layout, base, on_block=bar.update)
        except CryptoError as exc:
            raise ProtocolError(f"pull model: undecryptable block: {exc}") from exc
    new = ModelCache(
        version=model.version,
        key_epoch=model.key_epoch,
        fingerprint=layout.fingerprint,
        blocks=blocks,
        etag=download.etag,
    )
    ctx.cache = new
    ctx.state.save_model_cache(new)
    return Pull(new, len(download.data), len(model.blocks))


def _download(ctx: RoundContext, cache: ModelCache | None) -> ModelDownload | None:
    with ctx.events.bar(None, "pull", "B", unit_scale=True) as bar:

        def on_chunk(n: int, total: int | None) -> None:
            if total:
                bar.set_total(total)
            bar.update(n)

        return ctx.server.get_model(
            since=cache.version if cache else None,
            etag=cache.etag if cache else None,
            on_chunk=on_chunk,
        )


def _open(download: ModelDownload, layout: ModelLayout, max_block_bytes: int) -> EncryptedModel:
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
