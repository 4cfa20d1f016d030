"""``hefl-admin``: the administrator's command line, talking to a running keyauth over HTTP."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import httpx

from hefl_wire import ProblemError
from keyauth.errors import AdminKeyMissingError, KeyauthError, error_from_problem

__all__ = ["AdminClient", "main"]

DEFAULT_URL = "http://127.0.0.1:8700"


class AdminClient:
    """Typed calls to keyauth's admin endpoints; problem answers become keyauth's errors.

    Parameters
    ----------
    http
        An ``httpx.Client`` whose ``base_url`` is keyauth (any transport: tests use
        ``httpx.MockTransport``).
    admin_key
        Sent as ``X-Admin-Key``.
    """

    def __init__(self, http: httpx.Client, admin_key: str | None) -> None:
        self._http = http
        self._admin_key = admin_key

    def _request(self, method: str, path: str, *, admin: bool = True, **kwargs: Any) -> Any:
        headers = {"Accept": "application/json"}
        if admin:
            if not self._admin_key:
                raise AdminKeyMissingError(
                    "no admin key: set KEYAUTH_ADMIN_KEY or pass --admin-key-file"
                )
            headers["X-Admin-Key"] = self._admin_key
        response = self._http.request(method, path, headers=headers, **kwargs)
        if response.is_error:
            raise _error_from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise KeyauthError.from_answer(
                f"keyauth answered {response.status_code} with a body that is not JSON",
                code="response_malformed",
                http_status=response.status_code,
            ) from None

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/healthz", admin=False)
        return result

    def create_enrollment_token(
        self, client_name: str, expires_in: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"client_name": client_name}
        if expires_in is not None:
            body["expires_in"] = expires_in
        result: dict[str, Any] = self._request("POST", "/v1/enrollment-tokens", json=body)
        return result

    def list_clients(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", "/v1/clients")
        return result

    def revoke_client(self, client_id: str) -> None:
        self._request("DELETE", f"/v1/clients/{quote(client_id, safe='')}")

    def rotate_key_epoch(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "/v1/key-epochs")
        return result


def _error_from_response(response: httpx.Response) -> ProblemError:
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {"code": f"http_{response.status_code}", "detail": response.reason_phrase}
    return error_from_problem(response.status_code, problem)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hefl-admin",
        description="Administer a hefl key authority (keyauth). The admin key is read from "
        "KEYAUTH_ADMIN_KEY or --admin-key-file, never from the command line, where other "
        "users could see it in the process list.",
    )
    parser.add_argument(
        "--url",
        default=None,
        help=f"keyauth base URL (default: $KEYAUTH_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--admin-key-file", type=Path, default=None, help="read the admin key from this file"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default: 10)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    token = commands.add_parser("token", help="enrollment tokens")
    token_commands = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = token_commands.add_parser("create", help="issue a single-use enrollment token")
    create.add_argument("client_name", help="name of the client it enrolls, e.g. hospital-a")
    create.add_argument("--expires-in", type=int, default=None, help="lifetime in seconds")
    output = create.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the response as JSON")
    output.add_argument("-q", "--quiet", action="store_true", help="print the token only")

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
    return parser


def _admin_key(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    if args.admin_key_file is not None:
        key: str = args.admin_key_file.read_text(encoding="utf-8").strip()
        return key
    return env.get("KEYAUTH_ADMIN_KEY") or None


def _run(args: argparse.Namespace, admin: AdminClient, out: TextIO) -> None:
    if args.command == "health":
        health = admin.health()
        print(f"{health['status']}: key epoch {health['key_epoch']}", file=out)
    elif args.command == "token":
        issued = admin.create_enrollment_token(args.client_name, args.expires_in)
        if args.quiet:
            print(issued["token"], file=out)
        elif args.json:
            print(json.dumps(issued, indent=2), file=out)
        else:
            print(f"token:       {issued['token']}", file=out)
            print(f"client_name: {issued['client_name']}", file=out)
            print(f"expires_at:  {issued['expires_at']}", file=out)
    elif args.command == "clients" and args.action == "list":
        clients = admin.list_clients()
        if args.json:
            print(json.dumps(clients, indent=2), file=out)
        else:
            _print_clients(clients, out)
    elif args.command == "clients":
        admin.revoke_client(args.client_id)
        print(f"revoked {args.client_id}", file=out)
    else:
        epoch = admin.rotate_key_epoch()
        if args.json:
            print(json.dumps(epoch, indent=2), file=out)
        else:
            print(f"key epoch {epoch['key_epoch']} (profile {epoch['profile']})", file=out)


def _print_clients(clients: list[dict[str, Any]], out: TextIO) -> None:
    rows = [("ID", "NAME", "ENROLLED_AT", "STATUS")]
    for client in clients:
        if client["revoked"]:
            status = f"revoked {client['revoked_at']}"
        elif client.get("confirmed", True):
            status = "active"
        else:  # enrolled, but no access token yet: the answer may not have arrived
            status = "active (no access token yet)"
        rows.append((client["id"], client["name"], client["enrolled_at"], status))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[3]]), file=out)


def main(
    argv: Sequence[str] | None = None,
    *,
    http: httpx.Client | None = None,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``hefl-admin``; returns the exit status (0 ok, 1 refused by keyauth, 2 usage or
    connection problem). ``http``, ``env``, ``out`` and ``err`` are for tests."""
    out = out or sys.stdout
    err = err or sys.stderr
    env = os.environ if env is None else env
    args = _build_parser().parse_args(argv)
    url = args.url or env.get("KEYAUTH_URL") or DEFAULT_URL
    try:
        admin_key = _admin_key(args, env)
    except OSError as exc:
        print(f"hefl-admin: cannot read the admin key file: {exc.strerror}", file=err)
        return 2
    client = http or httpx.Client(base_url=url, timeout=args.timeout)
    try:
        _run(args, AdminClient(client, admin_key), out)
    except ProblemError as exc:
        print(f"hefl-admin: {exc.code}: {exc}", file=err)
        return 1
    except httpx.TransportError as exc:
        print(f"hefl-admin: cannot reach keyauth at {url}: {exc}", file=err)
        return 2
    except BrokenPipeError:
        # The reader (``| head``) went away: stop quietly, as other command-line tools do.
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        if http is None:
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
