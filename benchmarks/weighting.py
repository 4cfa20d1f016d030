"""The asynchronous weighting policies side by side in simulation: how the default was chosen.

Run: ``python -m benchmarks.weighting [--quick] [--explore] [--policy NAME ...]``. For each
policy (staleness function, data weighting, server step) it runs ``benchmarks.suite._sim.
async_events`` (plaintext, simulated clock, fl_server's own ``UpdateWeigher``) on the
Fed-Heart-Disease cases of ``python -m benchmarks.flower``: a 5x straggler, none, and a
big slow hospital, for seeds 0-2, and reports the median final accuracy and the big
hospital's accuracy on its own rows. The synchronous FedAvg these are held against is
the ``sim`` row of ``python -m benchmarks.flower`` (Flower's models equal it per seed).

``--adaptation`` runs the default policy on the big-slow case, then adapts the final
model to the big hospital's rows (``fl_client.adaptation.adapt_model``, the code of
``hefl-client export --adapt-epochs``) for 2, 5, 10 and 20 epochs of the local training,
and reports its own rows beside training alone: how ``benchmarks.flower``'s
``ADAPT_EPOCHS`` was chosen.

``--explore`` runs what was tried for issue 14's big-slow goal (the big hospital's own
rows no worse than training alone) instead: a weight cap above 1, other clips and step
schedules, data shares sharpened to ``p_i^gamma`` (weighers of this module, not the
server's; above 1 the weight is quantized as the server's integer multiplier would be),
and the big hospital alone with hefl's local training (updates of weight 1, no others).
"""

from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks._report import format_table, write_json
from benchmarks.flower._compare import HEART_TRAIN, PLANS, alone_accuracy, scenarios
from benchmarks.flower._data import load_sites
from benchmarks.suite._sim import async_events
from fl_client.adaptation import adapt_model
from fl_client.models import resolve_model
from fl_client.training import evaluate, load_shared
from fl_server.staleness import make_staleness_policy
from fl_server.weighting import ClientShare, DataWeighting, StepSchedule, UpdateWeigher

CASES = ("straggler", "no-straggler", "big-slow")


@dataclass(frozen=True)
class _SharpenedData(DataWeighting):
    """``data`` weighting with the shares ``p_i^gamma / sum_j p_j^gamma`` (gamma 1: the
    server's): gamma > 1 leans toward the hospitals with the most rows."""

    gamma: float = 1.0

    def factor(
        self, client_id: str, samples: int | None, known: Mapping[str, ClientShare]
    ) -> float:
        base = super().factor(client_id, samples, known)
        if self.gamma == 1.0 or not known:
            return base
        prior = known.get(client_id)
        shares = {k: s.samples for k, s in known.items()}
        shares[client_id] = samples if samples is not None else (prior.samples if prior else 1)
        total = sum(shares.values())
        p = {k: n / total for k, n in shares.items()}
        sharp = {k: v**self.gamma for k, v in p.items()}
        # the server's factor is p_i * g_i: swap p_i for its sharpened share
        return float(base / p[client_id] * sharp[client_id] / sum(sharp.values()))


@dataclass(frozen=True)
class _CappedWeigher(UpdateWeigher):
    """``UpdateWeigher`` with ``min(cap, ...)`` instead of ``min(1, ...)``."""

    cap: float = 1.0

    def weight(
        self,
        *,
        staleness: int,
        client_id: str,
        samples: int | None,
        known: Mapping[str, ClientShare],
        applied: int,
    ) -> float | None:
        raw = self.uncapped(
            staleness=staleness, client_id=client_id, samples=samples, known=known, applied=applied
        )
        return None if raw is None else min(self.cap, raw)


@dataclass(frozen=True)
class Policy:
    name: str
    staleness: str
    weighting: str
    schedule: str
    clip: float = 4.0
    half: int = 50
    cap: float = 1.0
    gamma: float = 1.0

    def weigher(self) -> UpdateWeigher:
        a = {"polynomial": 0.5, "hinge": 10.0}.get(self.staleness, 1.0)
        staleness = make_staleness_policy(
            self.staleness,  # type: ignore[arg-type]
            a=a,
            b=4,
            mixing=1.0,
            max_staleness=64,
        )
        data = (
            _SharpenedData(self.weighting, self.clip, self.gamma)  # type: ignore[arg-type]
            if self.gamma != 1.0
            else DataWeighting(self.weighting, self.clip)  # type: ignore[arg-type]
        )
        schedule = StepSchedule(self.schedule, self.half)  # type: ignore[arg-type]
        if self.cap != 1.0:
            return _CappedWeigher(staleness, data, schedule, self.cap)
        return UpdateWeigher(staleness, data, schedule)


POLICIES = [
    Policy("before (format 1)", "polynomial", "uniform", "constant"),
    Policy("polynomial + data", "polynomial", "data", "constant"),
    Policy("polynomial + data + inverse-sqrt", "polynomial", "data", "inverse-sqrt"),
    Policy("constant + data", "constant", "data", "constant"),
    Policy("constant + data + inverse-sqrt (default)", "constant", "data", "inverse-sqrt"),
]

_DEFAULT = POLICIES[-1]
EXPLORED = [
    Policy("default (cap 1, clip 4, half 50)", "constant", "data", "inverse-sqrt"),
    Policy("cap 2", "constant", "data", "inverse-sqrt", cap=2.0),
    Policy("cap 4", "constant", "data", "inverse-sqrt", cap=4.0),
    Policy("cap 2, clip 2", "constant", "data", "inverse-sqrt", clip=2.0, cap=2.0),
    Policy("cap 2, clip 8", "constant", "data", "inverse-sqrt", clip=8.0, cap=2.0),
    Policy("cap 2, half 20", "constant", "data", "inverse-sqrt", half=20, cap=2.0),
    Policy("cap 2, half 100", "constant", "data", "inverse-sqrt", half=100, cap=2.0),
    Policy("cap 2, constant step", "constant", "data", "constant", cap=2.0),
    Policy("cap 2, shares p^2", "constant", "data", "inverse-sqrt", cap=2.0, gamma=2.0),
    Policy("cap 2, shares p^3", "constant", "data", "inverse-sqrt", cap=2.0, gamma=3.0),
]
"""What was tried for the big-slow goal (``--explore``): cap, clip, step, sharpened shares."""


def run(policy: Policy, seeds: list[int], mode: str, cases: tuple[str, ...]) -> dict[str, Any]:
    factory = resolve_model("logistic")
    plan = PLANS[mode]
    out: dict[str, Any] = {}
    for scenario in scenarios():
        if scenario.key not in cases:
            continue
        datas = load_sites(scenario.data, scenario.sites)
        curves = [
            async_events(
                datas,
                plan.updates_of(scenario),
                factory=factory,
                seeds=[seed] * len(datas),
                config=HEART_TRAIN,
                step_delays=list(scenario.delays),
                weigher=policy.weigher(),
            )
            for seed in seeds
        ]
        out[scenario.key] = {
            "final": [c.final for c in curves],
            "peak": [max(c.accuracy) for c in curves],
            # the last hospital is the slow one (the big one in the big-slow case)
            "last_site": [c.per_site[-1] for c in curves],
        }
    return out


def alone(seeds: list[int], updates: int) -> list[float]:
    """The big-slow case's big hospital trained alone with hefl's local training: each
    update of 10 SGD steps applied at weight 1, ``updates`` of them; its own rows."""
    factory = resolve_model("logistic")
    scenario = next(s for s in scenarios() if s.key == "big-slow")
    big = load_sites(scenario.data, scenario.sites)[-1:]
    staleness = make_staleness_policy("constant", a=1.0, b=0, mixing=1.0, max_staleness=64)
    weigher = UpdateWeigher(staleness, DataWeighting("uniform"), StepSchedule("constant"))
    return [
        async_events(
            big,
            updates,
            factory=factory,
            seeds=[seed],
            config=HEART_TRAIN,
            step_delays=[0.0],
            weigher=weigher,
        ).per_site[0]
        for seed in seeds
    ]


ADAPTATION_EPOCHS = (2, 5, 10, 20)


def adaptation(seeds: list[int], mode: str) -> dict[str, list[float]]:
    """The big-slow case with the default policy; the big hospital's own rows with the
    final model, adapted for each of ``ADAPTATION_EPOCHS``, and alone (per seed)."""
    factory = resolve_model("logistic")
    scenario = next(s for s in scenarios() if s.key == "big-slow")
    datas = load_sites(scenario.data, scenario.sites)
    big = datas[-1]
    out: dict[str, list[float]] = {"shared": []}
    out.update({f"adapted_{e}": [] for e in ADAPTATION_EPOCHS})
    out["alone"] = []
    finals: list[Any] = []
    for seed in seeds:
        async_events(
            datas,
            PLANS[mode].updates_of(scenario),
            factory=factory,
            seeds=[seed] * len(datas),
            config=HEART_TRAIN,
            step_delays=list(scenario.delays),
            weigher=_DEFAULT.weigher(),
            on_end=lambda layout, blocks, models: finals.append((layout, blocks, models[-1])),
        )
        layout, blocks, model = finals[-1]
        load_shared(model, layout, blocks)
        out["shared"].append(evaluate(model, big.test).accuracy)
        for epochs in ADAPTATION_EPOCHS:
            done = adapt_model(
                copy.deepcopy(model), big, HEART_TRAIN, epochs, version=PLANS[mode].big_updates
            )
            assert done.after is not None  # the big hospital has held-out rows
            out[f"adapted_{epochs}"].append(float(done.after["accuracy"]))
        out["alone"].append(alone_accuracy(factory, big, seed))
    return out


def _median(values: list[float]) -> str:
    return f"{100 * statistics.median(values):.2f}"


def _seeds(values: list[float]) -> str:
    return " / ".join(f"{100 * v:.2f}" for v in values)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.weighting")
    parser.add_argument("--quick", action="store_true", help="seed 0 only, 40 updates")
    parser.add_argument(
        "--explore", action="store_true", help="what was tried for the big-slow goal"
    )
    parser.add_argument(
        "--adaptation",
        action="store_true",
        help="the big hospital's model adapted at home for 2-20 epochs",
    )
    parser.add_argument("--policy", action="append", help="run only these (by name)")
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated, of {', '.join(CASES)} [all]",
    )
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [0] if args.quick else [0, 1, 2]
    mode = "quick" if args.quick else "full"
    if args.adaptation:
        adapted = adaptation(seeds, mode)
        names = {"shared": "the shared model (default policy)", "alone": "alone (Adam, 50 ep.)"}
        names.update({f"adapted_{e}": f"adapted at home, {e} epochs" for e in ADAPTATION_EPOCHS})
        print(
            format_table(
                ["big hospital's model", "own rows % (median)", "per seed"],
                [[names[k], _median(v), _seeds(v)] for k, v in adapted.items()],
            )
        )
        path = write_json("weighting-adaptation", {"seeds": seeds, **adapted}, args.out_dir)
        print(f"written: {path}")
        return dict(adapted)
    listed = EXPLORED if args.explore else POLICIES
    chosen = [p for p in listed if not args.policy or p.name in args.policy]
    cases = tuple(c for c in CASES if c in args.cases.split(","))
    results = {p.name: run(p, seeds, mode, cases) for p in chosen}
    rows = []
    for name, r in results.items():
        row: list[Any] = [name]
        row += [_median(r[key]["final"]) if key in r else "—" for key in CASES]
        big = r.get("big-slow")
        row += [_median(big["last_site"]), _seeds(big["last_site"])] if big else ["—", "—"]
        rows.append(row)
    payload: dict[str, Any] = {
        "seeds": seeds,
        "results": results,
        "policies": [vars(p) for p in chosen],
    }
    if args.explore:
        big_updates = PLANS[mode].updates_of(next(s for s in scenarios() if s.key == "big-slow"))
        # as many updates as sync FedAvg's rounds give it (one a round), and all of them
        for updates in (big_updates // 3, big_updates):
            own = alone(seeds, updates)
            payload[f"alone_{updates}"] = own
            rows.append(
                [f"big hospital alone, {updates} updates", "", "", "", _median(own), _seeds(own)]
            )
    print(
        format_table(
            [
                "policy",
                "final % straggler",
                "final % no straggler",
                "final % big-slow",
                "big hospital's own rows % (median)",
                "per seed",
            ],
            rows,
        )
    )
    path = write_json("weighting-explore" if args.explore else "weighting", payload, args.out_dir)
    print(f"written: {path}")
    return payload


if __name__ == "__main__":
    main()
