"""Outbound HTTP to keyauth and fl_server (docs/protocol.md): retried, answers typed."""

# The httpx transport is injectable (httpx.MockTransport, httpx.ASGITransport), so every
# call is testable without a network. Problems (application/problem+json) become the typed
# errors of fl_client.errors; httpx's own errors are translated in edge.py, once.

from fl_client.transport.edge import ClientOptions, RetryPolicy, require_secure_url
from fl_client.transport.keyauth import AccessToken, Enrollment, KeyauthClient, TokenManager
from fl_client.transport.server import JobClient, ServerClient, TokenSource

__all__ = [
    "AccessToken",
    "ClientOptions",
    "Enrollment",
    "JobClient",
    "KeyauthClient",
    "RetryPolicy",
    "ServerClient",
    "TokenManager",
    "TokenSource",
    "require_secure_url",
]
