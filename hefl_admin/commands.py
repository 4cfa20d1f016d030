"""The commands of ``hefl-admin``: its arguments, and each command run against the services."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import hefl_study
from hefl_admin.errors import InputError, refusal
from hefl_admin.keyauth_client import KeyauthAdmin
from hefl_admin.output import (
    print_clients,
    print_fields,
    print_job,
    print_job_state,
    print_jobs,
    print_json,
    print_repair,
    print_status,
)
from hefl_admin.server_client import ServerAdmin
from hefl_wire import ProblemError

__all__ = ["DEFAULT_KEYAUTH_URL", "DEFAULT_SERVER_URL", "Services", "build_parser", "run"]

DEFAULT_KEYAUTH_URL = "http://127.0.0.1:8700"
DEFAULT_SERVER_URL = "http://127.0.0.1:8800"


@dataclass(frozen=True)
class Services:
    """What a command talks to: keyauth, and fl_server once an admin token is in hand.

    ``server`` fetches a fresh administrator token from keyauth, then gives fl_server's
    client holding it; a command that never calls it never contacts fl_server.
    """

    keyauth: KeyauthAdmin
    server: Callable[[], ServerAdmin]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hefl-admin",
        description="Administer hefl: the key authority (keyauth) and the jobs of the "
        "aggregation server (fl_server). The admin key is read from KEYAUTH_ADMIN_KEY or "
        "--admin-key-file, never from the command line, where other users could see it in "
        "the process list; only keyauth ever receives it.",
    )
    parser.add_argument(
        "--url",
        default=None,
        help=f"keyauth base URL (default: $KEYAUTH_URL or {DEFAULT_KEYAUTH_URL})",
    )
    parser.add_argument(
        "--server-url",
        default=None,
        help=f"fl_server base URL, for job commands (default: $HEFL_SERVER_URL or "
        f"{DEFAULT_SERVER_URL})",
    )
    parser.add_argument(
        "--admin-key-file", type=Path, default=None, help="read the admin key from this file"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default: 10)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    token = commands.add_parser("token", help="enrollment tokens and viewer tokens")
    token_commands = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = token_commands.add_parser("create", help="issue a single-use enrollment token")
    create.add_argument("client_name", help="name of the client it enrolls, e.g. hospital-a")
    create.add_argument("--expires-in", type=int, default=None, help="lifetime in seconds")
    output = create.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the response as JSON")
    output.add_argument("-q", "--quiet", action="store_true", help="print the token only")
    viewer = token_commands.add_parser(
        "viewer",
        help="issue a viewer token: it reads fl_server's status and operator page (/ui) and "
        "nothing else. Only the token is printed, so it can be piped to a file",
    )
    viewer.add_argument(
        "--expires-in",
        type=int,
        default=None,
        help="lifetime in seconds, at most keyauth's KEYAUTH_VIEWER_TOKEN_TTL (its default, "
        "12 hours unless set)",
    )
    viewer.add_argument("--json", action="store_true", help="print the response as JSON")

    clients = commands.add_parser("clients", help="enrolled clients")
    client_commands = clients.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = client_commands.add_parser("list", help="list every enrolled client")
    listing.add_argument("--json", action="store_true", help="print the response as JSON")
    revoke = client_commands.add_parser("revoke", help="revoke a client")
    revoke.add_argument("client_id")

    epochs = commands.add_parser("epochs", help="key epochs")
    epoch_commands = epochs.add_subparsers(dest="action", required=True, metavar="ACTION")
    rotate = epoch_commands.add_parser("rotate", help="generate the keys of the next epoch")
    rotate.add_argument("--json", action="store_true", help="print the response as JSON")

    commands.add_parser("health", help="check that keyauth is up and show its key epoch")

    _add_job_commands(commands)
    return parser


def _add_job_commands(commands: Any) -> None:
    job = commands.add_parser("job", help="training jobs on fl_server (studies)")
    job_commands = job.add_subparsers(dest="action", required=True, metavar="ACTION")
    as_json = {"action": "store_true", "help": "print the server's answer as JSON"}

    create = job_commands.add_parser(
        "create",
        help="create the job of a study spec (checked here first; nothing is sent "
        "if it has a problem)",
    )
    create.add_argument("spec", type=Path, metavar="SPEC.toml", help="the study spec")
    create.add_argument("--json", **as_json)

    listing = job_commands.add_parser("list", help="list every job")
    listing.add_argument("--json", **as_json)

    show = job_commands.add_parser(
        "show",
        help="a job's status: each hospital, pooled metrics, stop rules, integrity (the "
        "search for a bad update, repairs, quarantined hospitals)",
    )
    show.add_argument("name", help="the job's name (its spec's name)")
    show.add_argument("--json", **as_json)

    for action, says in [
        ("pause", "pause a job: updates are refused until it resumes, none is lost"),
        ("resume", "resume a paused job"),
        ("stop", "stop a job for good (done, stop reason 'stopped')"),
    ]:
        command = job_commands.add_parser(action, help=says)
        command.add_argument("name", help="the job's name")
        command.add_argument("--json", **as_json)

    rotate = job_commands.add_parser(
        "rotate",
        help="move a running job to new keys: keyauth's next key epoch (made now if "
        "keyauth's current one is the job's), its model re-encrypted by one hospital; a "
        "revoked hospital cannot decrypt the versions after it",
    )
    rotate.add_argument("name", help="the job's name")
    rotate.add_argument(
        "--no-new-keys",
        dest="new_keys",
        action="store_false",
        help="do not make keyauth's next epoch: refused unless `hefl-admin epochs rotate` "
        "made one newer than the job's",
    )
    rotate.add_argument("--json", **as_json)

    repair = job_commands.add_parser(
        "repair",
        help="remove updates from a job's model exactly (each at the weight it was applied "
        "at) and quarantine their senders",
    )
    repair.add_argument("name", help="the job's name")
    repair.add_argument(
        "--update",
        dest="updates",
        action="append",
        required=True,
        metavar="ID",
        help="an update id to remove (job show lists them); give it once per update",
    )
    repair.add_argument(
        "--no-quarantine",
        dest="quarantine",
        action="store_false",
        help="remove the updates but keep taking their senders' updates",
    )
    repair.add_argument("--json", **as_json)

    release = job_commands.add_parser(
        "release", help="let a quarantined hospital send updates to a job again"
    )
    release.add_argument("name", help="the job's name")
    release.add_argument("client_id", help="the quarantined client's id (job show lists it)")


def run(args: argparse.Namespace, services: Services, out: TextIO) -> None:
    """Run the command ``args`` names.

    Raises
    ------
    hefl_wire.ProblemError
        A service refused (exit 1).
    AdminError
        The input is unusable or a service unreachable (exit 2).
    """
    if args.command == "job":
        _JOB_COMMANDS[args.action](args, services, out)
    else:
        _run_keyauth(args, services.keyauth, out)


def _run_keyauth(args: argparse.Namespace, admin: KeyauthAdmin, out: TextIO) -> None:
    if args.command == "health":
        health = admin.health()
        print(f"{health['status']}: key epoch {health['key_epoch']}", file=out)
    elif args.command == "token" and args.action == "viewer":
        viewer = admin.create_viewer_token(args.expires_in)
        if args.json:
            print_json(viewer, out)
        else:
            # The token alone: `hefl-admin token viewer > viewer.token` is the whole recipe.
            print(viewer["access_token"], file=out)
    elif args.command == "token":
        issued = admin.create_enrollment_token(args.client_name, args.expires_in)
        if args.quiet:
            print(issued["token"], file=out)
        elif args.json:
            print_json(issued, out)
        else:
            keys = ("token", "client_name", "expires_at")
            print_fields([(key, issued[key]) for key in keys], out)
    elif args.command == "clients" and args.action == "list":
        clients = admin.list_clients()
        if args.json:
            print_json(clients, out)
        else:
            print_clients(clients, out)
    elif args.command == "clients":
        admin.revoke_client(args.client_id)
        print(f"revoked {args.client_id}", file=out)
    else:
        epoch = admin.rotate_key_epoch()
        if args.json:
            print_json(epoch, out)
        else:
            print(f"key epoch {epoch['key_epoch']} (profile {epoch['profile']})", file=out)


# Jobs


def load_spec(path: Path) -> hefl_study.StudySpec:
    """The study spec at ``path``, checked as the server will check it.

    Raises
    ------
    InputError
        The file is missing, unreadable or not TOML, or the spec has problems: every
        problem with its location.
    """
    try:
        return hefl_study.load_spec(path)
    except hefl_study.SpecError as exc:
        problems = [str(problem) for problem in exc.problems]
        if exc.source != str(path):  # the file itself could not be read
            raise InputError("; ".join(problems)) from None
        count = len(problems)
        head = f"{path} has {count} problem{'' if count == 1 else 's'}; nothing was sent:"
        raise InputError("\n".join([head, *(f"  {p}" for p in problems)])) from None


def _job_create(args: argparse.Namespace, services: Services, out: TextIO) -> None:
    spec = load_spec(args.spec)
    server = services.server()
    try:
        created = server.create_job(hefl_study.spec_to_json(spec))
    except ProblemError as exc:
        if exc.code == "job_exists":
            raise _job_exists(server, spec) from exc
        raise
    if args.json:
        print_json(created.job, out)
        return
    if created.created:
        print(f"created job {spec.name}", file=out)
    else:
        print(f"job {spec.name} exists already with this spec: nothing changed", file=out)
    print_job(created.job, out)


def _job_exists(server: ServerAdmin, spec: hefl_study.StudySpec) -> ProblemError:
    """``job_exists`` said plainly: the name is taken by another study."""
    try:
        theirs = f" (sha256 {server.job(spec.name).get('spec_sha256')})"
    except ProblemError:
        theirs = ""  # gone since, or unreadable: the refusal stands without it
    return refusal(
        f"a job named {spec.name!r} exists with another spec{theirs}; this spec's sha256 is "
        f"{spec.sha256}. Give this study another name in its spec.",
        code="job_exists",
        http_status=409,
    )


def _job_list(args: argparse.Namespace, services: Services, out: TextIO) -> None:
    server = services.server()
    jobs = server.list_jobs()
    if args.json:
        print_json(jobs, out)
    else:
        print_jobs(jobs, server.failed_jobs(), out)


def _job_show(args: argparse.Namespace, services: Services, out: TextIO) -> None:
    status = services.server().status(args.name)
    if args.json:
        print_json(status, out)
    else:
        print_status(status, out)


def _job_change(
    change: Callable[[ServerAdmin, str], dict[str, Any]],
) -> Callable[[argparse.Namespace, Services, TextIO], None]:
    def command(args: argparse.Namespace, services: Services, out: TextIO) -> None:
        job = change(services.server(), args.name)
        if args.json:
            print_json(job, out)
        else:
            print_job_state(job, out)

    return command


def _job_rotate(args: argparse.Namespace, services: Services, out: TextIO) -> None:
    server = services.server()
    made = None
    if args.new_keys:
        job_epoch = int(server.job(args.name)["key_epoch"])
        if int(services.keyauth.health()["key_epoch"]) <= job_epoch:
            made = services.keyauth.rotate_key_epoch()
    job = server.rotate(args.name)
    if args.json:
        print_json(job, out)
        return
    if made is not None:
        print(f"keyauth: new key epoch {made['key_epoch']} (profile {made['profile']})", file=out)
    rotation = job.get("rotation")
    if isinstance(rotation, Mapping):
        print(
            f"{args.name}: moving from key epoch {job.get('key_epoch')} to "
            f"{rotation.get('key_epoch')} at version {rotation.get('version')}; hospital "
            f"{rotation.get('client_id')} is asked to re-encrypt the model (hefl-admin job "
            f"show {args.name} follows it)",
            file=out,
        )
    else:
        print(
            f"{args.name}: key epoch {job.get('key_epoch')}, version {job.get('version')}", file=out
        )


def _job_repair(args: argparse.Namespace, services: Services, out: TextIO) -> None:
    repair = services.server().repair(args.name, args.updates, quarantine=args.quarantine)
    if args.json:
        print_json(repair, out)
    else:
        print_repair(args.name, repair, out)


def _job_release(args: argparse.Namespace, services: Services, out: TextIO) -> None:
    services.server().release(args.name, args.client_id)
    print(f"released {args.client_id}: job {args.name} takes its updates again", file=out)


_JOB_COMMANDS: dict[str, Callable[[argparse.Namespace, Services, TextIO], None]] = {
    "create": _job_create,
    "list": _job_list,
    "show": _job_show,
    "pause": _job_change(ServerAdmin.pause),
    "resume": _job_change(ServerAdmin.resume),
    "stop": _job_change(ServerAdmin.stop),
    "repair": _job_repair,
    "release": _job_release,
    "rotate": _job_rotate,
}
