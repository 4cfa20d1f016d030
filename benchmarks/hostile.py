"""Hostile runs against keyauth and fl_server under real uvicorn: bad input, kill -9, load, secrets.

Corrupted updates too (the integrity part).

``python -m benchmarks.hostile [--quick]`` prints a table per part and writes
``benchmarks/results/hostile.json``. The drivers live in ``harness/``; their short forms
run in ``tests/hostile/``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks._report import RESULTS_DIR, format_table, write_json
from harness.corpus import corpus_live
from harness.fuzz import fuzz_live
from harness.integrity import CORRUPTIONS, run_study
from harness.keyauth_crash import crash_keyauth
from harness.load import load
from harness.server_crash import crash_server
from harness.slow import slow_clients


@contextmanager
def _workdir(base: Path | None) -> Iterator[Path]:
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
        yield base
        return
    with tempfile.TemporaryDirectory(prefix="hefl-hostile-") as tmp:
        yield Path(tmp)


def _one_row(cells: list[tuple[str, Any]]) -> str:
    """A table of one row from its (column, value) pairs."""
    return format_table([column for column, _ in cells], [[value for _, value in cells]])


def _corpus(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    corpus = corpus_live(work / "corpus", args.seed)
    print("## Hostile update envelopes (live uvicorn)\n")
    print(
        _one_row(
            [
                ("inputs", corpus["tried"]),
                ("4xx", sum(v for s, v in corpus["by_status"].items() if 400 <= s < 500)),
                ("5xx", sum(v for s, v in corpus["by_status"].items() if s >= 500)),
                ("failures", len(corpus["failures"])),
                ("model bytes unchanged", corpus["model_bytes_unchanged"]),
                ("version after", corpus["version_after"]),
            ]
        )
    )
    print("\ncodes:", corpus["by_code"], "\n")
    return corpus


def _fuzz(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    fuzzed = fuzz_live(work / "fuzz", 100 if args.quick else 500)
    print("## OpenAPI fuzzing (schemathesis strategies, live uvicorn)\n")
    print(
        format_table(
            ["run", "operations", "calls"],
            [[k, fuzzed["operations"][k], v] for k, v in fuzzed["calls"].items()],
        )
    )
    print(f"\nno 5xx; model bytes unchanged: {fuzzed['model_bytes_unchanged']}\n")
    return fuzzed


def _crash(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    crash = crash_server(work / "crash", kills=5 if args.quick else 20, seed=args.seed)
    print("## fl_server kill -9 under load\n")
    print(
        _one_row(
            [
                ("kills", crash.kills),
                ("acknowledged", crash.acknowledged),
                ("applied (version)", crash.applied_version),
                ("applied (status)", crash.applied_count),
                ("duplicates", crash.duplicates_answered),
                ("retries", crash.retries),
                ("max error", crash.max_error),
                ("bound", crash.error_bound),
                ("s", crash.seconds),
            ]
        )
    )
    return crash.__dict__


def _kcrash(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    kcrash = crash_keyauth(work / "kcrash", kills=5 if args.quick else 20, seed=args.seed)
    print("\n## keyauth kill -9 during enrollment\n")
    print(
        _one_row(
            [
                ("kills", kcrash.kills),
                ("enrolled (201/200)", kcrash.enrolled_acknowledged),
                ("no answer", kcrash.answers_lost),
                ("201 on retry", kcrash.completed_on_retry),
                ("re-delivered (200)", kcrash.redelivered),
                ("orphaned", kcrash.orphaned),
                ("listed", kcrash.clients_listed),
                ("unexplained", kcrash.unexplained_clients),
                ("credentials working", kcrash.credentials_working),
                ("tokens dead once confirmed", kcrash.tokens_dead_after_confirmation),
                ("secret context unchanged", kcrash.secret_context_unchanged),
            ]
        )
    )
    return kcrash.__dict__


def _load(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    loaded = load(work / "load", clients=50, seconds=60 if args.quick else 300)
    print("\n## Load: 50 clients, 1e5 parameters\n")
    print(
        _one_row(
            [
                ("s", loaded.seconds),
                ("requests", loaded.requests),
                ("req/s", loaded.rps),
                ("updates/s", loaded.updates_per_s),
                ("p50 ms", loaded.p50_ms),
                ("p99 ms", loaded.p99_ms),
                ("5xx", loaded.server_5xx),
                ("transport err", loaded.transport_errors),
                ("RSS first MB", loaded.rss_first_mb),
                ("RSS after 5 % MB", loaded.rss_warm_mb),
                ("RSS last MB", loaded.rss_last_mb),
                ("RSS max MB", loaded.rss_max_mb),
            ]
        )
    )
    print("\nstatuses:", loaded.by_status)
    return loaded.__dict__


def _slow(work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    slow = [
        slow_clients(
            work / f"slow-{service}-{protocol}",
            service=service,
            protocol=protocol,
            connections=500 if args.quick else 2000,
            hold=15 if args.quick else 30,
        )
        for service in ("keyauth", "fl_server")
        for protocol in ("bare", "deadlines")
    ]
    print("\n## Slow clients: requests that never finish\n")
    print(
        format_table(
            [
                "service",
                "uvicorn protocol",
                "opened",
                "held for s",
                "open: in headers",
                "open: in body",
                "healthz p50 ms",
                "healthz failed",
                "RSS before / held MB",
            ],
            [
                [
                    r.service,
                    r.protocol,
                    r.opened,
                    r.held_after_s,
                    f"{r.still_open_in_headers} / {r.opened // 2}",
                    f"{r.still_open_in_body} / {r.opened - r.opened // 2}",
                    r.legit_p50_ms,
                    r.legit_failures,
                    f"{r.rss_before_mb:.0f} / {r.rss_held_mb:.0f}",
                ]
                for r in slow
            ],
        )
    )
    return [r.__dict__ for r in slow]


def _detected(row: dict[str, Any]) -> str:
    """Whether a hospital reported the corruption, and how many versions after the bad one."""
    if not row["detected"]:
        return "0"
    return f"{row['detected']} (+{row['first_failed_version'] - row['bad_version']})"


def _integrity(work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    target = 16 if args.quick else 24
    rows = [
        run_study(
            work / f"integrity-{kind}-k{k}", kind, buffer_size=k, target_updates=target
        ).figures()
        for k in (1, 3)
        for kind in CORRUPTIONS
    ]
    print("\n## Corrupted updates: found, removed exactly, attacker quarantined\n")
    print(
        format_table(
            [
                "case",
                "K",
                "injected",
                "detected (first failed - bad version)",
                "repaired",
                "removed",
                "quarantined",
                "versions lost",
                "kept after the bad one",
                "injection to repaired model s",
                "max abs error vs twin (repaired / final)",
                "state",
            ],
            [
                [
                    CORRUPTIONS[r["kind"]],
                    r["buffer_size"],
                    r["injected"],
                    _detected(r),
                    r["repaired"],
                    r["removed"],
                    ", ".join(r["quarantined"]),
                    r["versions_lost"],
                    r["kept_after_bad"],
                    r["injection_to_repair_s"],
                    f"{r['repaired_max_abs']} / {r['final_max_abs']}",
                    f"{r['state']} at {r['final_version']}",
                ]
                for r in rows
            ],
        )
    )
    return rows


# Each part, in the order they run: (--parts name, key in the JSON, run and print it).
_RUNS: tuple[tuple[str, str, Callable[[Path, argparse.Namespace], Any]], ...] = (
    ("corpus", "corpus", _corpus),
    ("fuzz", "fuzz", _fuzz),
    ("crash", "crash_server", _crash),
    ("kcrash", "crash_keyauth", _kcrash),
    ("load", "load", _load),
    ("slow", "slow", _slow),
    ("integrity", "integrity", _integrity),
)
PARTS = tuple(part for part, _, _ in _RUNS)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 s of load, fewer kills")
    parser.add_argument("--work", type=Path, help="keep logs and state here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="comma-separated subset; a subset is merged into the existing JSON",
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    results: dict[str, Any] = {"quick": args.quick}
    previous = RESULTS_DIR / "hostile.json"
    if parts != set(PARTS) and previous.exists():
        kept = json.loads(previous.read_text())
        results = {k: v for k, v in kept.items() if k not in ("machine", "when")}
    with _workdir(args.work) as work:
        for part, key, run in _RUNS:
            if part in parts:
                results[key] = run(work, args)
    out = write_json("hostile", results)
    print(f"\nwrote {out}")
    return results


if __name__ == "__main__":
    main()
