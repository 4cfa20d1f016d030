"""What a job takes from its study spec: weighing, rounds, buffer, training slots, stop rules."""

from __future__ import annotations

from dataclasses import dataclass

import hefl_study
from fl_server.errors import SpecInvalidError
from fl_server.parsing import client_input
from fl_server.staleness import StalenessPolicy, make_staleness_policy
from fl_server.weighting import DataWeighting, StepSchedule, UpdateWeigher

__all__ = ["JobConfig", "spec_from_body"]


def spec_from_body(body: bytes) -> hefl_study.StudySpec:
    """The study spec of a request body (its canonical JSON, or any JSON of a spec).

    Raises
    ------
    SpecInvalidError
        Not UTF-8, not JSON, or a spec ``hefl_study`` refuses: every problem, located.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecInvalidError([("spec", "the body is not UTF-8 text")]) from None
    with client_input("the spec", lambda why: SpecInvalidError([("spec", why)])):
        try:
            return hefl_study.spec_from_json(text)
        except hefl_study.SpecError as exc:
            raise SpecInvalidError([(p.location, p.message) for p in exc.problems]) from None


@dataclass(frozen=True)
class JobConfig:
    """A job's own settings, all from its spec (``[server]`` and ``[stop]``).

    The process's settings (``ServerSettings``: limits, slot lease time, rate limits,
    queue size, checkpoints) apply to every job alike.
    """

    spec: hefl_study.StudySpec
    policy: StalenessPolicy
    buffer_size: int
    max_training: int
    weigher: UpdateWeigher
    round_clients: int | None = None

    @classmethod
    def from_spec(cls, spec: hefl_study.StudySpec) -> JobConfig:
        server = spec.server
        policy = make_staleness_policy(
            server.staleness,
            # hefl_study fills a and b for the kinds that have them; constant has neither.
            a=server.staleness_a if server.staleness_a is not None else 1.0,
            b=server.staleness_b if server.staleness_b is not None else 0,
            mixing=server.mixing,
            max_staleness=server.max_staleness,
        )
        weigher = UpdateWeigher(
            policy,
            DataWeighting(server.weighting, server.weighting_clip),
            StepSchedule(server.schedule, server.schedule_half),
        )
        if server.policy == "rounds":
            assert server.round_clients is not None  # hefl_study requires it
            # a round is the buffer of one version: it closes at its round_clients-th update
            return cls(
                spec,
                policy,
                server.round_clients,
                server.max_training,
                weigher,
                server.round_clients,
            )
        return cls(spec, policy, server.buffer_size, server.max_training, weigher)

    @property
    def rounds(self) -> bool:
        """Whether updates are taken in rounds (``fl_server.rounds``), not as they come."""
        return self.round_clients is not None

    @property
    def stop(self) -> hefl_study.StopSpec:
        return self.spec.stop

    @property
    def target_updates(self) -> int | None:
        """The job is done once this many updates are applied (``None``: no such rule)."""
        return self.spec.stop.target_updates
