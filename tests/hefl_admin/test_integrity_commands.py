"""``hefl-admin job repair``, ``job release`` and the integrity part of ``job show``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.hefl_admin.fakes import FakeKeyauth, FakeServer, job_record
from tests.hefl_admin.test_job_commands import run

JOB = "icu-mortality"
BAD = "5f0c2b7e-0000-4000-8000-000000000001"
OTHER = "5f0c2b7e-0000-4000-8000-000000000002"


def removed(update_id: str, client_id: str, version: int) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "client_id": client_id,
        "client_name": f"hospital-{client_id[-1]}",
        "version": version,
        "weight": 0.5,
    }


@pytest.fixture
def keyauth() -> FakeKeyauth:
    return FakeKeyauth()


@pytest.fixture
def training(keyauth: FakeKeyauth) -> FakeServer:
    server = FakeServer(keyauth)
    server.jobs[JOB] = job_record(JOB, "a" * 64, state="training", version=6)
    server.updates[JOB] = {BAD: removed(BAD, "client-b", 4), OTHER: removed(OTHER, "client-a", 5)}
    return server


def test_repair_removes_the_updates_and_names_whom_it_quarantined(
    keyauth: FakeKeyauth, training: FakeServer
) -> None:
    status, out, err = run(["job", "repair", JOB, "--update", BAD], keyauth, training)

    assert (status, err) == (0, "")
    request = training.requests[0]
    assert (request.method, request.url.path) == ("POST", f"/v1/jobs/{JOB}/repairs")
    assert json.loads(request.content) == {"update_ids": [BAD], "quarantine": True}
    lines = out.splitlines()
    assert (
        lines[0]
        == f"repair 1 of job {JOB}: the model is at version 7 (3 versions held the removed updates)"
    )
    assert lines[1].split() == ["UPDATE", "HOSPITAL", "IN_VERSION", "WEIGHT", "QUARANTINED"]
    assert lines[2].split() == [BAD, "hospital-b", "4", "0.5", "yes"]
    release = f"hefl-admin job release {JOB} client-b"
    assert lines[3] == f"quarantined hospital-b (client-b): release it with {release}"


def test_repair_of_several_updates_without_quarantine(
    keyauth: FakeKeyauth, training: FakeServer
) -> None:
    argv = ["job", "repair", JOB, "--update", BAD, "--update", OTHER, "--no-quarantine"]

    status, out, _ = run(argv, keyauth, training)

    assert status == 0
    assert json.loads(training.requests[0].content) == {
        "update_ids": [BAD, OTHER],
        "quarantine": False,
    }
    assert out.splitlines()[-1] == "quarantined: nobody"
    assert [line.split()[-1] for line in out.splitlines()[2:4]] == ["no", "no"]


def test_repair_json_and_refusals(keyauth: FakeKeyauth, training: FakeServer) -> None:
    shown = run(["job", "repair", JOB, "--update", BAD, "--json"], keyauth, training)
    again = run(["job", "repair", JOB, "--update", BAD], keyauth, training)

    assert shown[0] == 0
    assert json.loads(shown[1])["removed"][0]["update_id"] == BAD
    assert again == (1, "", f"hefl-admin: update_not_found: no applied update {BAD}\n")


def test_repair_needs_an_update(
    keyauth: FakeKeyauth, training: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        run(["job", "repair", JOB], keyauth, training)

    assert caught.value.code == 2
    assert "--update" in capsys.readouterr().err
    assert training.requests == []


def test_release_lets_a_quarantined_hospital_send_again(
    keyauth: FakeKeyauth, training: FakeServer
) -> None:
    training.quarantined[JOB] = {"client-b"}

    released = run(["job", "release", JOB, "client-b"], keyauth, training)
    again = run(["job", "release", JOB, "client-b"], keyauth, training)

    assert released == (0, f"released client-b: job {JOB} takes its updates again\n", "")
    assert training.requests[0].method == "DELETE"
    assert training.requests[0].url.path == f"/v1/jobs/{JOB}/quarantine/client-b"
    assert again == (
        1,
        "",
        "hefl-admin: client_not_quarantined: client client-b is not quarantined\n",
    )


INTEGRITY = {
    "state": "locating",
    "probe": {"version": 5, "update_id": None, "client_id": None},
    "detail": "locating: version 6 reported bad (range); version 3 checked good; probing version 5",
    "good": 3,
    "bad": 6,
    "reports": [],
    "probes": [],
    "repairs": [
        {
            "entry": 1,
            "version": 3,
            "at": "2030-01-01T00:03:00Z",
            "reason": "version 2 failed its range check, version 1 checked good",
            "first_bad_version": 2,
            "versions_lost": 1,
            "removed": [removed(BAD, "client-b", 2)],
            "quarantined": ["client-b"],
        }
    ],
    "quarantined": [
        {
            "client_id": "client-b",
            "client_name": "hospital-b",
            "since": "2030-01-01T00:03:00Z",
            "repair": 1,
        }
    ],
    "reports_total": 4,
    "updates_removed": 1,
}


def test_show_prints_the_search_the_repairs_and_the_quarantined(
    keyauth: FakeKeyauth, training: FakeServer
) -> None:
    training.statuses[JOB] = {"integrity": INTEGRITY}

    status, out, err = run(["job", "show", JOB], keyauth, training)

    assert (status, err) == (0, "")
    section = out[out.index("\nintegrity:") :].splitlines()[1:]
    assert section[0] == "integrity: locating (4 reports kept)"
    assert section[1] == f"  {INTEGRITY['detail']}"
    assert section[2] == "  probe: version 5, rebuilt, for any hospital"
    assert section[4] == ("repairs (each removed update subtracted at its weight):")
    assert section[5].startswith(
        "  repair 1 at 2030-01-01T00:03:00Z: version 3, 1 version lost: version 2 failed"
    )
    assert section[7].split() == [BAD, "hospital-b", "2", "0.5", "yes"]
    assert section[9] == f"quarantined (updates refused; hefl-admin job release {JOB} CLIENT_ID):"
    assert section[11].split() == ["hospital-b", "client-b", "2030-01-01T00:03:00Z", "1"]


def test_show_of_a_healthy_job_is_one_line(keyauth: FakeKeyauth, training: FakeServer) -> None:
    training.statuses[JOB] = {
        "integrity": {
            **INTEGRITY,
            "state": "healthy",
            "probe": None,
            "detail": None,
            "repairs": [],
            "quarantined": [],
        }
    }

    _, out, _ = run(["job", "show", JOB], keyauth, training)

    assert out.endswith("\nintegrity: healthy (4 reports kept)\n")
