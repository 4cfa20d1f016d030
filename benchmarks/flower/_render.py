"""The side-by-side comparison as markdown tables and one plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks._report import format_table

ROWS = ("hefl", "hefl-rounds", "flower", "sim")
NAMES = {
    "hefl": "hefl async (live services)",
    "hefl-rounds": "hefl rounds (live services, round barrier)",
    "flower": "Flower FedAvg (deployed)",
    "sim": "sync FedAvg, in-process sim (extra row)",
}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _spread(s: dict[str, Any] | None, fmt: str = "{:.1f}", scale: float = 1.0) -> str:
    """``median [min-max]`` over the repetitions, ``not reached`` where the median run
    never got there, and how many did when some did not."""
    if not s or s["n"] == 0:
        return "—"
    if s["median"] is None:
        text = "not reached"
    else:
        text = fmt.format(scale * s["median"])
        if s["n"] > 1 and s["min"] is not None:
            top = "∞" if s["max"] is None else fmt.format(scale * s["max"])
            text += f" [{fmt.format(scale * s['min'])}-{top}]"
    if s["reached"] < s["n"]:
        text += f" ({s['reached']}/{s['n']} reached)"
    return text


def _training(config: dict[str, Any]) -> str:
    """``10 steps of sgd (lr 0.01, batch 16)`` from a TrainConfig's fields."""
    amount = f"{config['steps']} steps" if config.get("steps") else f"{config['epochs']} epochs"
    return f"{amount} of {config['optimizer']} (lr {config['lr']}, batch {config['batch_size']})"


def _secs(x: float | None) -> str:
    return "not reached" if x is None else f"{x:.1f} s"


def _met(flag: bool) -> str:
    return "**met**" if flag else "**not met**"


def _round_note(summary: dict[str, Any]) -> list[str]:
    flower = summary.get("flower", {})
    if "round_s" not in flower:
        return []
    text = (
        f"A Flower round took {_spread(flower['round_s'])} s (median time between two global "
        "models)"
    )
    if flower["clientapp_import_hefl_s"]["median"] is not None:
        text += (
            f", of which each ClientApp process spent {_spread(flower['clientapp_import_hefl_s'])}"
            " s importing hefl's data loader and training code (fl_client's package, crypto's "
            "TenSEAL among it) after torch and flwr"
        )
    return [text + ".", ""]


def _scenario_tables(report: dict[str, Any], key: str) -> list[str]:
    summary = report["summary"].get(key, {})
    if not summary:
        return []
    title = next(s["title"] for s in report["scenarios"] if s["key"] == key)
    delays = next(
        dict(zip(s["sites"], s["delays"], strict=True))
        for s in report["scenarios"]
        if s["key"] == key
    )
    present = [r for r in ROWS if r in summary]
    lines = [
        f"#### {title}",
        "",
        "Per-step delays: " + ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in delays.items()) + ".",
        "",
        format_table(
            [
                "system",
                "reps",
                "client updates",
                "final accuracy %",
                "all clients active at (s)",
                "last update at (s)",
                "bytes up / update",
                "bytes down / update",
            ],
            [
                [
                    NAMES[r],
                    summary[r]["repetitions"],
                    summary[r]["client_updates"][0],
                    _spread(summary[r]["final_accuracy"], "{:.2f}", 100),
                    _spread(summary[r]["all_active_s"]),
                    _spread(summary[r]["end_s"]),
                    _spread(summary[r].get("bytes_up_per_update"), "{:,.0f}"),
                    _spread(summary[r].get("bytes_down_per_update"), "{:,.0f}"),
                ]
                for r in present
            ],
        ),
        "",
        *_round_note(summary),
        "Time to target (s): strict clock / after every client was active.",
        "",
        format_table(
            ["target", *(NAMES[r] for r in present)],
            [
                [
                    f"{100 * t['level']:.1f}% ({t['factor']} x pooled)",
                    *(
                        f"{_spread(summary[r]['targets'][i]['strict_s'])} / "
                        f"{_spread(summary[r]['targets'][i]['after_all_active_s'])}"
                        for r in present
                    ),
                ]
                for i, t in enumerate(summary[present[0]]["targets"])
            ],
        ),
        "",
    ]
    return lines


def render(report: dict[str, Any], image_dir: str = "") -> str:
    """The comparison in markdown; ``image_dir`` prefixes the plot's path."""
    st = report["settings"]
    fl = st["flower"]
    g = report["goals"]
    out = [
        "### Flower side by side (issue 14, item 2)",
        "",
        f"Reported {report['when']} ({report['mode']} mode; the runs took "
        f"{report.get('runs_wall_s', report['elapsed_s']) / 60:.0f} minutes), "
        f"flwr {report['flwr']}. {st['repetitions']} repetition(s): seed r gives both "
        "systems the same initial model and batch orders; same hospitals and split, model "
        f"({st['model']}), local training {_training(st['local_training'])}. Pooled (centralized) "
        f"accuracy {_pct(report['pooled_accuracy'])}%. Cells: median [min-max] over the "
        "repetitions.",
        "",
        "- **Strict clock.** hefl: from launching the hospitals' `fl_client train` "
        "processes (keyauth and fl_server up, job created, hospitals enrolled); it includes "
        "their start-up and the initial model's upload. Flower: from invoking `flwr run` "
        "(SuperLink and SuperNodes up and registered, as long-running deployments are); it "
        "includes building and submitting the FAB, the ServerApp's start and every poll. "
        "Accuracy: every model version hefl published (downloaded during the run, decrypted "
        "afterwards) and every round's global model Flower's ServerApp wrote, evaluated "
        "afterwards with the same code on all test splits.",
        "- **After all active.** Counted from the moment every client had an update applied "
        "(hefl: the server's status; Flower: the end of round 1). The in-process sync row "
        "is on a simulated clock (a round = its slowest client's measured compute + steps "
        "x delay): no HTTP, no processes.",
        "- **Bytes.** Every client reaches its server through a loopback relay that counts "
        "the TCP payload both ways (HTTP headers, polling and heartbeats included), divided "
        "by the client updates applied. hefl's token requests to keyauth are not counted; "
        "its CKKS update is one 4,096-slot block for this 14-parameter model.",
        "- **Flower settings.** FedAvg, "
        + ", ".join(f"{n} rounds ({key})" for key, n in fl["rounds"].items())
        + ", all hospitals every round "
        f"(fraction_train {fl['fraction_train']}, min_train_nodes = min_available_nodes = "
        f"the number of hospitals), no client-side evaluation (fraction_evaluate "
        f"{fl['fraction_evaluate']}), {fl['transport']}, isolation {fl['isolation']}. "
        f"Polling in flwr {report['flwr']}: SuperNode pull every "
        f"{fl['supernode_pull_interval_s']:.0f} s when idle, ServerApp Grid pull every "
        f"{fl['serverapp_grid_pull_interval_s']:.0f} s, SuperExec task poll every "
        f"{fl['superexec_task_poll_interval_s']:.0f} s, {fl['clientapp_process']}. None of "
        "these is a documented setting, so Flower runs as deployed, with its defaults only.",
        "",
    ]
    for s in report["scenarios"]:
        out += _scenario_tables(report, s["key"])
    big = report["summary"].get("big-slow")
    if big:
        idx = len(next(s for s in report["scenarios"] if s["key"] == "big-slow")["sites"]) - 1
        own = [
            [NAMES[r], ", ".join(_pct(p[idx]) for p in big[r]["final_per_site"] if p)]
            for r in ROWS
            if r in big
        ]
        epochs = g.get("big_hospital_own_rows", {}).get("adapt_epochs")
        own += [
            [
                f"{NAMES[r]}, taken home adapted ({epochs} epochs, hefl-client export "
                "--adapt-epochs)",
                ", ".join(_pct(p[idx]) for p in big[r]["adapted_per_site"] if p),
            ]
            for r in ROWS
            if r in big and big[r].get("adapted_per_site")
        ]
        own.append(
            [
                f"{report['big_hospital']} alone (Adam lr 1e-3, batch 4, 50 epochs)",
                ", ".join(_pct(v) for v in report["big_alone_accuracy"].values()),
            ]
        )
        out += [
            f"{report['big_hospital']}'s own test rows (accuracy %, one value per "
            "repetition, final models):",
            "",
            format_table(["training", "accuracy on its own rows %"], own),
            "",
        ]
    out += ['Issue 14\'s "Done when" comparisons this run answers:', ""]
    for key in ("straggler", "no-straggler"):
        x = g.get(f"final_accuracy_{key}")
        if x:
            out.append(
                f"- hefl async final accuracy ≥ Flower FedAvg's, {key}: {_met(x['met'])} "
                f"({_pct(x['hefl'])}% vs {_pct(x['flower'])}%, medians"
                + (
                    "; Flower ran fewer repetitions: against the in-process sync FedAvg row "
                    "of the same seeds, whose models equal Flower's per seed)."
                    if x.get("against") == "sim"
                    else ")."
                )
            )
    x = g.get("faster_than_rounds")
    if x:
        out.append(
            "- With the straggler, hefl async ≥ 2x faster to 0.9 x pooled than hefl's round "
            f"policy (strict clock / after all active): {_met(x['met'])} "
            f"({_secs(x['hefl_s'])} vs {_secs(x['rounds_s'])} strict, "
            f"{_secs(x['hefl_warm_s'])} vs {_secs(x['rounds_warm_s'])} after all active; "
            "medians)."
        )
    x = g.get("faster_than_flower_strict")
    if x:
        out.append(
            "- With the straggler, hefl faster than Flower to 0.9 x pooled on the strict "
            f"clock: {_met(x['met'])} ({_secs(x['hefl_s'])} vs {_secs(x['flower_s'])}, medians)."
        )
    x = g.get("big_hospital_own_rows")
    if x:
        adapted = ""
        if x.get("adapted_met") is not None:
            adapted = (
                f"; with the model it takes home adapted to its rows ({x['adapt_epochs']} "
                f"epochs) {_met(x['adapted_met'])} ({_pct(x.get('hefl_adapted'))}%)"
            )
        out.append(
            "- Big slow hospital's own-row accuracy no worse than training alone: with the "
            f"shared model {_met(x['met'])} (hefl {_pct(x.get('hefl'))}%, Flower "
            f"{_pct(x.get('flower'))}%, alone {_pct(x['alone'])}%){adapted} (medians)."
        )
    out += [
        "",
        f"![accuracy vs wall clock, hefl and Flower]({image_dir}flower_accuracy_vs_time.png)",
    ]
    return "\n".join(out)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [s["key"] for s in report["scenarios"]]
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.5), squeeze=False)
    colors = {
        "hefl": "tab:blue",
        "hefl-rounds": "tab:green",
        "flower": "tab:orange",
        "sim": "tab:grey",
    }
    targets = [round(f * report["pooled_accuracy"], 3) for f in (0.85, 0.9, 0.95)]
    for ax, key in zip(axes[0], keys, strict=True):
        for run in report["runs"]:
            if run["scenario"] != key:
                continue
            first = run["repetition"] == 0
            ax.plot(
                run["seconds"],
                [100 * a for a in run["accuracy"]],
                color=colors[run["system"]],
                alpha=1.0 if first else 0.35,
                linestyle="--" if run["system"] == "sim" else "-",
                label=NAMES[run["system"]] if first else None,
            )
        for level in targets:
            ax.axhline(100 * level, color="black", linewidth=0.5, linestyle=":")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
        ax.set_xlabel("wall clock (s, strict; symlog)")
        ax.set_ylabel("pooled test accuracy (%)")
        ax.set_title(next(s["title"] for s in report["scenarios"] if s["key"] == key), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("heart-disease, logistic: hefl vs Flower (dotted: 0.85/0.90/0.95 x pooled)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
