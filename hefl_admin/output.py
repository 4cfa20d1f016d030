"""What ``hefl-admin`` prints: aligned fields, tables, a job, a job's status, or raw JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from hefl_study import METRIC_GOALS

__all__ = [
    "print_clients",
    "print_fields",
    "print_job",
    "print_job_state",
    "print_jobs",
    "print_json",
    "print_repair",
    "print_status",
    "print_table",
]

# Metrics in the order a reader expects them (hefl_study's), others after by name.
_METRIC_ORDER = {name: i for i, name in enumerate(METRIC_GOALS)}


def print_json(value: Any, out: TextIO) -> None:
    """The service's answer as it came, indented."""
    print(json.dumps(value, indent=2), file=out)


def print_fields(fields: Sequence[tuple[str, object]], out: TextIO, *, indent: str = "") -> None:
    """``label: value`` lines with the values aligned one column after the longest label."""
    width = max((len(label) for label, _ in fields), default=0) + 2
    for label, value in fields:
        print(f"{indent}{label + ':':<{width}}{_cell(value)}".rstrip(), file=out)


def print_table(
    header: Sequence[str], rows: Iterable[Sequence[object]], out: TextIO, *, indent: str = ""
) -> None:
    """Columns two spaces apart, each as wide as its widest cell (the last one unpadded)."""
    cells = [list(header), *([_cell(value) for value in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print(indent + "  ".join([*padded, row[-1]]).rstrip(), file=out)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# keyauth


def print_clients(clients: list[dict[str, Any]], out: TextIO) -> None:
    """keyauth's enrolled clients, one line each."""
    rows = []
    for client in clients:
        if client["revoked"]:
            status = f"revoked {client['revoked_at']}"
        elif client.get("confirmed", True):
            status = "active"
        else:  # enrolled, but no access token yet: the answer may not have arrived
            status = "active (no access token yet)"
        rows.append((client["id"], client["name"], client["enrolled_at"], status))
    print_table(("ID", "NAME", "ENROLLED_AT", "STATUS"), rows, out)


# fl_server


def _state(job: Mapping[str, Any]) -> str:
    """``training``, or ``done (target_updates)``: the state and, once done, why."""
    state = str(job.get("state"))
    reason = job.get("stop_reason")
    return f"{state} ({reason})" if reason else state


def _updates(job: Mapping[str, Any]) -> str:
    applied, target = job.get("updates_applied"), job.get("target_updates")
    return f"{_cell(applied)}/{target}" if target is not None else _cell(applied)


def print_job(job: Mapping[str, Any], out: TextIO) -> None:
    """One job: what identifies it and where it stands."""
    print_fields(
        [
            ("name", job.get("name")),
            ("state", _state(job)),
            ("version", job.get("version")),
            ("updates", _updates(job)),
            ("spec_sha256", job.get("spec_sha256")),
            ("key_epoch", job.get("key_epoch")),
            ("key_id", job.get("key_id")),
            ("profile", job.get("profile")),
        ],
        out,
    )


def print_job_state(job: Mapping[str, Any], out: TextIO) -> None:
    """``name: state``, as a pause, resume or stop leaves the job."""
    print(f"{job.get('name')}: {_state(job)}", file=out)


def print_jobs(jobs: list[dict[str, Any]], failed: list[dict[str, Any]], out: TextIO) -> None:
    """The server's jobs, one line each, then those it could not open at startup."""
    if not jobs and not failed:
        print("no jobs", file=out)
    elif jobs:
        rows = [
            (
                job.get("name"),
                job.get("state"),
                job.get("version"),
                _updates(job),
                job.get("stop_reason"),
                job.get("created_at"),
            )
            for job in jobs
        ]
        header = ("NAME", "STATE", "VERSION", "UPDATES", "STOP_REASON", "CREATED_AT")
        print_table(header, rows, out)
    if failed:
        if jobs:
            print(file=out)
        print("not opened at startup (each answers state_invalid; see its log):", file=out)
        for job in failed:
            print(f"  {job.get('name')}: {job.get('error')}", file=out)


def print_status(status: Mapping[str, Any], out: TextIO) -> None:
    """A job's status: the job, each hospital, the pooled metrics and the stop rules."""
    job: Mapping[str, Any] = status.get("job") or status
    rejected = status.get("updates_rejected") or {}
    fields: list[tuple[str, object]] = [
        ("name", job.get("name")),
        ("description", job.get("description") or None),
        ("state", _state(job)),
        ("version", job.get("version")),
        ("updates", _updates(job)),
        ("rejected", ", ".join(f"{code} {n}" for code, n in sorted(rejected.items())) or 0),
        ("spec_sha256", job.get("spec_sha256")),
        ("key_epoch", job.get("key_epoch")),
        ("key_id", job.get("key_id")),
        ("profile", job.get("profile")),
        ("created_at", job.get("created_at")),
        ("training_seconds", _seconds(job.get("training_seconds"))),
    ]
    print_fields(fields, out)
    _print_hospitals(status.get("clients") or {}, out)
    _print_pooled(status.get("pooled_metrics") or {}, out)
    _print_stop_rules(status.get("stop_rules") or [], out)
    integrity = status.get("integrity")
    if isinstance(integrity, Mapping):  # a server from before issue 13 has none
        _print_integrity(integrity, str(job.get("name")), out)
    _print_rotations(job.get("rotation"), status.get("rotations"), status.get("clients"), out)


def _print_rotations(active: object, rotations: object, clients: object, out: TextIO) -> None:
    """The key rotation under way, those done, and the updates trained again for them."""
    if not isinstance(rotations, Mapping):  # a server from before key rotation
        return
    done = rotations.get("done") or []
    if not done and active is None and not rotations.get("detail"):
        return
    names = clients if isinstance(clients, Mapping) else {}

    def who(client_id: object) -> str:
        client = names.get(client_id)
        name = client.get("client_name") if isinstance(client, Mapping) else None
        return f"{name} ({client_id})" if name else str(client_id)

    retrained = rotations.get("updates_retrained")
    print(
        f"\nkey rotations: {len(done)} done, {retrained} "
        f"update{'' if retrained == 1 else 's'} trained again",
        file=out,
    )
    for entry in done:
        print(
            f"  epoch {entry.get('from_epoch')} → {entry.get('to_epoch')} at version "
            f"{entry.get('version')}, re-encrypted by {who(entry.get('client_id'))} at "
            f"{entry.get('at')}",
            file=out,
        )
    if isinstance(active, Mapping):
        print(
            f"  under way: to epoch {active.get('key_epoch')} at version {active.get('version')}, "
            f"{who(active.get('client_id'))} asked until {active.get('deadline')}",
            file=out,
        )
    if rotations.get("detail"):
        print(f"  last attempt: {rotations['detail']}", file=out)


def _seconds(value: object) -> str | None:
    return f"{value:.0f} s" if isinstance(value, int | float) else None


def _metric_names(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=lambda n: (_METRIC_ORDER.get(n, len(_METRIC_ORDER)), n))


def _print_hospitals(clients: Mapping[str, Any], out: TextIO) -> None:
    print("\nhospitals:", file=out)
    if not clients:
        print("  none has been seen yet", file=out)
        return
    latest = {cid: (c.get("latest_metrics") or {}) for cid, c in clients.items()}
    names = _metric_names(n for m in latest.values() for n in (m.get("values") or {}))
    # the ε each hospital reports having spent: a study with [privacy] only
    private = any(c.get("privacy") for c in clients.values())
    rows = []
    for client_id, client in sorted(clients.items(), key=lambda i: str(i[1].get("client_name"))):
        metrics = latest[client_id]
        values = metrics.get("values") or {}
        rows.append(
            (
                client.get("client_name") or client_id,
                client.get("updates_applied"),
                client.get("last_seen"),
                metrics.get("version"),
                metrics.get("n_samples"),
                *(values.get(name) for name in names),
                *(((client.get("privacy") or {}).get("epsilon"),) if private else ()),
            )
        )
    header = ("NAME", "UPDATES", "LAST_SEEN", "EVAL_VERSION", "ROWS", *(n.upper() for n in names))
    header += ("EPSILON",) if private else ()
    print_table(header, rows, out, indent="  ")
    counted = [c["privacy"] for c in clients.values() if (c.get("privacy") or {}).get("level")]
    if any(p["level"] == "hospital" for p in counted):
        delta = counted[0].get("delta")
        print(
            f"  EPSILON: hospital-level DP at δ = {delta:g}, counted by the server over each "
            "hospital's noised updates",
            file=out,
        )


def _print_pooled(pooled: Mapping[str, Any], out: TextIO) -> None:
    print("\npooled metrics (latest report of each hospital, weighted by its rows):", file=out)
    if not pooled:
        print("  none reported yet", file=out)
        return
    rows = [
        (name, pooled[name].get("value"), pooled[name].get("sites"), pooled[name].get("n_samples"))
        for name in _metric_names(pooled)
    ]
    print_table(("METRIC", "VALUE", "HOSPITALS", "ROWS"), rows, out, indent="  ")


def _print_stop_rules(rules: Sequence[Mapping[str, Any]], out: TextIO) -> None:
    print("\nstop rules (the first one met ends the job):", file=out)
    if not rules:
        print("  none: the job runs until it is stopped", file=out)
        return
    rows = []
    for rule in rules:
        progress, target = rule.get("progress"), rule.get("target")
        metric = rule.get("metric")
        if rule.get("rule") == "max_wall_seconds":
            progress, target = _seconds(progress), _seconds(target)
        elif metric:
            goal = ">=" if METRIC_GOALS.get(metric, "max") == "max" else "<="
            target = f"{metric} {goal} {_cell(target)}"
            sites, needed = rule.get("sites"), rule.get("min_sites")
            if isinstance(sites, int) and needed is not None:
                hospitals = "hospital" if sites == 1 else "hospitals"
                progress = f"{_cell(progress)} ({sites} {hospitals}, {needed} needed)"
        rows.append((rule.get("rule"), progress, target, rule.get("met")))
    print_table(("RULE", "PROGRESS", "TARGET", "MET"), rows, out, indent="  ")


def _removed_rows(repair: Mapping[str, Any]) -> list[tuple[object, ...]]:
    quarantined = set(repair.get("quarantined") or ())
    return [
        (
            removed.get("update_id"),
            removed.get("client_name") or removed.get("client_id"),
            removed.get("version"),
            removed.get("weight"),
            removed.get("client_id") in quarantined,
        )
        for removed in repair.get("removed") or ()
    ]


_REMOVED_HEADER = ("UPDATE", "HOSPITAL", "IN_VERSION", "WEIGHT", "QUARANTINED")


def print_repair(job: str, repair: Mapping[str, Any], out: TextIO) -> None:
    """A repair as ``job repair`` made it: the version, each removed update, the quarantine."""
    lost = repair.get("versions_lost")
    print(
        f"repair {repair.get('entry')} of job {job}: the model is at version "
        f"{repair.get('version')} ({lost} version{'' if lost == 1 else 's'} held the removed "
        "updates)",
        file=out,
    )
    print_table(_REMOVED_HEADER, _removed_rows(repair), out, indent="  ")
    names = {r.get("client_id"): r.get("client_name") for r in repair.get("removed") or ()}
    quarantined = repair.get("quarantined") or []
    for client_id in quarantined:
        who = f"{names[client_id]} ({client_id})" if names.get(client_id) else client_id
        print(
            f"quarantined {who}: release it with hefl-admin job release {job} {client_id}",
            file=out,
        )
    if not quarantined:
        print("quarantined: nobody", file=out)


def _print_integrity(integrity: Mapping[str, Any], job: str, out: TextIO) -> None:
    state = integrity.get("state")
    reports = integrity.get("reports_total")
    print(f"\nintegrity: {state} ({reports} report{'' if reports == 1 else 's'} kept)", file=out)
    if integrity.get("detail"):
        print(f"  {integrity['detail']}", file=out)
    probe = integrity.get("probe")
    if isinstance(probe, Mapping):
        if probe.get("update_id"):
            asked = (
                f"version {probe.get('version')} plus update {probe.get('update_id')}, for "
                f"its sender {probe.get('client_id')}"
            )
        else:
            asked = f"version {probe.get('version')}, rebuilt, for any hospital"
        print(f"  probe: {asked}", file=out)
    repairs = integrity.get("repairs") or []
    if repairs:
        print("\nrepairs (each removed update subtracted at its weight):", file=out)
        for repair in repairs:
            lost = repair.get("versions_lost")
            print(
                f"  repair {repair.get('entry')} at {repair.get('at')}: version "
                f"{repair.get('version')}, {lost} version{'' if lost == 1 else 's'} lost: "
                f"{repair.get('reason')}",
                file=out,
            )
            print_table(_REMOVED_HEADER, _removed_rows(repair), out, indent="    ")
    quarantined = integrity.get("quarantined") or []
    if quarantined:
        print(
            f"\nquarantined (updates refused; hefl-admin job release {job} CLIENT_ID):",
            file=out,
        )
        rows = [
            (q.get("client_name") or "-", q.get("client_id"), q.get("since"), q.get("repair"))
            for q in quarantined
        ]
        print_table(("HOSPITAL", "CLIENT_ID", "SINCE", "REPAIR"), rows, out, indent="  ")
