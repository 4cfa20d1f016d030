"""The v1 REST routes: each authenticates, makes one service call and converts its answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status

from fl_server.deps import CurrentClient, RequestBody, Service
from fl_server.domain import ModelDownload
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


def _model_response(download: ModelDownload) -> Response:
    headers = {
        "ETag": download.etag,
        "X-Hefl-Model-Version": str(download.version),
        "Cache-Control": "no-cache",
    }
    if download.body is None:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(download.body, media_type=_OCTETS, headers=headers)


@router.get("/healthz", tags=["public"])
async def healthz() -> HealthPublic:
    return HealthPublic()


@router.get("/v1/job", tags=["job"])
async def get_job(service: Service) -> JobPublic:
    return JobPublic.of(service.job())


@router.put(
    "/v1/job/layout",
    status_code=status.HTTP_201_CREATED,
    tags=["job"],
    openapi_extra=_json_body({"type": "object", "description": "ModelLayout.to_json()"}),
    responses={200: {"description": "the same layout was already set"}},
)
async def put_layout(
    response: Response, service: Service, _: CurrentClient, body: RequestBody
) -> LayoutAccepted:
    layout = await service.receive_layout(body)
    if not layout.created:
        response.status_code = status.HTTP_200_OK
    return LayoutAccepted.of(layout)


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
    service: Service, _: CurrentClient, body: RequestBody
) -> InitialModelAccepted:
    return InitialModelAccepted.of(await service.receive_initial_model(body))


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
    return _model_response(service.download_model(since, if_none_match))


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
async def post_update(service: Service, client: CurrentClient, body: RequestBody) -> UpdateAccepted:
    return UpdateAccepted.of(await service.receive_update(client, body))


@router.post(
    "/v1/metrics",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["training"],
    openapi_extra=_json_body(MetricsReportCreate.model_json_schema()),
)
async def post_metrics(
    service: Service, client: CurrentClient, body: RequestBody
) -> MetricsAccepted:
    return MetricsAccepted(version=await service.receive_metrics(client, body))


@router.get("/v1/status", tags=["public"])
async def get_status(service: Service) -> StatusPublic:
    return StatusPublic.of(service.status())
