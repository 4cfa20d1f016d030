"""The asynchronous weighting policies side by side in simulation: how the default was chosen.

Run: ``python -m benchmarks.weighting [--quick] [--policy NAME ...]``. For each policy
(staleness function, data weighting, server step) it runs ``benchmarks.suite._sim.
async_events`` (plaintext, simulated clock, fl_server's own ``UpdateWeigher``) on the
Fed-Heart-Disease cases of ``python -m benchmarks.flower``: a 5x straggler, none, and a
big slow hospital, for seeds 0-2, and reports the median final accuracy, the peak, and the
big hospital's accuracy on its own rows. The synchronous FedAvg these are held against is
the ``sim`` row of ``python -m benchmarks.flower`` (Flower's models equal it per seed).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks._report import format_table, write_json
from benchmarks.flower._compare import HEART_TRAIN, PLANS, scenarios
from benchmarks.flower._data import load_sites
from benchmarks.suite._sim import async_events
from fl_client.models import resolve_model
from fl_server.staleness import make_staleness_policy
from fl_server.weighting import DataWeighting, StepSchedule, UpdateWeigher


@dataclass(frozen=True)
class Policy:
    name: str
    staleness: str
    weighting: str
    schedule: str

    def weigher(self) -> UpdateWeigher:
        a = {"polynomial": 0.5, "hinge": 10.0}.get(self.staleness, 1.0)
        staleness = make_staleness_policy(
            self.staleness,  # type: ignore[arg-type]
            a=a,
            b=4,
            mixing=1.0,
            max_staleness=64,
        )
        return UpdateWeigher(
            staleness,
            DataWeighting(self.weighting, 4.0),  # type: ignore[arg-type]
            StepSchedule(self.schedule, 50),  # type: ignore[arg-type]
        )


POLICIES = [
    Policy("before (format 1)", "polynomial", "uniform", "constant"),
    Policy("polynomial + data", "polynomial", "data", "constant"),
    Policy("polynomial + data + inverse-sqrt", "polynomial", "data", "inverse-sqrt"),
    Policy("constant + data", "constant", "data", "constant"),
    Policy("constant + data + inverse-sqrt (default)", "constant", "data", "inverse-sqrt"),
]


def run(policy: Policy, seeds: list[int], mode: str) -> dict[str, Any]:
    factory = resolve_model("logistic")
    plan = PLANS[mode]
    out: dict[str, Any] = {}
    for scenario in scenarios():
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.weighting")
    parser.add_argument("--quick", action="store_true", help="seed 0 only, 40 updates")
    parser.add_argument("--policy", action="append", help="run only these (by name)")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [0] if args.quick else [0, 1, 2]
    chosen = [p for p in POLICIES if not args.policy or p.name in args.policy]
    results = {p.name: run(p, seeds, "quick" if args.quick else "full") for p in chosen}
    rows = []
    for name, r in results.items():
        row: list[Any] = [name]
        for key in ("straggler", "no-straggler", "big-slow"):
            row.append(f"{100 * statistics.median(r[key]['final']):.2f}")
        row.append(f"{100 * statistics.median(r['big-slow']['last_site']):.2f}")
        rows.append(row)
    print(
        format_table(
            [
                "policy",
                "final % straggler",
                "final % no straggler",
                "final % big-slow",
                "big hospital's own rows %",
            ],
            rows,
        )
    )
    payload = {"seeds": seeds, "results": results, "policies": [vars(p) for p in chosen]}
    path = write_json("weighting", payload, args.out_dir)
    print(f"written: {path}")
    return payload


if __name__ == "__main__":
    main()
