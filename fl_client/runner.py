"""The client loop: enroll once; then token → slot → pull → decrypt → train → push → metrics.

A round is a transaction. The encrypted update, its id and the progress it commits
(round number, error-feedback residual, personal tensors) are journaled before the update
is sent; the progress is committed only when the server acknowledges it. After a crash the
journaled bytes are resent with the same id, which the server acknowledges as a duplicate
instead of applying twice. A rejected update (too stale) leaves the progress untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from torch import nn

from crypto import (
    ClientCipher,
    CryptoError,
    EnvelopeError,
    LayoutError,
    ModelLayout,
    build_layout,
    get_profile,
    model_from_bytes,
)
from fl_client.api import (
    JobInfo,
    KeyauthClient,
    RetryPolicy,
    ServerClient,
    TokenManager,
)
from fl_client.data import ClientData, load_client_data
from fl_client.errors import (
    AuthError,
    ClientError,
    ConfigError,
    ConflictError,
    InitialModelExistsError,
    InvalidRequestError,
    JobNotTrainingError,
    LayoutConflictError,
    NotEnrolledError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    RetrainError,
    ServiceError,
    TransportError,
    VersionAheadError,
)
from fl_client.models import ModelFactory, build_model, resolve_model
from fl_client.output import Reporter
from fl_client.settings import ClientSettings
from fl_client.state import Credential, LocalState, ModelCache, PendingUpdate, Progress
from fl_client.training import (
    EvalResult,
    TrainConfig,
    evaluate,
    load_personal,
    load_shared,
    local_round,
    planned_steps,
    round_seed,
)
from fl_client.updates import (
    CompressionConfig,
    decrypt_model,
    encrypt_initial_model,
    model_limits,
    prepare_update,
)

__all__ = ["RoundResult", "RunSummary", "Runner", "enroll"]

log = logging.getLogger(__name__)

Blocks = npt.NDArray[np.float64]


def _retry_policy(settings: ClientSettings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.max_attempts,
        backoff_base=settings.backoff_base,
        backoff_max=settings.backoff_max,
    )


def enroll(
    settings: ClientSettings,
    token: str,
    *,
    transport: httpx.BaseTransport | None = None,
    reporter: Reporter | None = None,
) -> Credential:
    """Redeem an enrollment token; store the credential and the secret context (0600).

    Refuses to overwrite an existing credential: enrolling twice would silently drop
    the first identity.
    """
    state = LocalState(settings.state_dir)
    try:
        existing: Credential | None = state.load_credential()
    except NotEnrolledError:
        existing = None
    if existing is not None:
        raise ConfigError(
            f"{settings.state_dir} already holds the credential of client "
            f"{existing.client_name!r} ({existing.client_id}); use another --state-dir"
        )
    client = KeyauthClient(
        settings.keyauth_url,
        allow_insecure_http=settings.allow_insecure_http,
        transport=transport,
        timeout=settings.timeout,
        retry=_retry_policy(settings),
    )
    try:
        answer = client.enroll(token)
        credential = Credential(
            keyauth_url=client.base_url,
            client_id=answer.client_id,
            client_name=answer.client_name,
            client_secret=answer.client_secret,
            key_epoch=answer.key_epoch,
            profile=answer.profile,
        )
        # Store the secret before the first access token: that token confirms the
        # enrollment, after which keyauth never shows the secret again.
        state.save_credential(credential)
        access = client.issue_token(credential.client_id, credential.client_secret)
        context = client.secret_context(access.token, answer.key_epoch)
        get_profile(context.profile)  # an unknown profile is an error now, not mid-training
        state.save_secret_context(context.key_epoch, context.profile, context.data)
    finally:
        client.close()
    if reporter is not None:
        reporter.event(
            "enrolled",
            client_id=credential.client_id,
            client_name=credential.client_name,
            key_epoch=credential.key_epoch,
            profile=credential.profile,
            state_dir=str(settings.state_dir),
        )
    return credential


@dataclass(frozen=True)
class RoundResult:
    """One acknowledged update and what it cost."""

    round: int
    update_id: str
    base_version: int
    version: int
    staleness: int
    weight: float
    duplicate: bool
    wire: dict[str, float | int]
    pull_bytes: int
    pull_blocks: int
    train_steps: int
    train_loss: float
    eval_before: EvalResult | None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "round": self.round,
            "update_id": self.update_id,
            "base_version": self.base_version,
            "version": self.version,
            "staleness": self.staleness,
            "weight": self.weight,
            "duplicate": self.duplicate,
            "pull_bytes": self.pull_bytes,
            "pull_blocks": self.pull_blocks,
            "train_steps": self.train_steps,
            "train_loss": self.train_loss,
            **self.wire,
        }
        if self.eval_before is not None:
            out["accuracy"] = self.eval_before.accuracy
            out["loss"] = self.eval_before.loss
        return out


@dataclass(frozen=True)
class RunSummary:
    rounds: int
    stop_reason: str
    final_version: int | None
    final_eval: EvalResult | None
    results: list[RoundResult] = field(default_factory=list)


@dataclass
class _Pull:
    cache: ModelCache
    nbytes: int
    nblocks: int


class Runner:
    """One hospital's training loop against keyauth and fl_server.

    Parameters
    ----------
    settings
        Everything configurable (``FLCLIENT_*``).
    data
        This client's data; by default loaded from ``settings.data`` and ``settings.site``.
    model_factory
        By default resolved from ``settings.model``.
    keyauth_transport, server_transport
        httpx transports to use instead of the network (tests).
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        data: ClientData | None = None,
        model_factory: ModelFactory | None = None,
        keyauth_transport: httpx.BaseTransport | None = None,
        server_transport: httpx.BaseTransport | None = None,
        reporter: Reporter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.state = LocalState(settings.state_dir)
        self.credential = self.state.load_credential()
        self.reporter = reporter or Reporter(settings.output)
        self._sleep = sleep
        self._clock = clock
        self._stop = False
        # the key authority that enrolled this client, unless the settings name another
        keyauth_url = (
            settings.keyauth_url
            if "keyauth_url" in settings.model_fields_set
            else self.credential.keyauth_url
        )
        self.keyauth = KeyauthClient(
            keyauth_url,
            allow_insecure_http=settings.allow_insecure_http,
            transport=keyauth_transport,
            timeout=settings.timeout,
            retry=_retry_policy(settings),
            sleep=sleep,
        )
        self.tokens = TokenManager(
            self.keyauth,
            self.credential.client_id,
            self.credential.client_secret,
            refresh_margin=settings.token_refresh_margin,
            clock=clock,
        )
        self.server = ServerClient(
            settings.server_url,
            tokens=self.tokens,
            allow_insecure_http=settings.allow_insecure_http,
            transport=server_transport,
            timeout=settings.timeout,
            retry=_retry_policy(settings),
            sleep=sleep,
        )
        self.data = data or load_client_data(
            settings.data,
            settings.site,
            n_sites=settings.n_sites,
            alpha=settings.dirichlet_alpha,
            seed=settings.data_seed,
            test_fraction=settings.test_fraction,
        )
        factory = model_factory or resolve_model(settings.model)
        self.model: nn.Module = build_model(
            factory, self.data.input_shape, self.data.n_classes, settings.seed
        )
        self.train_config = TrainConfig(
            epochs=settings.local_epochs,
            steps=settings.local_steps,
            batch_size=settings.batch_size,
            lr=settings.lr,
            optimizer=settings.optimizer,
            momentum=settings.momentum,
        )
        self.compression = CompressionConfig(
            method=settings.compression,
            fraction=settings.block_fraction,
            seed=settings.compression_seed,
            error_feedback=settings.error_feedback,
        )
        self._initial_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._layouts: dict[int, ModelLayout] = {}
        self._ciphers: dict[int, ClientCipher] = {}
        self._cache: ModelCache | None = self.state.load_model_cache()

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        self.keyauth.close()
        self.server.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request_stop(self) -> None:
        """Stop after the current round (a signal handler calls this)."""
        self._stop = True

    # -- keys and layout -----------------------------------------------------------------

    def layout(self, block_size: int) -> ModelLayout:
        """This client's model layout for ``block_size`` (personal tensors left out)."""
        layout = self._layouts.get(block_size)
        if layout is None:
            try:
                layout = build_layout(
                    self._initial_state, block_size, personal=self.settings.personal
                )
            except LayoutError as exc:
                raise ConfigError(f"the model cannot be shared: {exc}") from exc
            self._layouts[block_size] = layout
        return layout

    def cipher(self, key_epoch: int) -> ClientCipher:
        """The cipher of a key epoch, fetching its secret context from keyauth once."""
        cipher = self._ciphers.get(key_epoch)
        if cipher is not None:
            return cipher
        stored = self.state.load_secret_context(key_epoch)
        if stored is None:
            context = self.keyauth.secret_context(self.tokens.get(), key_epoch)
            self.state.save_secret_context(context.key_epoch, context.profile, context.data)
            stored = (context.profile, context.data)
            self.reporter.event("key_epoch", key_epoch=key_epoch, profile=context.profile)
        profile_name, data = stored
        try:
            cipher = ClientCipher(data, get_profile(profile_name))
        except CryptoError as exc:
            raise ConfigError(f"secret context of key epoch {key_epoch}: {exc}") from exc
        self._ciphers[key_epoch] = cipher
        return cipher

    def _personal_values(self, progress: Progress, layout: ModelLayout) -> dict[str, Any]:
        if progress.personal and progress.fingerprint == layout.fingerprint:
            return dict(progress.personal)
        shared = set(layout.names)
        return {k: v.numpy().copy() for k, v in self._initial_state.items() if k not in shared}

    def _check_job(self, job: JobInfo) -> ModelLayout:
        layout = self.layout(get_profile(job.profile).block_size)
        if job.layout_fingerprint is not None and job.layout_fingerprint != layout.fingerprint:
            raise LayoutConflictError(
                self._layout_difference(layout),
                status=409,
                code="layout_mismatch",
            )
        return layout

    def _layout_difference(self, layout: ModelLayout) -> str:
        base = (
            "the job's model layout differs from this client's: every client needs the same "
            "--model, dataset features and --personal patterns"
        )
        try:
            theirs = ModelLayout.from_json(self.server.get_layout())
        except (ClientError, LayoutError):
            return base
        for mine, other in zip(layout.tensors, theirs.tensors, strict=False):
            if mine != other:
                return f"{base} (first difference: job has {other}, this client {mine})"
        return f"{base} (job: {len(theirs.tensors)} tensors, personal {list(theirs.personal)}; "
        f"this client: {len(layout.tensors)}, personal {list(layout.personal)})"

    # -- the job -------------------------------------------------------------------------

    def start_job(self, job: JobInfo) -> bool:
        """Put the layout and this client's seeded initial model; ``False`` if another won."""
        layout = self.layout(get_profile(job.profile).block_size)
        try:
            self.server.put_layout(layout.to_json())
        except LayoutConflictError as exc:
            raise LayoutConflictError(
                self._layout_difference(layout), status=exc.status, code=exc.code
            ) from exc
        cipher = self.cipher(job.key_epoch)
        blocks = layout.flatten(self._initial_state)
        with self.reporter.bar(layout.n_blocks, "encrypt initial model", "block") as bar:
            envelope = encrypt_initial_model(
                cipher, layout, blocks, key_epoch=job.key_epoch, on_block=bar.update
            )
        try:
            self.server.put_initial_model(envelope)
        except InitialModelExistsError:
            return False
        self.reporter.event(
            "initial_model",
            bytes=len(envelope),
            blocks=layout.n_blocks,
            shared_params=layout.total_params,
            seed=self.settings.seed,
        )
        return True

    def _job(self) -> JobInfo:
        job = self.server.job()
        if job.state == "waiting_for_initial_model":
            self.start_job(job)
            job = self.server.job()
        if job.state not in ("training", "done", "waiting_for_initial_model"):
            raise ProtocolError(f"job state {job.state!r} is not one protocol.md defines")
        return job

    # -- pull ------------------------------------------------------------------------------

    def pull(self, layout: ModelLayout, job: JobInfo) -> _Pull:
        """The current global model, decrypted; only changed blocks when the cache allows."""
        key_epoch = job.key_epoch
        max_block_bytes = get_profile(job.profile).max_block_bytes
        cache = self._cache
        usable = (
            cache is not None
            and cache.key_epoch == key_epoch
            and cache.fingerprint == layout.fingerprint
        )
        try:
            return self._pull(layout, cache if usable else None, max_block_bytes)
        except (InvalidRequestError, NotFoundError, VersionAheadError) as exc:
            if not usable:
                raise
            log.info("incremental pull refused (%s); pulling the whole model", exc.code)
            return self._pull(layout, None, max_block_bytes)

    def _pull(self, layout: ModelLayout, cache: ModelCache | None, max_block_bytes: int) -> _Pull:
        with self.reporter.bar(None, "pull", "B", unit_scale=True) as bar:

            def on_chunk(n: int, total: int | None) -> None:
                if total:
                    bar.set_total(total)
                bar.update(n)

            download = self.server.get_model(
                since=cache.version if cache else None,
                etag=cache.etag if cache else None,
                on_chunk=on_chunk,
            )
        if download is None:
            if cache is None:
                raise ProtocolError("pull model: 304 Not Modified without a cached model")
            return _Pull(cache, 0, 0)
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
        if cache is not None and model.key_epoch != cache.key_epoch:
            return self._pull(layout, None, max_block_bytes)
        cipher = self.cipher(model.key_epoch)
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
        with self.reporter.bar(len(model.blocks), "decrypt", "block") as bar:
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
        self._cache = new
        self.state.save_model_cache(new)
        return _Pull(new, len(download.data), len(model.blocks))

    # -- slots -----------------------------------------------------------------------------

    @contextmanager
    def _slot(self) -> Iterator[None]:
        started = self._clock()
        attempt = 0
        while True:
            try:
                self.server.request_slot()
                break
            except RateLimitedError as exc:
                attempt += 1
                waited = self._clock() - started
                if (
                    self.settings.slot_wait_max is not None
                    and waited >= self.settings.slot_wait_max
                ):
                    raise
                delay = exc.retry_after
                if delay is None:
                    delay = min(self.settings.backoff_max, self.settings.backoff_base * 2**attempt)
                self.reporter.event("waiting_for_slot", retry_after=round(delay, 1))
                self._sleep(delay)
        try:
            yield
        finally:
            try:
                self.server.release_slot()
            except (ServiceError, TransportError) as exc:
                log.info("could not give the training slot back: %s", exc)

    # -- push ------------------------------------------------------------------------------

    def resume(self) -> RoundResult | None:
        """Resend a journaled update left by a crash, with its original id."""
        pending = self.state.load_pending()
        if pending is None:
            return None
        progress = self.state.load_progress()
        if progress.last_update_id == pending.update_id:
            self.state.clear_pending()  # committed before the crash; only the journal was left
            return None
        self.reporter.event(
            "resend", update_id=str(pending.update_id), base_version=pending.base_version
        )
        try:
            return self._send(pending, eval_before=None)
        except (RetrainError, JobNotTrainingError):
            return None

    def _send(self, pending: PendingUpdate, eval_before: EvalResult | None) -> RoundResult:
        with self.reporter.bar(len(pending.envelope), "push", "B", unit_scale=True) as bar:
            try:
                ack = self.server.push_update(pending.envelope)
            except (RetrainError, JobNotTrainingError) as exc:
                self.state.clear_pending()
                self.reporter.event(
                    "rejected",
                    update_id=str(pending.update_id),
                    code=exc.code,
                    current_version=exc.problem.get("current_version"),
                )
                raise
            except (InvalidRequestError, ConflictError) as exc:
                # this exact envelope will never be accepted: do not resend it forever
                self.state.clear_pending()
                raise ProtocolError(f"the server refused the update for good: {exc}") from exc
            bar.update(len(pending.envelope))
        if ack.update_id != str(pending.update_id):
            raise ProtocolError(
                f"push update: acknowledged {ack.update_id}, sent {pending.update_id}"
            )
        progress = self.state.acknowledge_pending(pending)
        summary = dict(pending.summary)
        result = RoundResult(
            round=progress.rounds,
            update_id=ack.update_id,
            base_version=pending.base_version,
            version=ack.version,
            staleness=ack.staleness,
            weight=ack.weight,
            duplicate=ack.duplicate,
            wire={k: v for k, v in summary.get("wire", {}).items()},
            pull_bytes=int(summary.get("pull_bytes", 0)),
            pull_blocks=int(summary.get("pull_blocks", 0)),
            train_steps=int(summary.get("train_steps", 0)),
            train_loss=float(summary.get("train_loss", float("nan"))),
            eval_before=eval_before,
        )
        self.reporter.event("update", **result.to_dict())
        return result

    def _report_metrics(self, version: int, evaluation: EvalResult, extra: dict[str, Any]) -> None:
        metrics: dict[str, float | int] = {**evaluation.to_metrics(), **extra}
        try:
            self.server.post_metrics(version, metrics)
        except (ServiceError, TransportError) as exc:
            if isinstance(exc, AuthError):
                raise
            self.reporter.warn(f"metrics for version {version} not reported: {exc}")

    # -- rounds ------------------------------------------------------------------------------

    def run_round(self) -> RoundResult | None:
        """Pull, train, push one update. ``None`` when the job is done.

        Raises
        ------
        RetrainError
            The server rejected the update as too stale, or for another key epoch or
            version (nothing was committed): call again to re-pull and retrain.
        """
        self.resume()
        job = self._job()
        if job.state == "done":
            return None
        layout = self._check_job(job)
        cipher = self.cipher(job.key_epoch)
        progress = self.state.load_progress()
        with self._slot():
            pulled = self.pull(layout, job)
            key_epoch = pulled.cache.key_epoch
            if key_epoch != job.key_epoch:
                cipher = self.cipher(key_epoch)
            with self.reporter.bar(
                planned_steps(self.data.train, self.train_config), "train", "step"
            ) as bar:
                trained = local_round(
                    self.model,
                    layout,
                    pulled.cache.blocks,
                    self._personal_values(progress, layout),
                    self.data.train,
                    self.data.test,
                    self.train_config,
                    round_seed(self.settings.seed, progress.rounds),
                    on_step=self._on_step(bar),
                )
            residual = progress.residual if progress.fingerprint == layout.fingerprint else None
            with self.reporter.bar(None, "encrypt", "block") as bar:
                prepared = prepare_update(
                    cipher,
                    layout,
                    trained.delta,
                    residual,
                    self.compression,
                    step=self.settings.client_step,
                    round_=progress.rounds,
                    base_version=pulled.cache.version,
                    key_epoch=key_epoch,
                    on_block=bar.update,
                )
            pending = PendingUpdate(
                update_id=prepared.update.update_id,
                base_version=pulled.cache.version,
                key_epoch=key_epoch,
                envelope=prepared.envelope,
                progress=Progress(
                    rounds=progress.rounds + 1,
                    fingerprint=layout.fingerprint,
                    residual=prepared.residual,
                    personal=trained.personal,
                    last_update_id=prepared.update.update_id,
                ),
                summary={
                    "wire": prepared.report.to_dict(),
                    "pull_bytes": pulled.nbytes,
                    "pull_blocks": pulled.nblocks,
                    "train_steps": trained.train.steps,
                    "train_loss": trained.train.mean_loss,
                },
            )
            self.state.write_pending(pending)
            result = self._send(pending, trained.before)
        self._report_metrics(
            pulled.cache.version,
            trained.before,
            {"train_loss": trained.train.mean_loss},
        )
        return result

    def _on_step(self, bar: Any) -> Callable[[float], None]:
        delay = self.settings.step_delay

        def on_step(_loss: float) -> None:
            bar.update()
            if delay:
                self._sleep(delay)

        return on_step

    def evaluate_global(self, publish_wait: float = 30.0) -> tuple[int, EvalResult]:
        """Pull the current global model and evaluate it (with this client's personal
        tensors) on the held-out split.

        The server may serve a model a few versions behind the one it has applied
        (``/v1/job``'s version); this waits up to ``publish_wait`` seconds for it.
        """
        job = self.server.job()
        if job.state == "waiting_for_initial_model":
            raise ProtocolError("the job has no model yet")
        layout = self._check_job(job)
        pulled = self.pull(layout, job)
        deadline = self._clock() + publish_wait
        while pulled.cache.version < job.version and self._clock() < deadline:
            self._sleep(0.2)
            pulled = self.pull(layout, job)
        load_shared(self.model, layout, pulled.cache.blocks)
        load_personal(self.model, self._personal_values(self.state.load_progress(), layout))
        return pulled.cache.version, evaluate(self.model, self.data.test)

    def run(self) -> RunSummary:
        """Rounds until the job is done or a stop condition (max rounds, duration, signal)."""
        started = self._clock()
        results: list[RoundResult] = []
        resumed = self.resume()
        if resumed is not None:
            results.append(resumed)
        stale_in_row = 0
        reason = ""
        while not reason:
            if self._stop:
                reason = "stopped"
            elif self.settings.max_rounds is not None and len(results) >= self.settings.max_rounds:
                reason = "max_rounds"
            elif (
                self.settings.max_duration is not None
                and self._clock() - started >= self.settings.max_duration
            ):
                reason = "max_duration"
            if reason:
                break
            try:
                result = self.run_round()
            except RetrainError:
                stale_in_row += 1
                if stale_in_row >= self.settings.max_consecutive_stale:
                    raise
                continue
            except JobNotTrainingError:
                result = None
            stale_in_row = 0
            if result is None:
                reason = "job_done"
            else:
                results.append(result)
        final_version, final_eval = None, None
        if reason == "job_done":
            final_version, final_eval = self.evaluate_global()
            self._report_metrics(final_version, final_eval, {})
        self.reporter.event(
            "stopped",
            reason=reason,
            rounds=len(results),
            **(
                {
                    "final_version": final_version,
                    "final_accuracy": final_eval.accuracy,
                    "final_loss": final_eval.loss,
                }
                if final_eval is not None and final_version is not None
                else {}
            ),
        )
        return RunSummary(
            rounds=len(results),
            stop_reason=reason,
            final_version=final_version,
            final_eval=final_eval,
            results=results,
        )
