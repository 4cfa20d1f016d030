"""``hefl-client``: enroll, train, status.

Every option is also a ``FLCLIENT_*`` environment variable (the option wins). Exit codes:
0 done, 1 a service, network or state error, 2 bad settings or arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from pydantic import ValidationError

from fl_client.enrollment import enroll
from fl_client.errors import ClientError, ConfigError
from fl_client.output import Reporter, render_status
from fl_client.runner import Runner
from fl_client.settings import ClientSettings
from fl_client.transport import ClientOptions, ServerClient, require_secure_url

__all__ = ["build_parser", "main"]

# option name → settings field, for options whose names differ from the field
_FIELD = {"keyauth": "keyauth_url", "server": "server_url"}


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hefl-client",
        description="hefl hospital client: federated learning on a CKKS-encrypted model.",
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

    p_train = commands.add_parser("train", help="train until the job is done or a stop condition")
    p_train.add_argument("--server", help="aggregation server URL [http://127.0.0.1:8800]")
    p_train.add_argument("--keyauth", help="key authority URL [the one used to enroll]")
    data = p_train.add_argument_group("data")
    data.add_argument("--data", help="heart-disease | digits | breast-cancer | pkg.mod:factory")
    data.add_argument("--site", help="this hospital's site (e.g. cleveland, or 0..n_sites-1)")
    data.add_argument("--n-sites", type=int, help="sites of a Dirichlet split [4]")
    data.add_argument("--dirichlet-alpha", type=float, help="label skew of the split [0.5]")
    data.add_argument("--data-seed", type=int, help="seed of the site/test splits [0]")
    data.add_argument("--test-fraction", type=float, help="held-out share per site [0.34]")
    train = p_train.add_argument_group("local training")
    train.add_argument("--model", help="logistic | mlp | cnn | pkg.mod:factory [logistic]")
    train.add_argument("--seed", type=int, help="seed of model init and batch order [0]")
    train.add_argument("--local-epochs", type=int, help="local epochs per round [1]")
    train.add_argument("--local-steps", type=int, help="local steps per round (overrides epochs)")
    train.add_argument("--batch-size", type=int, help="[16]")
    train.add_argument(
        "--step-delay", type=float, help="seconds slept per local step (simulates a slow site) [0]"
    )
    train.add_argument("--optimizer", choices=["sgd", "adam"], help="[sgd]")
    train.add_argument("--lr", type=float, help="local learning rate [0.05]")
    train.add_argument("--momentum", type=float, help="SGD momentum [0]")
    wire = p_train.add_argument_group("communication")
    wire.add_argument("--client-step", type=float, help="η: update = η·compressed delta [1]")
    wire.add_argument(
        "--compression", choices=["dense", "top-k", "random-k"], help="block selection [dense]"
    )
    wire.add_argument("--block-fraction", type=float, help="share of blocks for top-k/random-k")
    wire.add_argument("--compression-seed", type=int, help="seed of random-k [0]")
    wire.add_argument(
        "--no-error-feedback",
        dest="error_feedback",
        action="store_false",
        default=None,
        help="drop what top-k/random-k did not send instead of carrying it over",
    )
    wire.add_argument(
        "--personal",
        action="append",
        metavar="GLOB",
        help="parameter names that never leave this hospital (repeatable), e.g. 'head.*'",
    )
    stop = p_train.add_argument_group("stop conditions")
    stop.add_argument("--max-rounds", type=int, help="stop after N acknowledged updates")
    stop.add_argument("--max-duration", type=float, help="stop after N seconds")
    stop.add_argument("--slot-wait-max", type=float, help="give up waiting for a slot after N s")
    _add_common(p_train)

    p_status = commands.add_parser("status", help="print the server's training status")
    p_status.add_argument("--server", help="aggregation server URL [http://127.0.0.1:8800]")
    _add_common(p_status)
    return parser


def _settings(args: argparse.Namespace) -> ClientSettings:
    skip = {"command", "token", "verbose"}
    values: dict[str, Any] = {
        _FIELD.get(name, name): value
        for name, value in vars(args).items()
        if name not in skip and value is not None
    }
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


def _run(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    settings = _settings(args)
    reporter = Reporter(settings.output, out=stdout)
    # refuse an insecure URL before touching any state or network
    urls = [settings.keyauth_url] if args.command == "enroll" else [settings.server_url]
    if args.command == "train" and "keyauth_url" in settings.model_fields_set:
        urls.append(settings.keyauth_url)
    for url in urls:
        require_secure_url(url, allow_insecure_http=settings.allow_insecure_http)
    if args.command == "enroll":
        enroll(settings, _read_token(args.token, stdin), reporter=reporter)
        return 0
    if args.command == "status":
        server = ServerClient(
            ClientOptions(
                settings.server_url,
                allow_insecure_http=settings.allow_insecure_http,
                timeout=settings.timeout,
            )
        )
        try:
            status = server.status()
        finally:
            server.close()
        if settings.output == "json":
            stdout.write(json.dumps(status, sort_keys=True) + "\n")
        else:
            stdout.write(render_status(status) + "\n")
        return 0
    with Runner(settings, reporter=reporter) as runner:
        previous = signal.signal(signal.SIGTERM, lambda *_: runner.request_stop())
        try:
            runner.run()
        finally:
            signal.signal(signal.SIGTERM, previous)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return _run(args, sys.stdin, sys.stdout)
    except ConfigError as exc:
        print(f"hefl-client: {exc}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"hefl-client: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "hefl-client: interrupted (a journaled update is resent on the next start)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
