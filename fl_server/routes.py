"""The v1 REST routes: each authenticates, makes one service call and converts its answer."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Response, status
from fastapi.responses import JSONResponse, StreamingResponse

from fl_server.deps import (
    CurrentAdmin,
    CurrentClient,
    CurrentJob,
    CurrentReader,
    RequestBody,
    Service,
    StatusAccess,
)
from fl_server.domain import LeasedModel, ModelDownload, UpdateAck
from fl_server.schemas import (
    HealthPublic,
    InitialModelAccepted,
    IntegrityAccepted,
    IntegrityReportCreate,
    JobPublic,
    JobStatusPublic,
    LayoutAccepted,
    MetricsAccepted,
    MetricsReportCreate,
    RepairCreate,
    RepairPublic,
    ServerStatusPublic,
    SlotLease,
    UpdateAccepted,
    timestamp_to_datetime,
)

__all__ = ["router"]

router = APIRouter()

_JOB = "/v1/jobs/{job}"
_OCTETS = "application/octet-stream"
_ENVELOPE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _envelope_response(download: ModelDownload, headers: dict[str, str]) -> Response:
    body = download.body
    assert body is not None
    if isinstance(body, bytes):
        return Response(body, media_type=_OCTETS, headers=headers)
    # block by block from the published snapshot: the model is never joined into one body
    headers = {**headers, "Content-Length": str(body.length)}
    return StreamingResponse(body.chunks(), media_type=_OCTETS, headers=headers)


def _model_response(download: ModelDownload) -> Response:
    headers = {
        "ETag": download.etag,
        "X-Hefl-Model-Version": str(download.version),
        # a model is for token holders: revalidated by its ETag, never kept by a shared cache
        "Cache-Control": "private, no-cache",
    }
    if download.body is None:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return _envelope_response(download, headers)


def _leased_response(leased: LeasedModel, extra: dict[str, str] | None = None) -> Response:
    download = leased.download
    assert download.body is not None  # a lease's model is never "not modified": no ETag asked
    headers = {
        "ETag": download.etag,
        "X-Hefl-Model-Version": str(download.version),
        "X-Hefl-Job-State": leased.job.state.value,
        "X-Hefl-Job-Version": str(leased.job.version),
        "X-Hefl-Lease-Expires": timestamp_to_datetime(leased.expires_at).isoformat(),
        # the answer to a POST: a lease was taken, nothing here may be replayed from a cache
        "Cache-Control": "no-store",
        **(extra or {}),
    }
    return _envelope_response(download, headers)


def _update_response(ack: UpdateAck) -> Response:
    accepted = UpdateAccepted.of(ack)
    if ack.leased is None:
        return JSONResponse(accepted.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)
    # the next round's lease and model, the update's receipt (the 202's body) in a header
    receipt = accepted.model_dump_json()
    return _leased_response(ack.leased, {"X-Hefl-Update-Receipt": receipt})


@router.get("/healthz", tags=["public"])
async def healthz() -> HealthPublic:
    return HealthPublic()


# -- jobs: the administrator's, and what everyone may read ---------------------------------


@router.get("/v1/jobs", tags=["jobs"])
async def list_jobs(_: CurrentReader, service: Service) -> list[JobPublic]:
    return [JobPublic.of(job) for job in service.jobs()]


@router.post(
    "/v1/jobs",
    status_code=status.HTTP_201_CREATED,
    tags=["jobs"],
    openapi_extra=_json_body(
        {"type": "object", "description": "the study spec's canonical JSON (spec_to_json)"}
    ),
    responses={200: {"description": "the same spec was already a job"}},
)
async def create_job(
    response: Response, _: CurrentAdmin, service: Service, body: RequestBody
) -> JobPublic:
    created = await service.create_job(body)
    if not created.created:
        response.status_code = status.HTTP_200_OK
    return JobPublic.of(created.job)


@router.get(_JOB, tags=["jobs"])
async def get_job(_: CurrentReader, job: CurrentJob) -> JobPublic:
    return JobPublic.of(job.view())


@router.get(
    f"{_JOB}/spec",
    tags=["jobs"],
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "canonical JSON"}},
)
async def get_spec(_: CurrentReader, job: CurrentJob) -> Response:
    return Response(
        job.spec_json(),
        media_type="application/json",
        headers={"X-Hefl-Spec-Sha256": job.record.spec_sha256},
    )


@router.post(f"{_JOB}/pause", tags=["jobs"])
async def pause_job(_: CurrentAdmin, job: CurrentJob) -> JobPublic:
    return JobPublic.of(await job.pause())


@router.post(f"{_JOB}/resume", tags=["jobs"])
async def resume_job(_: CurrentAdmin, job: CurrentJob) -> JobPublic:
    return JobPublic.of(await job.resume())


@router.post(f"{_JOB}/stop", tags=["jobs"])
async def stop_job(_: CurrentAdmin, job: CurrentJob) -> JobPublic:
    return JobPublic.of(await job.stop())


@router.post(
    f"{_JOB}/rotation",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["jobs"],
    responses={409: {"description": "rotation_refused: keyauth's epoch is not newer, ..."}},
)
async def rotate_job(
    _: CurrentAdmin, service: Service, job: Annotated[str, Path(description="the job's name")]
) -> JobPublic:
    return JobPublic.of(await service.rotate_job(job))


# -- one job: what hospitals do ------------------------------------------------------------


@router.put(
    f"{_JOB}/layout",
    status_code=status.HTTP_201_CREATED,
    tags=["job"],
    openapi_extra=_json_body({"type": "object", "description": "ModelLayout.to_json()"}),
    responses={200: {"description": "the same layout was already set"}},
)
async def put_layout(
    response: Response, client: CurrentClient, job: CurrentJob, body: RequestBody
) -> LayoutAccepted:
    layout = await job.receive_layout(client, body)
    if not layout.created:
        response.status_code = status.HTTP_200_OK
    return LayoutAccepted.of(layout)


@router.get(
    f"{_JOB}/layout",
    tags=["job"],
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
)
async def get_layout(client: CurrentClient, job: CurrentJob) -> Response:
    return Response(job.layout_json(client), media_type="application/json")


@router.put(
    f"{_JOB}/initial-model",
    status_code=status.HTTP_201_CREATED,
    tags=["job"],
    openapi_extra=_ENVELOPE_BODY,
)
async def put_initial_model(
    client: CurrentClient, job: CurrentJob, body: RequestBody
) -> InitialModelAccepted:
    return InitialModelAccepted.of(await job.receive_initial_model(client, body))


@router.put(f"{_JOB}/rotation", tags=["job"], openapi_extra=_ENVELOPE_BODY)
async def put_rotated_model(client: CurrentClient, job: CurrentJob, body: RequestBody) -> JobPublic:
    return JobPublic.of(await job.receive_rotated_model(client, body))


@router.get(
    f"{_JOB}/model",
    tags=["model"],
    response_class=Response,
    responses={
        200: {"content": {_OCTETS: {}}, "description": "the model envelope"},
        304: {"description": "the model is still the version named by If-None-Match"},
    },
)
async def get_model(
    client: CurrentClient,
    job: CurrentJob,
    since: Annotated[
        int | None, Query(ge=0, description="only the blocks changed after this version")
    ] = None,
    version: Annotated[
        int | None,
        Query(ge=0, description="the integrity probe on offer: this version, rebuilt"),
    ] = None,
    update: Annotated[
        uuid.UUID | None,
        Query(description="the probe of the version plus this update, for its sender"),
    ] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    download = job.download_model(client, since, if_none_match, version=version, update_id=update)
    return _model_response(download)


@router.post(
    f"{_JOB}/slots",
    tags=["training"],
    responses={409: {"description": "paused, done or not started"}, 429: {}},
)
async def acquire_slot(client: CurrentClient, job: CurrentJob) -> SlotLease:
    return SlotLease(expires_at=timestamp_to_datetime(job.acquire_slot(client)))


@router.post(
    f"{_JOB}/leases",
    tags=["training"],
    response_class=Response,
    responses={
        200: {"content": {_OCTETS: {}}, "description": "the model envelope, with the lease"},
        409: {"description": "paused, done or not started"},
        429: {},
    },
)
async def lease_model(
    client: CurrentClient,
    job: CurrentJob,
    since: Annotated[
        int | None, Query(ge=0, description="only the blocks changed after this version")
    ] = None,
) -> Response:
    return _leased_response(job.lease_model(client, since))


@router.delete(f"{_JOB}/slots", status_code=status.HTTP_204_NO_CONTENT, tags=["training"])
async def release_slot(client: CurrentClient, job: CurrentJob) -> Response:
    job.release_slot(client)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    f"{_JOB}/updates",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["training"],
    response_class=Response,
    openapi_extra=_ENVELOPE_BODY,
    responses={
        202: {"model": UpdateAccepted, "description": "the update is durable"},
        200: {
            "content": {_OCTETS: {}},
            "description": "with lease=next: the update is durable (its receipt, the 202's "
            "body, in X-Hefl-Update-Receipt), and the next round's lease and model envelope "
            "as POST …/leases answers them",
        },
        409: {"description": "too stale, paused or done"},
        422: {"description": "samples_invalid: X-Hefl-Samples is not 1..10**9"},
        429: {},
        503: {},
    },
)
async def post_update(
    client: CurrentClient,
    job: CurrentJob,
    body: RequestBody,
    x_hefl_metrics: Annotated[
        str | None,
        Header(
            description="a metrics report that comes with the update: the JSON of "
            "POST …/metrics, compact, at most 4,096 bytes"
        ),
    ] = None,
    x_hefl_samples: Annotated[
        str | None,
        Header(description="the training rows behind the update (1..10**9; weighting)"),
    ] = None,
    lease: Annotated[
        Literal["next"] | None,
        Query(description="next: answer with the next round's lease and model (200)"),
    ] = None,
    since: Annotated[
        int | None,
        Query(ge=0, description="with lease=next: only the blocks changed after this version"),
    ] = None,
) -> Response:
    return _update_response(
        await job.receive_update(
            client,
            body,
            metrics=x_hefl_metrics,
            samples=x_hefl_samples,
            lease_next=lease == "next",
            since=since,
        )
    )


@router.post(
    f"{_JOB}/metrics",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["training"],
    openapi_extra=_json_body(MetricsReportCreate.model_json_schema()),
)
async def post_metrics(
    client: CurrentClient, job: CurrentJob, body: RequestBody
) -> MetricsAccepted:
    return MetricsAccepted(version=await job.receive_metrics(client, body))


# -- integrity: clients' checks, and the administrator's repairs ---------------------------


@router.post(
    f"{_JOB}/integrity",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["integrity"],
    openapi_extra=_json_body(IntegrityReportCreate.model_json_schema()),
    responses={409: {"description": "a version ahead, or an update not offered to you"}},
)
async def post_integrity(
    client: CurrentClient, job: CurrentJob, body: RequestBody
) -> IntegrityAccepted:
    return IntegrityAccepted(state=await job.receive_integrity(client, body))


@router.post(
    f"{_JOB}/repairs",
    tags=["integrity"],
    openapi_extra=_json_body(RepairCreate.model_json_schema()),
    responses={404: {"description": "no such update"}, 409: {"description": "too old"}},
)
async def post_repair(_: CurrentAdmin, job: CurrentJob, body: RequestBody) -> RepairPublic:
    return RepairPublic.of(await job.repair(body))


@router.delete(
    f"{_JOB}/quarantine/{{client_id}}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["integrity"],
    responses={404: {"description": "the client is not quarantined"}},
)
async def release_client(
    _: CurrentAdmin,
    job: CurrentJob,
    client_id: Annotated[str, Path(description="the quarantined client's id")],
) -> Response:
    await job.release(client_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- status: for token holders, or public (FLSERVER_STATUS_ACCESS) ------------------------


@router.get(f"{_JOB}/status", tags=["status"])
async def get_job_status(_: StatusAccess, job: CurrentJob) -> JobStatusPublic:
    return JobStatusPublic.of(job.status())


@router.get("/v1/status", tags=["status"])
async def get_status(_: StatusAccess, service: Service) -> ServerStatusPublic:
    return ServerStatusPublic.of(service.status())
