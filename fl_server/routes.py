"""The v1 REST routes: each parses, authenticates, calls the service and returns."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import ValidationError

from fl_server.deps import CurrentClient, Service, read_body
from fl_server.errors import MetricsInvalidError, ServerError
from fl_server.schemas import (
    HealthPublic,
    InitialModelAccepted,
    JobPublic,
    LayoutAccepted,
    MetricsAccepted,
    MetricsReportCreate,
    SlotLease,
    StatusPublic,
    UpdateAccepted,
    timestamp_to_datetime,
)

__all__ = ["router"]

router = APIRouter()

_OCTETS = "application/octet-stream"
_ENVELOPE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _etag_matches(if_none_match: str, etag: str) -> bool:
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


@router.get("/healthz", tags=["public"])
async def healthz() -> HealthPublic:
    return HealthPublic()


@router.get("/v1/job", tags=["job"])
async def get_job(service: Service) -> JobPublic:
    return service.job()


@router.put(
    "/v1/job/layout",
    status_code=status.HTTP_201_CREATED,
    tags=["job"],
    openapi_extra=_json_body({"type": "object", "description": "ModelLayout.to_json()"}),
    responses={200: {"description": "the same layout was already set"}},
)
async def put_layout(
    request: Request, response: Response, service: Service, _: CurrentClient
) -> LayoutAccepted:
    body = await read_body(request, service.settings.max_layout_bytes)
    created = await asyncio.wrap_future(service.set_layout(body))
    if not created:
        response.status_code = status.HTTP_200_OK
    return LayoutAccepted(fingerprint=service.job().layout_fingerprint or "")


@router.get(
    "/v1/job/layout",
    tags=["job"],
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
)
async def get_layout(service: Service) -> Response:
    return Response(service.layout_json(), media_type="application/json")


@router.put(
    "/v1/job/initial-model",
    status_code=status.HTTP_201_CREATED,
    tags=["job"],
    openapi_extra=_ENVELOPE_BODY,
)
async def put_initial_model(
    request: Request, service: Service, _: CurrentClient
) -> InitialModelAccepted:
    body = await read_body(request, service.envelope_limit())
    await asyncio.wrap_future(service.set_initial_model(body))
    job = service.job()
    return InitialModelAccepted(version=job.version, state=job.state)


@router.get(
    "/v1/model",
    tags=["model"],
    response_class=Response,
    responses={
        200: {"content": {_OCTETS: {}}, "description": "the model envelope"},
        304: {"description": "the model is still the version named by If-None-Match"},
    },
)
async def get_model(
    service: Service,
    since: Annotated[
        int | None, Query(ge=0, description="only the blocks changed after this version")
    ] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    snapshot = service.snapshot()
    if since is not None:
        snapshot.changed_since(since)  # a version from the future is refused, 304 or not
    headers = {
        "ETag": snapshot.etag,
        "X-Hefl-Model-Version": str(snapshot.version),
        "Cache-Control": "no-cache",
    }
    if if_none_match is not None and _etag_matches(if_none_match, snapshot.etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    body = snapshot.to_bytes(since)
    service.count_bytes_out(len(body))
    return Response(body, media_type=_OCTETS, headers=headers)


@router.post("/v1/slots", tags=["training"], responses={429: {"description": "all slots taken"}})
async def acquire_slot(service: Service, client: CurrentClient) -> SlotLease:
    return SlotLease(expires_at=timestamp_to_datetime(service.acquire_slot(client)))


@router.delete("/v1/slots", status_code=status.HTTP_204_NO_CONTENT, tags=["training"])
async def release_slot(service: Service, client: CurrentClient) -> Response:
    service.release_slot(client)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/v1/updates",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["training"],
    openapi_extra=_ENVELOPE_BODY,
    responses={409: {"description": "too stale, or not training"}, 429: {}, 503: {}},
)
async def post_update(request: Request, service: Service, client: CurrentClient) -> UpdateAccepted:
    try:
        with service.admit_update(client) as ticket:
            body = await read_body(request, ticket.max_body_bytes)
            ack = await asyncio.wrap_future(service.submit_update(ticket, body))
    except ServerError as exc:
        service.note_rejected(exc.code, client)
        raise
    receipt = ack.receipt
    return UpdateAccepted(
        update_id=str(receipt.update_id),
        version=receipt.version,
        staleness=receipt.staleness,
        weight=receipt.weight,
        duplicate=ack.duplicate,
    )


@router.post(
    "/v1/metrics",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["training"],
    openapi_extra=_json_body(MetricsReportCreate.model_json_schema()),
)
async def post_metrics(
    request: Request, service: Service, client: CurrentClient
) -> MetricsAccepted:
    body = await read_body(request, service.settings.max_metrics_bytes)
    try:
        report = MetricsReportCreate.model_validate_json(body)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_input=False)
        )
        raise MetricsInvalidError(detail) from None
    await asyncio.wrap_future(service.record_metrics(client, report.version, report.metrics))
    return MetricsAccepted(version=report.version)


@router.get("/v1/status", tags=["public"])
async def get_status(service: Service) -> StatusPublic:
    return service.status()
