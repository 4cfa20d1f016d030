"""The loopback-host rule: which hosts count as this machine only."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback_host"]

_LOCALHOST = frozenset({"localhost", "localhost."})


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` only reaches this machine: a loopback address, or ``localhost``.

    keyauth uses it to refuse a placeholder admin key off loopback, fl_server to warn about
    serving without TLS off loopback, fl_client to allow plain ``http://`` to loopback
    only. ``host`` is a bind address or a URL's host: an IPv4 or IPv6 address (brackets
    allowed) or a name, in any case.

    Names under ``.localhost`` (``app.localhost``) are **not** loopback here, though
    RFC 6761 §6.3 says they should resolve to a loopback address. That is a SHOULD for
    resolvers: glibc without ``nss-myhostname`` sends such a name to DNS, where a search
    domain can turn it into ``app.localhost.example.org`` on another machine. Both uses
    of the rule let a secret or plaintext through on loopback, so a name whose resolution
    is not certain counts as exposed. ``localhost`` itself (with or without the trailing
    dot) is in the hosts file of every system hefl runs on, and counts as loopback.
    """
    if host.lower() in _LOCALHOST:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        # Any other name may resolve to a routable address: treat it as exposed.
        return False
