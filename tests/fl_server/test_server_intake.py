"""A job's request handlers without HTTP: bodies come from a reader the test passes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fl_server.domain import BodyReader
from fl_server.downloads import etag_matches
from fl_server.errors import (
    BodyTooLargeError,
    InvalidInputError,
    MetricsInvalidError,
    VersionAheadError,
)
from fl_server.job_service import JobService
from fl_server.material import KeyauthMaterial
from fl_server.reports import parse_report
from fl_server.store import MemoryStore
from hefl_wire import AccessClaims
from tests.fl_server.helpers import Hospital, body_reader, open_job

pytestmark = pytest.mark.anyio


def reader_of(body: bytes) -> tuple[BodyReader, list[int]]:
    """A body reader that hands out ``body`` and records the limits it was asked for."""
    limits: list[int] = []
    return body_reader(body, limits), limits


@pytest.fixture
async def service(
    tmp_path: Path, material: KeyauthMaterial, hospital: Hospital, client: AccessClaims
) -> AsyncIterator[JobService]:
    opened = open_job(material, tmp_path, store=MemoryStore())
    layout, _ = reader_of(hospital.layout.to_json())
    assert (await opened.receive_layout(client, layout)).created
    initial, _ = reader_of(hospital.initial_model(hospital.random_values(0)))
    assert (await opened.receive_initial_model(client, initial)).state == "training"
    yield opened
    opened.close()


async def test_the_same_layout_again_is_not_created(
    service: JobService, hospital: Hospital, client: AccessClaims
) -> None:
    read, limits = reader_of(hospital.layout.to_json())

    again = await service.receive_layout(client, read)

    assert (again.created, again.fingerprint) == (False, hospital.layout.fingerprint.hex())
    assert limits == [service.settings.max_layout_bytes]


async def test_an_update_is_read_within_the_envelope_limit_after_admission(
    service: JobService, hospital: Hospital, client: AccessClaims
) -> None:
    read, limits = reader_of(hospital.update(hospital.random_values(1), base_version=0)[1])

    ack = await service.receive_update(client, read)

    assert (ack.receipt.version, ack.duplicate) == (1, False)
    assert limits == [service.envelope_limit()]
    assert service.status().queued_updates == 0


async def test_every_refused_update_is_counted_by_code_and_frees_its_place(
    service: JobService, hospital: Hospital, client: AccessClaims
) -> None:
    # Prepare
    envelope = hospital.update(hospital.random_values(1), base_version=0)[1]
    too_large, _ = reader_of(b"\x00" * (service.envelope_limit() + 1))
    truncated, _ = reader_of(envelope[:-7])
    ahead, _ = reader_of(hospital.update(hospital.random_values(1), base_version=5)[1])

    # Execute
    with pytest.raises(BodyTooLargeError):
        await service.receive_update(client, too_large)
    with pytest.raises(InvalidInputError):
        await service.receive_update(client, truncated)
    with pytest.raises(VersionAheadError):
        await service.receive_update(client, ahead)

    # Assert
    status = service.status()
    assert status.updates_rejected == {
        "body_too_large": 1,
        "envelope_truncated": 1,
        "version_ahead": 1,
    }
    assert status.clients[client.client_id].updates_rejected == 3
    assert status.queued_updates == 0


async def test_a_download_the_client_holds_has_no_body_and_counts_no_bytes(
    service: JobService, client: AccessClaims
) -> None:
    full = service.download_model(client, None, None)
    assert full.body is not None
    assert service.status().bytes_out == len(full.body)

    for if_none_match in (full.etag, f"W/{full.etag}", '"other", ' + full.etag, "*"):
        held = service.download_model(client, None, if_none_match)
        assert (held.body, held.etag, held.version) == (None, full.etag, 0)
    assert service.status().bytes_out == len(full.body)
    # A version from the future is refused, whether the client holds the model or not.
    with pytest.raises(VersionAheadError):
        service.download_model(client, 1, full.etag)


def test_etags_match_strongly_weakly_in_lists_and_by_star() -> None:
    assert etag_matches('"a-1"', '"a-1"')
    assert etag_matches('W/"a-1"', '"a-1"')
    assert etag_matches('"b-2" , "a-1"', '"a-1"')
    assert etag_matches("*", '"a-1"')
    assert not etag_matches('"a-2"', '"a-1"')
    assert not etag_matches("", '"a-1"')


async def test_a_metrics_report_is_read_checked_and_kept(
    service: JobService, client: AccessClaims
) -> None:
    read, limits = reader_of(b'{"version": 0, "metrics": {"loss": 0.5, "n_samples": 10}}')

    assert await service.receive_metrics(client, read) == 0

    assert limits == [service.settings.max_metrics_bytes]
    (summary,) = service.status().metrics
    assert (summary.version, summary.reports, summary.n_samples) == (0, 1, 10)


def test_an_invalid_metrics_body_names_each_field_at_fault_without_its_value() -> None:
    with pytest.raises(MetricsInvalidError) as info:
        parse_report(b'{"version": -1, "metrics": {"loss": "secret-ish"}}')

    detail = info.value.detail
    assert detail.startswith("version: Input should be greater than or equal to 0; metrics.loss")
    assert "secret-ish" not in detail
    with pytest.raises(MetricsInvalidError, match=r"^body: "):
        parse_report(b"[]")
