"""Tokens and cookie values never reach the logs or error bodies."""

from __future__ import annotations

import logging

import httpx2
import pytest

from tests.test_middleware import (
    INVALID,
    ORGS,
    PROJECTS,
    big_access_token,
    build_config,
    client_for,
    cookie_header,
    cookie_pairs_from_set_cookie,
    make_app,
)
from verifier.cookies import CHUNK_SIZE, CookieJar, TokenSet
from verifier.testing import DevIssuer

REFRESH = "opaque-refresh-token-6f1c0b9a2d7e4f58a3c1"
WINDOW = 20


def secrets_of(token: str) -> list[str]:
    """The token, its payload, and every 20-character slice of its signature."""
    found = [token]
    parts = token.split(".")
    if len(parts) == 3:
        payload, signature = parts[1], parts[2]
        found.append(payload)
        found += [signature[i : i + WINDOW] for i in range(max(len(signature) - WINDOW + 1, 0))]
    return found


async def test_no_token_or_cookie_value_appears_in_logs_or_error_bodies(
    issuer: DevIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="jwtedge")

    access = issuer.access_token("u1", organizations=ORGS, projects=PROJECTS)
    id_token = issuer.id_token("u1")
    big, _ = big_access_token(issuer, "u1", longer_than=CHUNK_SIZE)
    too_big, _ = big_access_token(issuer, "u1", longer_than=9000)
    invalid = {code: make(issuer) for code, make in INVALID.items()}
    config = build_config(issuer)
    chunked = cookie_pairs_from_set_cookie(
        CookieJar(config.cookies).set_cookies(TokenSet(access=big, id=id_token), secure=False)
    )
    valid_cookies = cookie_header(
        {"jwtedge_access": access, "jwtedge_id": id_token, "jwtedge_refresh": REFRESH}
    )

    responses: list[httpx2.Response] = []
    async with client_for(make_app(config)) as client:

        async def get(path: str, **headers: str) -> None:
            responses.append(await client.get(path, headers=headers))

        await get("/", Cookie=valid_cookies)
        await get("/api/me", Authorization=f"Bearer {access}")
        await get("/", Cookie=cookie_header(chunked))
        await get("/api/me", Authorization=f"Bearer {too_big}")
        for token in invalid.values():
            await get("/page", Cookie=cookie_header({"jwtedge_access": token}))
            await get("/api/me", Cookie=cookie_header({"jwtedge_access": token}))
            await get("/page", Authorization=f"Bearer {token}")
        responses.append(await client.post("/items", headers={"Cookie": valid_cookies}))
        responses.append(
            await client.post(
                "/items", headers={"Cookie": valid_cookies, "Origin": "https://evil.example"}
            )
        )
        await get("/healthz", Cookie=valid_cookies)

    statuses = [response.status_code for response in responses]
    assert statuses.count(401) == 2 * len(INVALID) + 1
    assert statuses.count(403) == 2
    # The run logged something, so an empty caplog does not pass vacuously.
    assert any(record.name == "jwtedge" for record in caplog.records)

    tokens = [access, id_token, big, too_big, REFRESH, *invalid.values()]
    secrets = [s for token in tokens for s in secrets_of(token)]
    secrets += list(chunked.values())
    errors = [response.text for response in responses if response.status_code >= 400]
    for secret in secrets:
        assert secret not in caplog.text
        for body in errors:
            assert secret not in body
