"""A key rotation of a running study under load, with one hospital revoked before it.

``run_rotation`` starts keyauth and fl_server under uvicorn, creates the heart-disease
job and has three hospitals train it (the ``fl_client`` library's ``Runner`` over HTTP,
each in its own thread). Once the job reaches ``rotate_at``, keyauth revokes the last
hospital and the administrator runs ``hefl-admin job rotate`` (keyauth's next key epoch,
then the job's rotation); the other two train on to the target. With ``kill_after_request``
the server is killed with SIGKILL while the rotation is under way, restarted, and the job
rotated again. What it measures: how long the rotation took (the request to the job
under its new epoch), updates trained again because of it, and updates lost (those a
hospital had acknowledged that the model does not hold: must be 0). The revoked
hospital's own epoch-1 secret context is kept to decrypt the versions after the rotation.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import crypto
from fl_client import Runner
from fl_client.errors import AuthError
from fl_client.events import Event, ModelReencrypted, Rejected, RoundResult
from fl_client.state import LocalState
from harness.admin import admin_token, create_job, read_status, run_admin, viewer_token
from harness.integrity import Recorder, enroll_hospital, hospital_settings
from harness.parties import Party, job_url
from harness.parties import enroll as enroll_party
from harness.services import (
    ServiceError,
    ServiceProcess,
    keyauth_service,
    new_admin_key,
    server_service,
)
from harness.studies import study_json

__all__ = ["SITES", "RotationRun", "decrypt_with", "run_rotation"]

JOB = "heart"
SITES = ("cleveland", "hungary", "va-long-beach")  # the last one is revoked
RETRAINED = ("job_rotating", "key_epoch_mismatch")


@dataclass
class RotationRun:
    """What one run showed; ``final_model`` is the final model's envelope as served."""

    status: dict[str, Any]
    events: dict[str, list[Event]]
    outcomes: dict[str, str]
    rotation_seconds: float
    command_seconds: float
    rotated_at_version: int
    revoked_secret_context: bytes = field(repr=False)
    revoked_token_answer: int
    final_model: bytes = field(repr=False)
    old_context: bytes = field(repr=False)
    new_context: bytes = field(repr=False)
    layout: crypto.ModelLayout
    restarted: tuple[int, bytes] | None = field(repr=False)
    seconds: float

    @property
    def acknowledged(self) -> set[str]:
        """Ids of the updates the server acknowledged (not as a retry), every hospital."""
        return {
            e.update_id
            for events in self.events.values()
            for e in events
            if isinstance(e, RoundResult) and not e.duplicate
        }

    @property
    def retrained_by_clients(self) -> int:
        """Updates the hospitals dropped and trained again because of the rotation."""
        return sum(
            1
            for events in self.events.values()
            for e in events
            if isinstance(e, Rejected) and e.code in RETRAINED
        )

    @property
    def lost(self) -> int:
        """Acknowledged updates the model does not hold (each is applied once: seq)."""
        return len(self.acknowledged) - int(self.status["updates_applied"])

    @property
    def reencrypted_by(self) -> list[str]:
        return [
            site
            for site, events in self.events.items()
            if any(isinstance(e, ModelReencrypted) and e.swapped for e in events)
        ]

    @property
    def server_seconds(self) -> float:
        """The server's part: from freezing the model to the swap being durable (the
        hospital asked noticing it, pulling, decrypting, encrypting, uploading included)."""
        done = self.status["rotations"]["done"][-1]
        return (
            datetime.fromisoformat(done["at"]) - datetime.fromisoformat(done["started_at"])
        ).total_seconds()

    def figures(self) -> dict[str, Any]:
        rotations = self.status["rotations"]
        return {
            "rotation_seconds": round(self.rotation_seconds, 3),
            "command_seconds": round(self.command_seconds, 3),
            "server_seconds": round(self.server_seconds, 3),
            "rotated_at_version": self.rotated_at_version,
            "final_version": self.status["version"],
            "updates_applied": self.status["updates_applied"],
            "updates_acknowledged": len(self.acknowledged),
            "updates_lost": self.lost,
            "updates_retrained_server": rotations["updates_retrained"],
            "updates_retrained_clients": self.retrained_by_clients,
            "reencrypted_by": self.reencrypted_by,
            "key_epoch": self.status["key_epoch"],
            "restarted_epoch": self.restarted[0] if self.restarted else None,
            "outcomes": self.outcomes,
            "seconds": round(self.seconds, 1),
        }


def _model(server_url: str, party: Party) -> bytes:
    answer = httpx.get(job_url(server_url, JOB, "/model"), headers=party.auth, timeout=30)
    answer.raise_for_status()
    return answer.content


def _refreshed(keyauth_url: str, party: Party) -> Party:
    """``party`` with a fresh access token (a run may outlast one)."""
    answer = httpx.post(
        f"{keyauth_url}/v1/token",
        json={"client_id": party.client_id, "client_secret": party.client_secret},
    )
    answer.raise_for_status()
    return dataclasses.replace(party, token=answer.json()["access_token"])


def decrypt_with(
    secret_context: bytes, model: bytes, layout: crypto.ModelLayout, profile_name: str
) -> tuple[np.ndarray[Any, Any], crypto.IntegrityCheck]:
    """The values a secret context reads in a whole model envelope, and its check."""
    profile = crypto.get_profile(profile_name)
    cipher = crypto.ClientCipher(secret_context, profile)
    limits = crypto.EnvelopeLimits(layout.n_blocks, profile.max_block_bytes)
    envelope = crypto.model_from_bytes(model, limits)
    values = np.stack([cipher.decrypt_block(b.data) for b in envelope.blocks])
    return values, crypto.check_model(layout, profile, values)


@contextmanager
def _services(
    work: Path, admin_key: str, profile: str
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    with ExitStack() as stack:
        keyauth = stack.enter_context(
            keyauth_service(work / "keyauth", admin_key, work / "keyauth.log", profile=profile)
        )
        server = stack.enter_context(
            server_service(
                keyauth.url,
                work / "server",
                work / "server.log",
                uvicorn_args=("--log-level", "warning"),
                client_updates_per_minute="0",
                rotation_timeout="20",
            )
        )
        yield keyauth, server


def _wait(what: str, timeout: float, poll: float = 0.05) -> Iterator[None]:
    deadline = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(poll)


def run_rotation(
    work: Path,
    *,
    profile: str = "test-n2048",
    target_updates: int = 40,
    rotate_at: int = 10,
    buffer_size: int = 1,
    kill_after_request: bool = False,
    step_delay: float = 0.05,
    timeout: float = 300,
) -> RotationRun:
    """Train job ``heart`` with ``SITES`` to ``target_updates``; at version ``rotate_at``
    revoke the last site and rotate the job's key (see the module's docstring)."""
    started = time.monotonic()
    admin_key = new_admin_key()
    with _services(work, admin_key, profile) as (keyauth, server):
        admin = ("--json",)
        spec = study_json(
            JOB,
            profile=profile,
            inputs=13,
            training={"lr": 0.05, "batch_size": 16},
            target_updates=target_updates,
            buffer_size=buffer_size,
        )
        create_job(server.url, admin_token(keyauth.url, admin_key), spec)
        for site in SITES:
            enroll_hospital(keyauth.url, admin_key, site, work / site)
        # holds epoch 1's key, and fetches epoch 2's at the end: reads what the job serves
        observer = enroll_party(keyauth.url, admin_key, "observer")
        viewer = viewer_token(keyauth.url, admin_key)
        recorders = {site: Recorder() for site in SITES}
        outcomes: dict[str, str] = {}

        def train(site: str) -> None:
            settings = hospital_settings(
                work / site,
                keyauth.url,
                server.url,
                site,
                integrity_poll=0.1,
                step_delay=step_delay,  # training takes time, as at a hospital
            )
            try:
                with Runner(settings, reporter=recorders[site]) as runner:
                    outcomes[site] = runner.run().stop_reason
            except AuthError as exc:
                outcomes[site] = exc.code or "auth"

        def status() -> dict[str, Any]:
            return read_status(server.url, viewer, JOB)

        with ThreadPoolExecutor(max_workers=len(SITES)) as pool:
            runs = [pool.submit(train, site) for site in SITES]
            for _ in _wait(f"version {rotate_at}", timeout):
                if status()["version"] >= rotate_at:
                    break
            revoked_dir = work / SITES[-1]
            revoked = LocalState(revoked_dir).load_credential()
            answer = httpx.delete(
                f"{keyauth.url}/v1/clients/{revoked.client_id}",
                headers={"X-Admin-Key": admin_key},
            )
            answer.raise_for_status()
            time.sleep(1.0)  # the server refreshes the revocation list every 0.5 s
            requested = time.monotonic()
            run_admin(keyauth.url, server.url, admin_key, "job", "rotate", JOB, *admin)
            commanded = time.monotonic()
            restarted: tuple[int, bytes] | None = None
            if kill_after_request:
                server.kill()
                server.start()
                restarted = (int(status()["key_epoch"]), _model(server.url, observer))
                # A rotation under way is not durable: on epoch 1 still, the administrator
                # rotates again, once the hospitals act so that the server sees whom to ask.
                for _ in _wait("the rotation asked again", timeout, poll=0.2):
                    if restarted[0] != 1:
                        break
                    try:
                        run_admin(
                            keyauth.url,
                            server.url,
                            admin_key,
                            "job",
                            "rotate",
                            JOB,
                            "--no-new-keys",
                        )
                        break
                    except ServiceError as exc:  # refused until a hospital is seen
                        if "rotation_refused" not in str(exc):
                            raise
            for _ in _wait("the job under its new key epoch", timeout):
                now = status()
                if now["key_epoch"] == 2:
                    rotated = time.monotonic()
                    rotated_version = int(now["rotations"]["done"][-1]["version"])
                    break
            for run in runs:
                run.result(timeout=timeout)
        final = status()
        observer = _refreshed(keyauth.url, observer)
        layout = crypto.ModelLayout.from_json(
            httpx.get(job_url(server.url, JOB, "/layout"), headers=observer.auth).content
        )
        new_context = httpx.get(
            f"{keyauth.url}/v1/keys/secret-context", params={"epoch": 2}, headers=observer.auth
        )
        new_context.raise_for_status()
        final_model = _model(server.url, observer)
        token_answer = httpx.post(
            f"{keyauth.url}/v1/token",
            json={"client_id": revoked.client_id, "client_secret": revoked.client_secret},
        ).status_code
        stored = LocalState(revoked_dir).load_secret_context(1)
        assert stored is not None
    return RotationRun(
        status=final,
        events={site: r.events for site, r in recorders.items()},
        outcomes=outcomes,
        rotation_seconds=rotated - requested,
        command_seconds=commanded - requested,
        rotated_at_version=rotated_version,
        revoked_secret_context=stored[1],
        revoked_token_answer=token_answer,
        final_model=final_model,
        old_context=observer.secret_context,
        new_context=new_context.content,
        layout=layout,
        restarted=restarted,
        seconds=time.monotonic() - started,
    )
