"""``hefl-client``: enroll, jobs, train, evaluate, export, predict, status.

Every option is also a ``FLCLIENT_*`` environment variable (the option wins). What the
hospitals of a job share (model, training, wire, data schema) is the job's spec: the
options that used to set it are refused with a message saying so. Exit codes: 0 done,
1 a service, network or state error, 2 bad settings, arguments or data, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from fl_client.connection import connect
from fl_client.enrollment import enroll
from fl_client.errors import (
    AccessTokenError,
    ClientError,
    ConfigError,
    DataError,
    NotEnrolledError,
)
from fl_client.output import (
    Reporter,
    job_to_dict,
    render_adaptation,
    render_jobs,
    render_status,
)
from fl_client.settings import ClientSettings
from fl_client.transport import ClientOptions, ServerClient, require_secure_url
from fl_client.transport.server import job_from_json

__all__ = ["build_parser", "main"]

# option name → settings field, for options whose names differ from the field
_FIELD = {"keyauth": "keyauth_url", "server": "server_url", "data_arg": "data_args"}
# arguments that are not settings
_NOT_SETTINGS = {
    "command",
    "token",
    "verbose",
    "refused",
    "out",
    "force",
    "model_dir",
    "adapt_epochs",
}

# The options that once set what every hospital of a job shares, and where the job's spec
# sets it now. Each is still parsed, to be refused with this message instead of "unknown".
_SHARED = {
    "--model": "model.name or model.factory",
    "--seed": "model.seed",
    "--lr": "training.lr",
    "--optimizer": "training.optimizer",
    "--momentum": "training.momentum",
    "--batch-size": "training.batch_size",
    "--local-epochs": "training.local_epochs",
    "--local-steps": "training.local_steps",
    "--client-step": "training.client_step",
    "--compression": "communication.compression",
    "--block-fraction": "communication.block_fraction",
    "--compression-seed": "communication.compression_seed",
    "--no-error-feedback": "communication.error_feedback",
    "--personal": "communication.personal",
    "--test-fraction": "data.test_fraction (a factory: --data-arg test_fraction=...)",
    "--data-seed": "data.split_seed (a factory: --data-arg seed=...)",
    "--n-sites": "a bundled dataset's split: --data-arg n_sites=...",
    "--dirichlet-alpha": "a bundled dataset's split: --data-arg alpha=...",
}


class _Refused(argparse.Action):
    """Records a shared setting's option, to refuse it with where the spec sets it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        refused = getattr(namespace, "refused", None) or []
        namespace.refused = [*refused, option_string]


def _data_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)  # numbers, true/false, lists; else the text
    except ValueError:
        return key, value


def _add_common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("client")
    group.add_argument("--state-dir", help="local state directory [~/.hefl-client]")
    group.add_argument(
        "--allow-insecure-http",
        action="store_true",
        default=None,
        help="allow plain http:// to a non-loopback host (TLS keeps uploads confidential)",
    )
    group.add_argument("--timeout", type=float, help="per-request timeout in seconds [60]")
    group.add_argument("--max-attempts", type=int, help="attempts per request [8]")
    out = group.add_mutually_exclusive_group()
    out.add_argument("--output", choices=["human", "quiet", "json"], help="output mode [human]")
    out.add_argument("--quiet", "-q", dest="output", action="store_const", const="quiet")
    out.add_argument("--json", dest="output", action="store_const", const="json")
    group.add_argument("--verbose", "-v", action="store_true", help="log requests and retries")


def _add_services(parser: argparse.ArgumentParser, *, keyauth: bool = True) -> None:
    parser.add_argument("--server", help="aggregation server URL [http://127.0.0.1:8800]")
    if keyauth:
        parser.add_argument("--keyauth", help="key authority URL [the one used to enroll]")


def _add_data(parser: argparse.ArgumentParser, what: str) -> None:
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        help=f"{what}: a .csv or .parquet table (a study with features), or for a study "
        "with data.input_shape a data factory pkg.mod:factory or a bundled dataset "
        "(heart-disease, digits, breast-cancer)",
    )
    data.add_argument("--site", help="a data factory's site= (e.g. cleveland, or 0..3)")
    data.add_argument(
        "--data-arg",
        action="append",
        type=_data_arg,
        metavar="KEY=VALUE",
        help="a keyword argument of the data factory (repeatable; VALUE read as JSON if "
        "it is), e.g. path=icu.csv or n_sites=4",
    )


def _add_refused(parser: argparse.ArgumentParser) -> None:
    for option in _SHARED:
        nargs = 0 if option == "--no-error-feedback" else None
        parser.add_argument(
            option, dest="refused", action=_Refused, nargs=nargs, help=argparse.SUPPRESS
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hefl-client",
        description="hefl hospital client: federated learning on a CKKS-encrypted model. "
        "A job's study spec decides the model and how it is trained; a hospital chooses "
        "its data, its state directory and its machine's resources.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p_enroll = commands.add_parser(
        "enroll", help="redeem an enrollment token; store credential and secret context"
    )
    p_enroll.add_argument("--keyauth", help="key authority URL [http://127.0.0.1:8700]")
    p_enroll.add_argument(
        "--token",
        required=True,
        help="the single-use enrollment token, or '-' to read it from stdin "
        "(keeps it out of the process list)",
    )
    _add_common(p_enroll)

    p_jobs = commands.add_parser("jobs", help="list the server's jobs")
    _add_services(p_jobs)
    _add_common(p_jobs)

    p_train = commands.add_parser(
        "train", help="train a job on this hospital's data until it is done or a stop condition"
    )
    p_train.add_argument("--job", help="the job to train (hefl-client jobs lists them)")
    _add_services(p_train)
    _add_data(p_train, "this hospital's training data")
    local = p_train.add_argument_group("this machine")
    local.add_argument("--threads", type=int, help="threads torch may use [torch's default]")
    local.add_argument(
        "--step-delay", type=float, help="seconds slept per local step (simulates a slow site) [0]"
    )
    stop = p_train.add_argument_group("when this hospital stops taking part")
    stop.add_argument("--max-rounds", type=int, help="stop after N acknowledged updates")
    stop.add_argument("--max-duration", type=float, help="stop after N seconds")
    stop.add_argument("--slot-wait-max", type=float, help="give up waiting for a slot after N s")
    _add_refused(p_train)
    _add_common(p_train)

    p_eval = commands.add_parser("evaluate", help="score a job's current model on a table")
    p_eval.add_argument("--job", help="the job whose model to score")
    _add_services(p_eval)
    _add_data(p_eval, "the rows to score")
    _add_common(p_eval)

    p_export = commands.add_parser(
        "export", help="write a job's decrypted model, spec and preprocessing to a directory"
    )
    p_export.add_argument("--job", help="the job whose model to export")
    p_export.add_argument("--out", required=True, type=Path, help="the directory to write")
    p_export.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p_export.add_argument(
        "--adapt-epochs",
        type=int,
        default=0,
        metavar="N",
        help="first adapt the model to this hospital's rows: N epochs of the study's local "
        "training on the --data it trained on, both models scored on its held-out rows [0]",
    )
    _add_services(p_export)
    _add_data(p_export, "with --adapt-epochs: the data this hospital trained the job on")
    _add_common(p_export)

    p_predict = commands.add_parser(
        "predict", help="predict with an exported model (no network): one CSV row per row"
    )
    p_predict.add_argument(
        "--model", dest="model_dir", required=True, type=Path, help="an export directory"
    )
    p_predict.add_argument("--data", required=True, help="a .csv or .parquet table to score")
    p_predict.add_argument("--out", type=Path, help="CSV file to write [stdout]")

    p_status = commands.add_parser("status", help="print the server's or a job's status")
    p_status.add_argument("--job", help="one job's status [every job]")
    _add_services(p_status, keyauth=False)
    _add_common(p_status)
    return parser


def _refuse_unknown_environment(environ: Mapping[str, str]) -> None:
    # pydantic-settings ignores an FLCLIENT_ variable it does not know; an old env file's
    # FLCLIENT_LR would then seem to apply. Refuse it, saying where the spec sets it now.
    known = {f"FLCLIENT_{name.upper()}" for name in ClientSettings.model_fields}
    lines = []
    for name in sorted(n for n in environ if n.startswith("FLCLIENT_") and n not in known):
        option = "--" + name.removeprefix("FLCLIENT_").lower().replace("_", "-")
        where = _SHARED.get(option)
        lines.append(
            f"{name} is not a hospital's to set: the job's spec decides it ({where})"
            if where is not None
            else f"{name} is not a setting of hefl-client (unset it)"
        )
    if lines:
        raise ConfigError("\n".join(lines))


def _settings(args: argparse.Namespace) -> ClientSettings:
    _refuse_unknown_environment(os.environ)
    values: dict[str, Any] = {
        _FIELD.get(name, name): value
        for name, value in vars(args).items()
        if name not in _NOT_SETTINGS and value is not None
    }
    if "data_args" in values:
        values["data_args"] = dict(values["data_args"])
    try:
        return ClientSettings(**values)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_input=False)
        )
        raise ConfigError(f"invalid settings: {reasons}") from None


def _read_token(value: str, stdin: TextIO) -> str:
    token = stdin.readline().strip() if value == "-" else value.strip()
    if not token:
        raise ConfigError("empty enrollment token")
    return token


def _refuse_shared(args: argparse.Namespace) -> None:
    refused = getattr(args, "refused", None) or []
    if refused:
        lines = [
            f"{option} is not a hospital's to set: the job's spec decides it ({_SHARED[option]})"
            for option in dict.fromkeys(refused)
        ]
        raise ConfigError("\n".join(lines))


# The commands that train, score or load a model import torch and scikit-learn where
# they run: --help, enroll, jobs and status start without them.


def _predict(args: argparse.Namespace, stdout: TextIO) -> int:
    from fl_client.export import load_exported, write_predictions

    exported = load_exported(args.model_dir)
    predictions = exported.predict(args.data)
    if args.out is None:
        write_predictions(predictions, stdout)
        return 0
    try:
        with args.out.open("w", encoding="utf-8", newline="") as out:
            write_predictions(predictions, out)
    except OSError as exc:
        raise ConfigError(f"cannot write {args.out}: {exc}") from exc
    print(
        f"hefl-client: {len(predictions.rows)} predictions written to {args.out}", file=sys.stderr
    )
    return 0


def _print(settings: ClientSettings, stdout: TextIO, record: Any, text: str) -> None:
    if settings.output == "json":
        stdout.write(json.dumps(record, sort_keys=True) + "\n")
    elif settings.output == "human":
        stdout.write(text + "\n")


def _status(settings: ClientSettings) -> dict[str, Any]:
    """The server's or a job's status, read with this hospital's access token when it is
    enrolled (fl_server shows the status to token holders only, unless it is public)."""
    try:
        connection = connect(settings)
    except NotEnrolledError as not_enrolled:
        server = ServerClient(ClientOptions.from_settings(settings.server_url, settings))
        try:
            return server.status(settings.job)
        except AccessTokenError as refused:
            raise NotEnrolledError(
                f"{settings.server_url} shows its status to token holders only, and {not_enrolled}"
            ) from refused
        finally:
            server.close()
    try:
        return connection.server.status(settings.job)
    finally:
        connection.close()


def _run(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    if args.command == "predict":
        return _predict(args, stdout)
    _refuse_shared(args)
    settings = _settings(args)
    reporter = Reporter(settings.output, out=stdout)
    # refuse an insecure URL before touching any state or network
    urls = [settings.keyauth_url] if args.command == "enroll" else [settings.server_url]
    if args.command != "enroll" and "keyauth_url" in settings.model_fields_set:
        urls.append(settings.keyauth_url)
    for url in urls:
        require_secure_url(url, allow_insecure_http=settings.allow_insecure_http)
    if args.command == "enroll":
        enroll(settings, _read_token(args.token, stdin), reporter=reporter)
        return 0
    if args.command == "status":
        status = _status(settings)
        if settings.job is None:  # every job: the list, as `jobs` shows it
            jobs = [job_from_json(job, "status") for job in status.get("jobs") or []]
            _print(settings, stdout, status, render_jobs(jobs))
        else:
            _print(settings, stdout, status, render_status(status))
        return 0
    if args.command == "train":
        from fl_client.runner import Runner

        with Runner(settings, reporter=reporter) as runner:
            previous = signal.signal(signal.SIGTERM, lambda *_: runner.request_stop())
            try:
                runner.run()
            finally:
                signal.signal(signal.SIGTERM, previous)
        return 0
    connection = connect(settings)
    try:
        if args.command == "jobs":
            jobs = connection.server.jobs()
            _print(settings, stdout, [job_to_dict(j) for j in jobs], render_jobs(jobs))
        elif args.command == "evaluate":
            from fl_client.results import evaluate_job

            evaluation = evaluate_job(settings, connection, events=reporter)
            if evaluation.preprocessing == "fitted":
                reporter.warn(
                    f"no training preprocessing of job {evaluation.job!r} at this hospital: "
                    f"the statistics were fitted on {evaluation.data}"
                )
            metrics = " ".join(f"{k}={v:.4g}" for k, v in evaluation.metrics.items())
            _print(
                settings,
                stdout,
                evaluation.to_dict(),
                f"job {evaluation.job} version {evaluation.version} on {evaluation.data}: "
                f"{metrics}",
            )
        else:
            from fl_client.results import export_job

            given = [args.data, args.site, args.data_arg]
            if any(v is not None for v in given) and not args.adapt_epochs:
                raise ConfigError(
                    "export reads --data, --site and --data-arg only to adapt the model: add "
                    "--adapt-epochs N"
                )
            meta = export_job(
                settings,
                connection,
                args.out,
                force=args.force,
                adapt_epochs=args.adapt_epochs,
                events=reporter,
            )
            adapted = meta["adaptation"]
            if adapted is not None and adapted["worse"]:
                reporter.warn(
                    "the adapted model's held-out loss is above the shared model's: "
                    "export without --adapt-epochs to take the shared model home"
                )
            _print(
                settings,
                stdout,
                {**meta, "out": str(args.out)},
                f"job {meta['job']} version {meta['version']} exported to {args.out}"
                + render_adaptation(adapted),
            )
    finally:
        connection.close()
    return 0


def _say(exc: ClientError) -> None:
    # one "hefl-client:" line per line of the message: a bad table has one per problem
    name = "" if isinstance(exc, ConfigError | DataError) else f"{type(exc).__name__}: "
    lines = str(exc).splitlines() or [""]
    print(f"hefl-client: {name}{lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(f"hefl-client: {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "verbose", False):
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return _run(args, sys.stdin, sys.stdout)
    except (ConfigError, DataError) as exc:
        _say(exc)
        return 2
    except ClientError as exc:
        _say(exc)
        return 1
    except KeyboardInterrupt:
        print(
            "hefl-client: interrupted (a journaled update is resent on the next start)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
