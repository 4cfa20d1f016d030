"""The aggregation server, free of HTTP: its jobs, access tokens, and each epoch's key material.

Process-wide: token verification and the revoked set (``fl_server.auth``), the key
material per epoch (``fl_server.material``), the jobs (``fl_server.registry``). Each job
(``fl_server.job_service``) has its own directory, apply worker, journal, log, receipts,
checkpoints, slots, queue and status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from fl_server.auth import TokenAuth
from fl_server.domain import BodyReader, JobCreated, JobView, ServerStatusView, StatusView
from fl_server.errors import SpecInvalidError, StartupError
from fl_server.job_service import JobService
from fl_server.jobspec import spec_from_body
from fl_server.material import EpochContext, MaterialSource
from fl_server.registry import JobRegistry
from fl_server.settings import ServerSettings
from hefl_wire import AccessClaims

__all__ = ["ServerService"]

logger = logging.getLogger("fl_server")


class ServerService:
    """The server's operations: tokens, the jobs, creating one; each job's own are its own.

    Build it with ``start`` (it fetches key material, opens and recovers every job).

    Parameters
    ----------
    settings
        The process's settings.
    material
        Where the token key and each epoch's keyless context come from.
    auth
        Token verification with the key ``material`` gave.
    registry
        The jobs of ``settings.state_dir``.
    """

    def __init__(
        self,
        settings: ServerSettings,
        material: MaterialSource,
        auth: TokenAuth,
        registry: JobRegistry,
    ) -> None:
        self.settings = settings
        self._material = material
        self._auth = auth
        self._registry = registry

    @classmethod
    async def start(
        cls,
        settings: ServerSettings,
        material: MaterialSource,
        *,
        clock: Callable[[], float] = time.time,
    ) -> ServerService:
        """Fetch the token key, open the state directory, and open and recover every job.

        A job whose directory is damaged, whose key epoch keyauth does not know, or whose
        epoch's key id at keyauth is not the one it was created under (keyauth's keys were
        replaced), is left out and reported (``status().failed_jobs``); the others serve.

        Raises
        ------
        KeyauthUnavailableError
            keyauth did not answer (the state directory is not touched before it does).
        StateError
            The state directory is unusable or in use.
        """
        auth = TokenAuth(await material.token_key())
        registry = await asyncio.to_thread(JobRegistry, settings, clock=clock)
        try:
            records = await asyncio.to_thread(registry.stored)
            contexts: dict[int, EpochContext] = {}
            for epoch in sorted({r.key_epoch for r in records.values()}):
                try:
                    contexts[epoch] = await material.epoch_context(epoch)
                except StartupError as exc:  # keyauth answered: no such epoch, or unusable
                    for name, record in records.items():
                        if record.key_epoch == epoch:
                            registry.fail(
                                name,
                                f"keyauth gave no usable key material for its key epoch "
                                f"{epoch} ({exc.detail})",
                            )
            for record in records.values():
                context = contexts.get(record.key_epoch)
                if context is not None:
                    await asyncio.to_thread(registry.open, record, context)
        except BaseException:
            await asyncio.to_thread(registry.close)
            raise
        return cls(settings, material, auth, registry)

    def close(self) -> None:
        """Close every job (each finishes its queue and checkpoints) and the state directory."""
        self._registry.close()

    # -- tokens ---------------------------------------------------------------------------

    def authenticate_client(self, token: str) -> AccessClaims:
        """The claims of a valid client token whose client is not revoked."""
        return self._auth.client(token)

    def authenticate_admin(self, token: str) -> AccessClaims:
        """The claims of a valid administrator token."""
        return self._auth.admin(token)

    def authenticate_reader(self, token: str) -> AccessClaims:
        """The claims of a valid client or administrator token."""
        return self._auth.reader(token)

    def authenticate_status_reader(self, token: str) -> AccessClaims:
        """The claims of a valid viewer, administrator or client token."""
        return self._auth.status_reader(token)

    def set_revoked(self, client_ids: Iterable[str]) -> None:
        """Replace the set of revoked client ids (from keyauth's revocation list)."""
        self._auth.set_revoked(client_ids)

    # -- jobs -----------------------------------------------------------------------------

    def job(self, name: str) -> JobService:
        """The job called ``name``: ``job_not_found`` if none; ``state_invalid`` if damaged."""
        return self._registry.get(name)

    def jobs(self) -> list[JobView]:
        """Every job, by name."""
        return [job.view() for job in self._registry.jobs()]

    async def create_job(self, read_body: BodyReader) -> JobCreated:
        """Create the job a study spec describes, on keyauth's current key epoch and its key id.

        The same spec again finds the job (``created`` false). Open jobs of the current
        epoch whose key id keyauth no longer states are taken out first, as at startup
        (keyauth's keys were replaced while this server ran).

        Raises
        ------
        SpecInvalidError
            The spec is refused by ``hefl_study`` (every problem, located), or its
            profile is not the current key epoch's.
        JobExistsError
            The name is taken by another spec.
        KeyauthUnavailableError
            keyauth did not say which epoch is current.
        StartupError
            keyauth's statement of the epoch's key id does not verify (its token key
            changed since the server started: the server must be restarted).
        """
        spec = spec_from_body(await read_body(self.settings.max_spec_bytes))
        existing = self._registry.existing(spec)
        if existing is not None:
            return JobCreated(existing.view(), created=False)
        context = await self._material.current_context()
        for replaced in self._registry.refuse_replaced_keys(context):
            await asyncio.to_thread(replaced.close)
        if spec.profile != context.profile:
            raise SpecInvalidError(
                [
                    (
                        "profile",
                        f"{spec.profile!r} is not the profile of keyauth's current key epoch "
                        f"{context.key_epoch} ({context.profile!r}): every hospital encrypts "
                        f"with that epoch's key; set profile = {context.profile!r}",
                    )
                ]
            )
        job, created = await asyncio.to_thread(self._registry.create, spec, context)
        return JobCreated(job.view(), created=created)

    async def rotate_job(self, name: str) -> JobView:
        """Move job ``name`` to keyauth's current key epoch, which must be newer than the
        job's (``rotation_refused`` otherwise: ``hefl-admin epochs rotate`` first).

        Raises
        ------
        RotationRefusedError
            The epoch is not newer, the job cannot rotate now, or no hospital can be asked.
        KeyauthUnavailableError
            keyauth did not say which epoch is current.
        """
        job = self._registry.get(name)
        context = await self._material.current_context()
        return await job.rotate(context, self._auth.is_revoked)

    def tick(self) -> None:
        """Have every job check its wall-time rule and save its training time."""
        for job in self._registry.jobs():
            job.tick()

    # -- status ---------------------------------------------------------------------------

    def status(self) -> ServerStatusView:
        """The jobs, and the job directories left out at startup."""
        return ServerStatusView(jobs=tuple(self.jobs()), failed_jobs=tuple(self._registry.failed()))

    def job_statuses(self) -> list[StatusView]:
        """Every job's status (the Prometheus series)."""
        return [job.status() for job in self._registry.jobs()]
