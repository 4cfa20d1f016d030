"""A corpus of hostile update envelopes through the fl_server app: each a 4xx problem, no change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import crypto
from fl_server.app import create_app
from fl_server.material import KeyauthMaterial
from harness.corpus import Hostile, check_answer, envelope_corpus
from harness.parties import (
    Party,
    decrypt_model,
    make_layout,
    model_envelope,
    random_blocks,
    update_envelope,
)
from keyauth.tokens import public_key_to_pem
from tests.fl_server.helpers import (
    EPOCH,
    JOB,
    PROFILE,
    admin_token,
    make_settings,
    mint_token,
    spec_body,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def keys() -> crypto.KeyMaterial:
    return crypto.generate_key_material(crypto.get_profile(PROFILE))


@pytest.fixture(scope="module")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def party(keys: crypto.KeyMaterial, signing_key: Ed25519PrivateKey) -> Party:
    cipher = crypto.ClientCipher(keys.secret_context, crypto.get_profile(PROFILE))
    return Party(
        "client-a", "", mint_token(signing_key, lifetime=3600), keys.secret_context, cipher, EPOCH
    )


@pytest.fixture
async def server(
    tmp_path: Path, keys: crypto.KeyMaterial, signing_key: Ed25519PrivateKey
) -> AsyncIterator[httpx.AsyncClient]:
    material = KeyauthMaterial(
        public_context=keys.public_context,
        key_epoch=EPOCH,
        profile=PROFILE,
        verification_key_pem=public_key_to_pem(signing_key),
    )
    app = create_app(make_settings(tmp_path / "state"), keyauth_material=material)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        # Every path below is the job's: the client puts its own "/layout", "/updates", ...
        base = f"http://server/v1/jobs/{JOB}"
        async with httpx.AsyncClient(transport=transport, base_url=base) as http:
            admin = {"Authorization": f"Bearer {admin_token(signing_key)}"}
            created = await http.post("http://server/v1/jobs", content=spec_body(), headers=admin)
            assert created.status_code == 201, created.text
            yield http


async def test_no_hostile_envelope_changes_the_model(
    server: httpx.AsyncClient, party: Party
) -> None:
    # Prepare
    layout = make_layout(5000, party.profile)
    initial = random_blocks(layout, party.profile, 3)
    assert (
        await server.put("/layout", content=layout.to_json(), headers=party.auth)
    ).status_code == 201
    assert (
        await server.put(
            "/initial-model",
            content=model_envelope(party, layout, initial),
            headers=party.auth,
        )
    ).status_code == 201
    before = await server.get("/model", headers=party.auth)
    corpus = envelope_corpus(party, layout, random_bodies=20)

    # Execute
    failures = []
    codes: dict[str, str] = {}
    for item in corpus:
        answer = await server.post(
            "/updates", content=item.body, headers={**party.auth, **item.headers}
        )
        problem = check_answer(item.name, answer)
        if problem:
            failures.append(problem)
        else:
            codes[item.name] = answer.json()["code"]
    after = await server.get("/model", headers=party.auth)

    # Assert
    assert not failures, "\n".join(failures)
    assert len(corpus) > 100
    assert after.content == before.content
    assert after.headers["ETag"] == before.headers["ETag"]
    version, model = decrypt_model(party, layout, after.content)
    assert version == 0
    assert np.max(np.abs(model - initial)) <= party.profile.error_bound(1)
    status = (await server.get("/status", headers=party.auth)).json()
    assert status["updates_applied"] == 0
    # Stable codes for the named cases (protocol.md's list).
    assert codes["key epoch + 1"] == "key_epoch_mismatch"
    assert codes["duplicated block index"] == "block_index_invalid"
    assert codes["block index u32 max"] == "block_index_invalid"
    assert codes["declared length u32 max"] == "envelope_too_large"
    assert codes["truncated at 80"] == "envelope_truncated"
    assert codes["scale NaN"] == "ciphertext_invalid"
    assert codes["scale +inf"] == "ciphertext_invalid"
    for name in codes:
        if name.startswith("context of profile"):
            assert codes[name] in ("ciphertext_invalid", "envelope_too_large"), name
    for name in codes:
        if "gzip" in name or "deflate" in name:  # never inflated, whatever it holds
            assert codes[name] == "encoding_unsupported", name
    # The server still takes a good update afterwards.
    _, good = update_envelope(party, layout, random_blocks(layout, party.profile, 4), 0)
    assert (await server.post("/updates", content=good, headers=party.auth)).status_code == 202


async def test_a_replayed_update_id_is_applied_once(
    server: httpx.AsyncClient, party: Party
) -> None:
    layout = make_layout(5000, party.profile)
    initial = random_blocks(layout, party.profile, 3)
    await server.put("/layout", content=layout.to_json(), headers=party.auth)
    await server.put(
        "/initial-model", content=model_envelope(party, layout, initial), headers=party.auth
    )
    values = random_blocks(layout, party.profile, 5)
    uid, envelope = update_envelope(party, layout, values, 0)
    answers = [
        await server.post("/updates", content=envelope, headers=party.auth) for _ in range(5)
    ]
    assert [a.status_code for a in answers] == [202] * 5
    assert [a.json()["duplicate"] for a in answers] == [False, True, True, True, True]
    assert {a.json()["update_id"] for a in answers} == {uid}
    assert (await server.get("/status", headers=party.auth)).json()["updates_applied"] == 1


def test_the_corpus_names_are_unique(party: Party) -> None:
    corpus = envelope_corpus(party, make_layout(5000, party.profile), random_bodies=3)
    assert len({item.name for item in corpus}) == len(corpus)
    assert all(isinstance(item, Hostile) for item in corpus)


async def test_a_body_in_a_content_coding_is_refused_not_inflated(
    server: httpx.AsyncClient, party: Party
) -> None:
    # Found by the corpus: a gzip-labelled body used to be parsed as if it were plain.
    layout = make_layout(5000, party.profile)
    await server.put("/layout", content=layout.to_json(), headers=party.auth)
    for coding in ("gzip", "deflate", "br", "gzip, identity", "x-unknown"):
        answer = await server.put(
            "/initial-model",
            content=b"\x1f\x8b" + b"\x00" * 100,
            headers={**party.auth, "Content-Encoding": coding},
        )
        assert answer.status_code == 415, (coding, answer.text)
        assert answer.json()["code"] == "encoding_unsupported"
    plain = await server.put(
        "/initial-model",
        content=model_envelope(party, layout, random_blocks(layout, party.profile, 1)),
        headers={**party.auth, "Content-Encoding": "identity"},
    )
    assert plain.status_code == 201, plain.text
