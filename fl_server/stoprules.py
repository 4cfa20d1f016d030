"""A job's stop rules (the spec's ``[stop]``) against its progress: which are met, how far."""

from __future__ import annotations

from collections.abc import Mapping

import hefl_study
from fl_server.domain import PooledMetric, StopReason, StopRuleView

__all__ = ["evaluate_stop_rules", "first_met"]


def evaluate_stop_rules(
    stop: hefl_study.StopSpec,
    *,
    updates_applied: int,
    training_seconds: float,
    pooled: Mapping[str, PooledMetric],
) -> tuple[StopRuleView, ...]:
    """Each rule the spec sets, in the order they are checked, with its progress.

    The metric rule counts once ``min_sites`` clients' latest reports hold the metric;
    before that it is not met, whatever the pooled value.
    """
    rules = []
    if stop.target_updates is not None:
        rules.append(
            StopRuleView(
                rule=StopReason.TARGET_UPDATES,
                target=stop.target_updates,
                progress=updates_applied,
                met=updates_applied >= stop.target_updates,
            )
        )
    if stop.max_wall_seconds is not None:
        rules.append(
            StopRuleView(
                rule=StopReason.MAX_WALL_SECONDS,
                target=stop.max_wall_seconds,
                progress=training_seconds,
                met=training_seconds >= stop.max_wall_seconds,
            )
        )
    if stop.metric is not None and stop.value is not None:
        found = pooled.get(stop.metric)
        sites = found.sites if found is not None else 0
        rules.append(
            StopRuleView(
                rule=StopReason.TARGET_METRIC,
                target=stop.value,
                progress=found.value if found is not None else None,
                met=found is not None
                and sites >= stop.min_sites
                and hefl_study.metric_reached(stop.metric, stop.value, found.value),
                metric=stop.metric,
                sites=sites,
                min_sites=stop.min_sites,
            )
        )
    return tuple(rules)


def first_met(rules: tuple[StopRuleView, ...]) -> StopReason | None:
    """The first rule met, in checking order; ``None`` while none is."""
    return next((rule.rule for rule in rules if rule.met), None)
