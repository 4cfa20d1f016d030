"""The command line of the hefl-versus-Flower comparison."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.flower._compare import SYSTEMS, compare, rerender
from benchmarks.flower._deploy import venv_problem

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.flower",
        description="hefl's live async run and a deployed Flower FedAvg run side by side on "
        "Fed-Heart-Disease (needs the Flower venv: benchmarks/flower/setup.sh). Writes "
        "flower.json, flower.md and flower_accuracy_vs_time.png; every finished run is "
        "kept under runs/, and a second invocation resumes.",
    )
    parser.add_argument("--quick", action="store_true", help="1 repetition of 40 updates")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the in-test size
    parser.add_argument("--fresh", action="store_true", help="rerun the runs kept under runs/")
    parser.add_argument(
        "--kept",
        action="store_true",
        help="run nothing: report the runs kept under runs/ (an interrupted comparison)",
    )
    parser.add_argument(
        "--rerender", action="store_true", help="rewrite flower.md and the plot from flower.json"
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="which systems run, comma-separated, of "
        + ", ".join(SYSTEMS)
        + " (default: all); the others' runs kept under runs/ are still reported",
    )
    args = parser.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    if args.rerender:
        rerender(args.out_dir)
        return 0
    # only Flower's runs need its virtual environment
    problem = None if args.kept or "flower" not in systems else venv_problem()
    if problem:
        print(f"python -m benchmarks.flower: {problem}", file=sys.stderr)
        return 2
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    report = compare(mode, args.out_dir, fresh=args.fresh, kept_only=args.kept, systems=systems)
    print((args.out_dir / "flower.md").read_text())
    print(f"written: {args.out_dir / 'flower.json'}; {report['elapsed_s']:.0f} s")
    return 0
