"""``hefl-admin``: read the options, run one command, and turn every failure into one line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import TextIO

import httpx

from hefl_admin.commands import (
    DEFAULT_KEYAUTH_URL,
    DEFAULT_SERVER_URL,
    Services,
    build_parser,
    run,
)
from hefl_admin.errors import REFUSED, AdminError, InputError
from hefl_admin.keyauth_client import KeyauthAdmin
from hefl_admin.server_client import ServerAdmin
from hefl_admin.transport import ServiceHttp
from hefl_wire import ProblemError

__all__ = ["main"]


def _admin_key(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    if args.admin_key_file is not None:
        try:
            key: str = args.admin_key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise InputError(f"cannot read the admin key file: {why}") from None
        return key
    return env.get("KEYAUTH_ADMIN_KEY") or None


def _client(url: str, option: str, timeout: float, stack: ExitStack) -> httpx.Client:
    try:
        client = httpx.Client(base_url=url, timeout=timeout)
    except httpx.InvalidURL as exc:
        raise InputError(f"{option} {url!r} is not a URL: {exc}") from None
    return stack.enter_context(client)


def _services(
    args: argparse.Namespace,
    env: Mapping[str, str],
    stack: ExitStack,
    *,
    http: httpx.Client | None,
    server_http: httpx.Client | None,
) -> Services:
    """keyauth's client now; fl_server's once a command asks for it, with a fresh token."""
    url = args.url or env.get("KEYAUTH_URL") or DEFAULT_KEYAUTH_URL
    server_url = args.server_url or env.get("HEFL_SERVER_URL") or DEFAULT_SERVER_URL
    keyauth_http = http or _client(url, "--url", args.timeout, stack)
    keyauth = KeyauthAdmin(
        ServiceHttp(keyauth_http, service="keyauth", url=url), _admin_key(args, env)
    )

    def server() -> ServerAdmin:
        # Each job command gets a fresh admin token first: nothing to keep or expire.
        token = keyauth.admin_token()
        client = server_http or _client(server_url, "--server-url", args.timeout, stack)
        return ServerAdmin(ServiceHttp(client, service="fl_server", url=server_url), token)

    return Services(keyauth=keyauth, server=server)


def main(
    argv: Sequence[str] | None = None,
    *,
    http: httpx.Client | None = None,
    server_http: httpx.Client | None = None,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``hefl-admin``; returns the exit status.

    0 when done, 1 when keyauth or fl_server refused (the problem's code is printed), 2 on
    a usage or input problem or when a service cannot be reached. ``http`` (keyauth),
    ``server_http`` (fl_server), ``env``, ``out`` and ``err`` are for tests.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    with ExitStack() as stack:
        try:
            run(args, _services(args, env, stack, http=http, server_http=server_http), out)
        except ProblemError as exc:
            print(f"hefl-admin: {exc.code}: {exc}", file=err)
            return REFUSED
        except AdminError as exc:
            print(f"hefl-admin: {exc}", file=err)
            return exc.exit_status
        except BrokenPipeError:
            # The reader (``| head``) went away: stop quietly, as other command-line tools do.
            if out is sys.stdout:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
    return 0
