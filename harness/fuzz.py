"""Property-based fuzzing from the services' own OpenAPI schemas (schemathesis)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings

from harness.live import live_job

__all__ = ["PROBLEM", "check_problem", "fuzz_api", "fuzz_live"]

PROBLEM = "application/problem+json"


def check_problem(response: Any) -> None:
    """Assert a fuzzed answer is no 5xx, and a refusal is a problem+json with a code."""
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        ctype = response.headers.get("content-type")
        ctype = ctype[0] if isinstance(ctype, list) else ctype  # schemathesis lists values
        assert ctype == PROBLEM, response.text[:300]
        body = response.json()
        assert isinstance(body["code"], str), body
        assert body["code"], body
        assert body["status"] == response.status_code


def fuzz_api(schema: Any, headers: dict[str, str], examples: int) -> dict[str, int]:
    """Run every operation's generated cases (schemathesis strategies driven by hypothesis
    directly: its pytest plugin does not run under pytest 9); calls per operation."""
    calls: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        calls[label] = 0

        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            calls[f"{case.operation.method.upper()} {case.operation.path}"] += 1
            check_problem(case.call(headers=headers, timeout=30))

        run()
    return calls


def fuzz_live(work: Path, examples: int) -> dict[str, Any]:
    """Both services, with and without credentials, ``examples`` cases per operation."""
    import schemathesis  # a dev tool: only the fuzzing part needs it

    with live_job(work, "fuzz", n_params=3000, seed=0) as job:
        keyauth, server, party = job.keyauth, job.server, job.party
        before = httpx.get(job.url("/model"), headers=party.auth).content
        start = time.perf_counter()
        calls: dict[str, dict[str, int]] = {}
        admin = {"Authorization": f"Bearer {job.admin_token}"}
        for name, url, headers in (
            ("keyauth", keyauth.url, {**party.auth, "X-Admin-Key": job.admin_key}),
            ("fl_server", server.url, party.auth),
            ("fl_server as admin", server.url, admin),
        ):
            schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
            calls[f"{name} with credentials"] = fuzz_api(schema, headers, examples)
            if not name.endswith("as admin"):
                calls[f"{name} without"] = fuzz_api(schema, {}, examples)
        unchanged = httpx.get(job.url("/model"), headers=party.auth).content == before
        alive = server.alive() and keyauth.alive()
    return {
        "calls": {k: sum(v.values()) for k, v in calls.items()},
        "operations": {k: len(v) for k, v in calls.items()},
        "server_5xx": 0,  # fuzz_api raises on the first 5xx or non-problem refusal
        "model_bytes_unchanged": unchanged,
        "services_alive": alive,
        "seconds": time.perf_counter() - start,
    }
