"""The operator page's routes and who may read the status it shows (in process)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fl_server.material import KeyauthMaterial
from fl_server.ui import UPLOT_VERSION
from tests.fl_server.api import Api, assert_problem, open_api
from tests.fl_server.helpers import JOB, mint_token

pytestmark = pytest.mark.anyio

STATUS_PATHS = ("/v1/status", f"/v1/jobs/{JOB}/status")


async def test_the_page_and_its_files_are_served(api: Api) -> None:
    page = await api.http.get("/ui")
    script = await api.http.get("/ui/static/app.js")
    uplot = await api.http.get("/ui/static/vendor/uPlot.iife.min.js")
    missing = await api.http.get("/ui/static/../app.py")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert 'src="ui/static/app.js"' in page.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert f"(v{UPLOT_VERSION})" in uplot.text[:100]
    assert missing.status_code == 404


@pytest.mark.parametrize("path", STATUS_PATHS)
async def test_the_status_needs_a_token_by_default(api: Api, path: str) -> None:
    anonymous = await api.http.get(path)
    page = await api.http.get("/ui")
    metrics = await api.http.get("/metrics")

    assert_problem(anonymous, 401, "token_missing")
    # the page itself holds no data: it asks for a token; /metrics names jobs, never hospitals
    assert page.status_code == 200
    assert metrics.status_code == 200


@pytest.mark.parametrize("path", STATUS_PATHS)
async def test_public_access_is_an_explicit_opt_in(
    tmp_path: Path, material: KeyauthMaterial, signing_key: Ed25519PrivateKey, path: str
) -> None:
    async for api in open_api(tmp_path, material, signing_key, status_access="public"):
        anonymous = await api.http.get(path)

        assert anonymous.status_code == 200


@pytest.mark.parametrize("path", STATUS_PATHS)
async def test_token_access_takes_viewer_admin_and_client_tokens_only(
    tmp_path: Path, material: KeyauthMaterial, signing_key: Ed25519PrivateKey, path: str
) -> None:
    viewer = mint_token(signing_key, "viewer", name="viewer", role="viewer")
    async for api in open_api(tmp_path, material, signing_key):
        anonymous = await api.http.get(path)
        forged = await api.http.get(path, headers=api.auth("not-a-token"))
        answers = [
            await api.http.get(path, headers=api.auth(token))
            for token in (viewer, api.admin, api.token)
        ]
        # a viewer reads the status and nothing else
        create = await api.http.post("/v1/jobs", content=b"{}", headers=api.auth(viewer))
        model = await api.http.get(api.at("/model"), headers=api.auth(viewer))

        assert_problem(anonymous, 401, "token_missing")
        assert_problem(forged, 401, "token_invalid")
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert_problem(create, 403, "token_wrong_role")
        assert_problem(model, 403, "token_wrong_role")
