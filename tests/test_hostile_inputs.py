"""Issue 17: what an unauthenticated request can make us do is bounded.

The exact inputs of the issue, through every path that touches a token:

- a 64,000-character token whose header has ~5,000 members, as a Bearer
  header and as the access cookie, with the default ``keys.remote``
  (``unknown-kid``) and with ``never``: ``token_too_large`` before anything
  reads it (no key fetch, nothing cached), also on WebSocket upgrades, the
  forward-auth endpoint, the refresh proof, the login callback and
  ``jwtedge inspect``;
- ~700 header members under the 8 KiB cap: ``token_malformed`` (more than
  ``MAX_HEADER_MEMBERS``), and at the 1 MiB maximum cap too;
- 1,024 distinct hostile tokens: the parsed-header cache does not grow;
- ``Retry-After: ²`` (and friends) from the issuer: ``jwtedge bake`` exits 3
  with its files untouched, ``--fallback`` exits 0, and a run-time key fetch
  ends in a 401 or 503, never a 500.

Costs are measured by ``bench/hostile.py``, never timed here.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import string
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from tests.test_cli import DISCOVERY, JWKS_URL, FakeTime, Issuer, invoke, one_line, write_bake
from tests.test_cli import ISSUER as CLI_ISSUER
from tests.test_login import APP, authorize, edge_app, new_issuer, start_login
from verifier import http_fields, jws
from verifier.app import create_app
from verifier.config import AppConfig
from verifier.cookies import TokenSet
from verifier.errors import JWKSFetchFailed, SignatureInvalid, TokenMalformed, TokenTooLarge
from verifier.fetch import Fetcher
from verifier.jwks import parse_jwks
from verifier.middleware import JWTSessionMiddleware, get_session
from verifier.remote import RemoteKeys
from verifier.testing import DevIssuer
from verifier.tokens import (
    MAX_HEADER_MEMBERS,
    TokenVerifier,
    check_size,
    unverified_header,
)

# -- the issue's inputs -------------------------------------------------------------

_NAME_CHARS = string.ascii_letters + string.digits
_JOSE_NAMES = {"alg", "kid", "typ", "cty", "jku", "jwk", "x5u", "x5c", "b64", "zip"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def member_names(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct 3-character names, none of them a JOSE header name."""
    combos = ("".join(combo) for combo in itertools.product(_NAME_CHARS, repeat=3))
    names = (name for name in combos if name not in _JOSE_NAMES)
    return list(itertools.islice(names, seed, seed + count))


def many_members(count: int, *, kid: str = "hostile", seed: int = 0) -> str:
    body = ",".join(f'"{name}":0' for name in member_names(count, seed))
    return f'{{"alg":"RS256","kid":"{kid}",{body}}}'


def forged(header_json: str, total: int) -> str:
    """A forged token (random signature) of exactly ``total`` characters with this header."""
    header = b64(header_json.encode())
    claims: dict[str, Any] = {"iss": "http://127.0.0.1:9000", "sub": "attacker", "exp": 2**31}
    base = len(json.dumps({**claims, "pad": ""}))
    for signature_bytes in (256, 257, 255):
        signature = b64(os.urandom(signature_bytes))
        wanted = total - len(header) - len(signature) - 2
        if wanted % 4 != 1:  # unpadded base64url never has a length of 4k+1
            claims["pad"] = "x" * (wanted * 3 // 4 - base)
            token = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
            assert len(token) == total
            return token
    raise AssertionError("unreachable: one of three lengths always fits")


#: The issue's token: 64,000 characters, ~5,000 header members.
BIG = forged(many_members(5000), 64_000)
#: ~700 header members under the default 8,192-byte cap.
UNDER = forged(many_members(700, kid="hostile-700"), 8_000)


def test_the_inputs_are_the_issues() -> None:
    assert len(BIG) == 64_000
    header = json.loads(base64.urlsafe_b64decode(BIG.split(".")[0] + "=="))
    assert len(header) == 5002
    assert len(UNDER) == 8_000 <= 8192
    assert len(json.loads(base64.urlsafe_b64decode(UNDER.split(".")[0] + "=="))) == 702


# -- apps -----------------------------------------------------------------------------


async def me(request: Request) -> JSONResponse:
    session = get_session(request)
    return JSONResponse({"user": session.user.id if session else None})


async def ws_me(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"authenticated": websocket.user.is_authenticated})
    await websocket.close()


ROUTES = [WebSocketRoute("/ws", ws_me), Route("/{path:path}", me)]


def config_for(issuer: DevIssuer, remote: str, **auth: Any) -> AppConfig:
    values: dict[str, Any] = {
        "issuer": issuer.issuer,
        "audience": "api",
        "client_id": "web",
        "jwks": parse_jwks(issuer.jwks()),
        **auth,
    }
    return AppConfig(_env_file=None, auth=values, keys={"remote": remote})


def middleware(issuer: DevIssuer, remote: str, **auth: Any) -> JWTSessionMiddleware:
    """The middleware; its remote layer (if any) reaches only the issuer's ASGI app."""
    config = config_for(issuer, remote, **auth)
    verifier = TokenVerifier.from_config(config)
    layer = None
    if remote != "never":
        transport = httpx2.ASGITransport(app=issuer.app)
        layer = RemoteKeys.from_config(config, verifier.keys, transport=transport)
    return JWTSessionMiddleware(Starlette(routes=ROUTES), config, verifier=verifier, remote=layer)


@pytest.fixture
def issuer() -> DevIssuer:
    """A fresh issuer per test, so its request counters start at zero."""
    return DevIssuer(issuer="http://127.0.0.1:9000", audience="api", client_id="web")


@pytest.fixture
def cache_before() -> tuple[dict[str, Any], int]:
    """The parsed-header cache's entries and size before the test."""
    return dict(jws._HEADERS.entries), jws._HEADERS.size


def assert_cache_untouched(before: tuple[dict[str, Any], int]) -> None:
    entries, _size = before
    added = set(jws._HEADERS.entries) - set(entries)
    assert not added, f"{len(added)} header(s) of tokens that never verified were cached"


REMOTES = ["unknown-kid", "never"]


@pytest.fixture
def _no_app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("APP_CONFIG_") or name == "GITHUB_ENV":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


# -- the 64,000-character token ------------------------------------------------------


@pytest.mark.parametrize("remote", REMOTES)
@pytest.mark.parametrize("how", ["bearer", "cookie"])
async def test_64000_character_token_with_5000_header_members_is_too_large(
    issuer: DevIssuer, remote: str, how: str, cache_before: tuple[dict[str, Any], int]
) -> None:
    app = middleware(issuer, remote)
    headers = (
        {"Authorization": f"Bearer {BIG}"}
        if how == "bearer"
        else {"Cookie": f"jwtedge_access={BIG}"}
    )
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        api = await client.get("/api/me", headers=headers)
        page = await client.get("/", headers=headers)

    assert api.status_code == 401
    assert api.json()["code"] == "token_too_large"
    assert BIG not in api.text
    # Pages are anonymous with a bad cookie; a bad Bearer is a 401 everywhere.
    assert page.status_code == (401 if how == "bearer" else 200)
    assert app.stats.rejected == {"token_too_large": 2}
    # Refused unread: the header naming an unknown kid made no key fetch.
    assert issuer.stats.discovery_requests == issuer.stats.jwks_requests == 0
    assert_cache_untouched(cache_before)


@pytest.mark.parametrize("remote", REMOTES)
@pytest.mark.parametrize("how", ["bearer", "cookie"])
def test_64000_character_token_refuses_the_websocket_upgrade_as_too_large(
    issuer: DevIssuer, remote: str, how: str
) -> None:
    app = middleware(issuer, remote)
    headers = (
        {"Authorization": f"Bearer {BIG}"}
        if how == "bearer"
        else {"Cookie": f"jwtedge_access={BIG}", "Origin": "http://127.0.0.1"}
    )
    with (
        TestClient(app) as client,
        pytest.raises(WebSocketDenialResponse) as denied,
        # A loopback host over plain ws: the cookie names carry no __Host- prefix.
        client.websocket_connect("ws://127.0.0.1/ws", headers=headers),
    ):
        pass

    assert denied.value.status_code == 401
    assert denied.value.json()["code"] == "token_too_large"
    assert app.stats.websocket_refused == {"token_too_large": 1}
    assert issuer.stats.jwks_requests == 0


@pytest.mark.parametrize("how", ["bearer", "cookie"])
def test_forward_auth_refuses_the_64000_character_token(how: str) -> None:
    issuer = new_issuer()
    app = edge_app(issuer, keys={"remote": "unknown-kid"})
    headers = (
        {"Authorization": f"Bearer {BIG}"}
        if how == "bearer"
        else {"Cookie": f"jwtedge_access={BIG}"}
    )
    with TestClient(app, base_url=APP) as client:
        response = client.get("/auth/verify", headers=headers)

    assert response.status_code == 401
    assert not any(name.lower().startswith("x-auth-") for name in response.headers)
    if how == "bearer":
        assert response.json()["code"] == "token_too_large"
    assert issuer.stats.jwks_requests == 0


async def test_an_oversized_token_is_no_refresh_proof(issuer: DevIssuer) -> None:
    """The refresh proof is the caller's own verified token: the size cap comes first."""
    app = middleware(issuer, "unknown-kid")

    with pytest.raises(TokenTooLarge):
        await app.proof_for(TokenSet(access=BIG, id=BIG, refresh="a-refresh-token"))
    genuine = issuer.access_token("u1", ttl=-60)
    claims, _key = await app.proof_for(TokenSet(access=genuine, id=BIG, refresh="r"))
    assert claims["sub"] == "u1"
    assert issuer.stats.jwks_requests == 0


def test_a_refresh_cookie_with_an_oversized_id_token_never_reaches_the_issuer() -> None:
    issuer = new_issuer()
    refresh_token = issuer.login("ada")["refresh_token"]
    app = edge_app(issuer, keys={"remote": "unknown-kid"})
    cookie = f"jwtedge_refresh={refresh_token}; jwtedge_id={BIG}"
    with TestClient(app, base_url=APP) as client:
        page = client.get("/", headers={"Cookie": cookie})
        api = client.get("/api/session", headers={"Cookie": cookie})

    assert page.status_code == 200
    # No new tokens (the cookies the proof failed with may be cleared).
    assert "jwtedge_access=ey" not in page.headers.get("set-cookie", "")
    assert api.status_code == 401
    assert issuer.stats.token_requests == 0
    assert issuer.stats.jwks_requests == 0


class HostileTokenEndpoint(httpx2.AsyncBaseTransport):
    """The issuer's app, except that /token answers with the hostile access token."""

    def __init__(self, issuer: DevIssuer, access_token: str) -> None:
        self.inner = httpx2.ASGITransport(app=issuer.app)
        self.token_path = httpx2.URL(issuer.discovery()["token_endpoint"]).path
        self.access_token = access_token

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path != self.token_path:
            return response
        body = json.loads(await response.aread())
        return httpx2.Response(200, json={**body, "access_token": self.access_token})


@pytest.mark.parametrize("token", ["BIG", "UNDER"])
def test_the_login_callback_refuses_a_hostile_access_token_from_the_issuer(token: str) -> None:
    from tests.test_login import edge_config

    issuer = new_issuer()
    hostile = {"BIG": BIG, "UNDER": UNDER}[token]
    config = edge_config(issuer, keys={"remote": "unknown-kid"})
    app = create_app(config, issuer_transport=HostileTokenEndpoint(issuer, hostile))
    with TestClient(app, base_url=APP, follow_redirects=False) as client:
        callback = authorize(issuer, start_login(client))
        response = client.get(callback)

    assert response.status_code == 400
    code = "token_too_large" if token == "BIG" else "token_malformed"
    assert "token_invalid" in response.text
    assert code in response.text
    assert hostile not in response.text
    assert "jwtedge_access" not in response.headers.get("set-cookie", "")
    assert issuer.stats.jwks_requests == 0


@pytest.mark.usefixtures("_no_app_env")
def test_inspect_refuses_the_64000_character_token_without_decoding_it(tmp_path: Path) -> None:
    dev = DevIssuer(issuer=CLI_ISSUER, audience="api", client_id="web")
    env = tmp_path / "app.env"
    write_bake(env, dev, APP_CONFIG_AUTH__ISSUER=CLI_ISSUER, APP_CONFIG_AUTH__AUDIENCE="api")
    now = lambda: datetime.now(UTC)  # noqa: E731
    text = invoke(["inspect", "--env-file", str(env)], input=BIG, now=now)
    machine = invoke(["inspect", "--json", "--env-file", str(env)], input=BIG, now=now)

    assert text.exit_code == 1
    assert "verdict: invalid (token_too_large)" in text.stdout
    assert "header (unverified): (not decodable)" in text.stdout
    assert machine.exit_code == 1
    document = json.loads(machine.stdout)
    assert document["error"]["code"] == "token_too_large"
    assert document["access_token"] == {"unverified_header": None, "unverified_claims": None}
    for result in (text, machine):
        assert BIG[:64] not in result.stdout + result.stderr


@pytest.mark.e2e
def test_the_running_app_refuses_the_issues_tokens_without_calling_the_issuer() -> None:
    """As the issue tried it: real uvicorn, default settings (keys.remote=unknown-kid),
    the issuer served on 127.0.0.1 too, so a key fetch would be a real request."""
    from tests.e2e.servers import app_config, dev_issuer, serve_app

    with dev_issuer() as issuer:
        app = create_app(app_config(issuer))
        with serve_app(app) as url, httpx2.Client(base_url=url) as client:
            answers = {
                "bearer": client.get("/api/session", headers={"Authorization": f"Bearer {BIG}"}),
                "cookie": client.get("/api/session", headers={"Cookie": f"jwtedge_access={BIG}"}),
                "forward auth": client.get(
                    "/auth/verify", headers={"Authorization": f"Bearer {BIG}"}
                ),
                "700 members": client.get(
                    "/api/session", headers={"Authorization": f"Bearer {UNDER}"}
                ),
            }
        fetches = issuer.stats.discovery_requests + issuer.stats.jwks_requests

    codes = {name: (answer.status_code, answer.json()["code"]) for name, answer in answers.items()}
    assert codes == {
        "bearer": (401, "token_too_large"),
        "cookie": (401, "token_too_large"),
        "forward auth": (401, "token_too_large"),
        "700 members": (401, "token_malformed"),
    }
    assert fetches == 0


# -- the size cap and the header member cap in the verifier ------------------------------


def test_check_size_refuses_over_the_cap_and_names_only_sizes() -> None:
    check_size("x" * 8192, 8192)
    check_size(b"x" * 8192, 8192)
    with pytest.raises(TokenTooLarge) as refused:
        check_size(BIG, 8192)
    assert refused.value.code == "token_too_large"
    assert refused.value.context == {"size": 64_000, "limit": 8192}
    assert BIG[:32] not in str(refused.value) + repr(refused.value)


def test_unverified_header_applies_the_size_cap_first() -> None:
    with pytest.raises(TokenTooLarge):
        unverified_header(BIG)
    with pytest.raises(TokenTooLarge):
        unverified_header(BIG, max_bytes=60_000)
    # Under a cap it fits, the header is read, and its member count refuses it.
    with pytest.raises(TokenMalformed, match=f"more than {MAX_HEADER_MEMBERS} members"):
        unverified_header(BIG, max_bytes=65_536)


@pytest.mark.parametrize("remote", REMOTES)
async def test_700_header_members_under_the_cap_are_malformed_and_fetch_nothing(
    issuer: DevIssuer, remote: str, cache_before: tuple[dict[str, Any], int]
) -> None:
    app = middleware(issuer, remote)
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        response = await client.get("/api/me", headers={"Authorization": f"Bearer {UNDER}"})

    assert response.status_code == 401
    assert response.json()["code"] == "token_malformed"
    assert issuer.stats.jwks_requests == 0
    assert_cache_untouched(cache_before)
    with pytest.raises(TokenMalformed, match=f"more than {MAX_HEADER_MEMBERS} members"):
        app.verifier.verify_access(UNDER)


@pytest.mark.parametrize(
    ("shape", "why"),
    [
        ("distinct members", f"more than {MAX_HEADER_MEMBERS} members"),
        ("one member repeated", f"more than {MAX_HEADER_MEMBERS} members"),
        ("nested 1,000 deep", "nests deeper"),
        ("unterminated string", "not JSON"),
    ],
)
def test_a_1_mib_hostile_header_at_the_maximum_cap_is_malformed(
    issuer: DevIssuer, shape: str, why: str, cache_before: tuple[dict[str, Any], int]
) -> None:
    """The shapes that made the old duplicate check quadratic (minutes per token)."""
    limit = 1024 * 1024
    room = limit * 3 // 4 - 400
    header = {
        "distinct members": many_members(room // 8),
        "one member repeated": '{"alg":"RS256",' + ",".join(['"a":0'] * (room // 6)) + "}",
        "unterminated string": '{"alg":"RS256","x":"' + '\\":' * (room // 3),
        "nested 1,000 deep": '{"alg":"RS256","x":'
        + "[" * 1000
        + "0"
        + "]" * 1000
        + ',"y":"'
        + "y" * (room - 2100)
        + '"}',
    }[shape]
    token = forged(header, limit)
    verifier = TokenVerifier.from_config(config_for(issuer, "never", max_token_bytes=limit))

    with pytest.raises(TokenMalformed) as refused:
        verifier.verify_access(token)

    assert why in refused.value.message
    assert_cache_untouched(cache_before)


def test_a_1_mib_header_with_colons_in_a_value_is_parsed_and_refused_by_its_signature(
    issuer: DevIssuer, cache_before: tuple[dict[str, Any], int]
) -> None:
    limit = 1024 * 1024
    colons = ":" * (limit * 3 // 4 - 500)
    token = forged(f'{{"alg":"RS256","kid":"{issuer.kid}","x":"{colons}"}}', limit)
    verifier = TokenVerifier.from_config(config_for(issuer, "never", max_token_bytes=limit))

    with pytest.raises(SignatureInvalid):
        verifier.verify_access(token)

    assert_cache_untouched(cache_before)


# -- no cache an attacker can grow --------------------------------------------------------


@pytest.mark.parametrize("remote", REMOTES)
async def test_1024_distinct_hostile_tokens_leave_the_header_cache_as_it_was(
    issuer: DevIssuer, remote: str, cache_before: tuple[dict[str, Any], int]
) -> None:
    app = middleware(issuer, remote)
    kid = issuer.kid
    hostile = [forged(many_members(700, kid=f"h{i}", seed=i), 8_000) for i in range(1024)]
    # Small, well-formed headers naming a baked kid, with a forged signature.
    forgeries = [forged(f'{{"alg":"RS256","kid":"{kid}","n":{i}}}', 600) for i in range(1024)]
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        for token in hostile + forgeries:
            response = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401

    assert app.stats.rejected == {"token_malformed": 1024, "signature_invalid": 1024}
    assert_cache_untouched(cache_before)
    assert jws._HEADERS.size <= jws._HEADERS.max_bytes


def test_a_verified_token_header_is_cached_and_the_cache_is_bounded_in_bytes(
    issuer: DevIssuer,
) -> None:
    verifier = TokenVerifier.from_config(config_for(issuer, "never"))
    cache = jws._HEADERS
    kid = issuer.kid
    claims = {"iss": issuer.issuer, "sub": "u1", "aud": "api", "exp": 2**31}

    def signed(filler: str) -> str:
        header = {"alg": "RS256", "kid": kid, "typ": "at+jwt", "x-filler": filler}
        return issuer.sign(claims, header=header, kid=kid, alg="RS256")

    # Verified tokens with ~450-character header segments, until well past the budget.
    for i in range(cache.max_bytes // 450 + 50):
        token = signed(f"{i:04d}" + "f" * 280)
        verifier.verify_access(token)
        segment = token.split(".")[0]
        assert segment in cache.entries
        assert cache.size <= cache.max_bytes
        assert cache.size == sum(len(name) for name in cache.entries)
    # A header segment longer than max_segment is verified, never kept.
    long_header = signed("f" * cache.max_segment)
    verifier.verify_access(long_header)
    assert long_header.split(".")[0] not in cache.entries


# -- Retry-After: ² and the other response headers ----------------------------------------


def weird(status: int, **fields: str) -> Any:
    """A reply whose header values are raw UTF-8 (httpx2 refuses non-ASCII str values)."""
    raw = [(name.encode(), value.encode("utf-8")) for name, value in fields.items()]
    return lambda _request: httpx2.Response(status, headers=raw)


#: Retry-After values off RFC 9110's grammar (``"²".isdigit()`` is true; ``int("١٢")`` is 12).
#: Look-alike digits are the point (a mathematical bold 7 is U+1D7D5).
OFF_GRAMMAR = [
    "²",
    "١٢",
    "\U0001d7d5",
    "-1",
    "1e3",
    "0x10",
    "7.5",
    "Wed, 21 Oct 2015 07:28:12 GMT²",
]


@pytest.mark.usefixtures("_no_app_env")
@pytest.mark.parametrize("retry_after", OFF_GRAMMAR)
@pytest.mark.parametrize("url", [DISCOVERY, JWKS_URL])
def test_bake_with_a_retry_after_off_the_grammar_exits_3_with_files_untouched(
    tmp_path: Path, retry_after: str, url: str
) -> None:
    dev = DevIssuer(issuer=CLI_ISSUER, audience="api", client_id="web")
    env, out = tmp_path / ".env", tmp_path / "jwks.json"
    env.write_text("APP_CONFIG_AUTH__JWKS='previous'\n")
    out.write_text("{}")
    down = Issuer(dev).on(url, weird(503, **{"retry-after": retry_after}))
    fake = FakeTime()

    failed = invoke(
        ["bake", "--issuer", CLI_ISSUER, "--env-file", str(env), "--json-file", str(out)],
        down,
        fake=fake,
    )
    fallback = invoke(["bake", "--issuer", CLI_ISSUER, "--env-file", str(env), "--fallback"], down)

    assert failed.exit_code == 3, failed.stdout + failed.stderr
    assert "HTTP 503" in one_line(failed.stderr)
    # The header was ignored: the waits are the plain backoff (jitter 0.5).
    assert fake.sleeps == [pytest.approx(0.375), pytest.approx(0.75), pytest.approx(1.5)]
    assert fallback.exit_code == 0, fallback.stdout + fallback.stderr
    assert "warning" in one_line(fallback.stderr)
    assert env.read_text() == "APP_CONFIG_AUTH__JWKS='previous'\n"
    assert out.read_text() == "{}"


@pytest.mark.parametrize("retry_after", OFF_GRAMMAR)
@pytest.mark.parametrize("status", [429, 503])
async def test_a_run_time_key_fetch_with_retry_after_off_the_grammar_is_401_or_503(
    issuer: DevIssuer, retry_after: str, status: int
) -> None:
    baked = issuer.jwks()
    new_kid = issuer.rotate()  # a key the bake lacks: the remote layer must fetch
    config = AppConfig(
        _env_file=None,
        auth={
            "issuer": issuer.issuer,
            "audience": "api",
            "client_id": "web",
            "jwks": parse_jwks(baked),
        },
        keys={"remote": "unknown-kid"},
    )
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    transport = httpx2.MockTransport(weird(status, **{"retry-after": retry_after}))
    fetcher = Fetcher(
        transport=transport, timeout=1, deadline=30, retries=1, sleep=sleep, jitter=lambda: 0.5
    )
    verifier = TokenVerifier.from_config(config)
    remote = RemoteKeys(verifier.keys, fetcher, issuer=issuer.issuer, mode="unknown-kid")
    app = JWTSessionMiddleware(Starlette(routes=ROUTES), config, verifier=verifier, remote=remote)
    token = issuer.access_token("u1")
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"] == new_kid

    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        response = await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code in (401, 503)
    assert response.json()["code"] in ("key_not_found", "keys_stale")
    assert remote.stats.fetches_failed == 1
    assert remote.last_fetch_error is not None
    assert f"HTTP {status}" in remote.last_fetch_error
    assert sleeps == [pytest.approx(0.375)]  # the backoff, not the header


async def test_the_fetcher_reads_retry_after_and_content_length_by_their_grammar() -> None:
    dev = DevIssuer(issuer=CLI_ISSUER, audience="api", client_id="web")
    body = json.dumps(dev.jwks()).encode()
    answers = [
        weird(503, **{"retry-after": "²", "date": "²"})(None),
        weird(
            429,
            **{
                "retry-after": "Sun, 06 Nov 1994 08:49:40 GMT",
                "date": "Sunday, 06-Nov-94 08:49:37 GMT",
            },
        )(None),
        httpx2.Response(
            200,
            content=body,
            headers=[
                (b"content-type", b"application/json"),
                (b"content-length", "²".encode()),
            ],
        ),
    ]
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with Fetcher(
        transport=httpx2.MockTransport(lambda _request: answers.pop(0)),
        retries=3,
        sleep=sleep,
        jitter=lambda: 0.0,
    ) as fetcher:
        jwks, size = await fetcher.fetch_jwks(JWKS_URL)

    assert size == len(body)
    assert sorted(k for k in jwks.kids if k) == sorted(dev.kids())
    # "²" is ignored (backoff: half of 0.5 s); the RFC 850 date gives 3 s.
    assert sleeps == [0.25, 3.0]


@pytest.mark.parametrize(
    ("location", "cause"),
    [
        ("/jwks²", "without a valid Location"),
        ("https://auth.example.com:99999/jwks", "another origin refused"),
        ("https://[::1/jwks", "invalid URL"),
        ("https://auth.example.com/jwks\x00", "without a valid Location"),
    ],
)
async def test_a_redirect_location_off_the_grammar_is_a_fetch_failure(
    location: str, cause: str
) -> None:
    reply = weird(302, location=location)
    async with Fetcher(transport=httpx2.MockTransport(reply), retries=0) as fetcher:
        with pytest.raises(JWKSFetchFailed) as failed:
            await fetcher.fetch_jwks(JWKS_URL)
    assert cause in failed.value.message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7\t", 7.0),
        ("9" * 5000, float(2**31)),
        ("²", None),
        ("١٢", None),
        ("-1", None),
        ("1.5", None),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 0.0),
        ("Sun Nov  6 08:49:37 1994", 0.0),
        ("sun, 06 nov 1994 08:49:37 gmt", None),
        ("Sun, 31 Feb 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 08:49:37 +0000", None),
    ],
)
def test_retry_after_reads_delay_seconds_and_the_three_http_date_forms_only(
    value: str, seconds: float | None
) -> None:
    date = "Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_fields.retry_after(value, date, now=lambda: 1_760_000_000.0) == seconds


@pytest.mark.parametrize(
    ("field", "value", "parsed"),
    [
        ("content_length", "1024", 1024),
        ("content_length", "²", None),
        ("content_length", "10, 10", None),
        ("content_length", "9" * 30, 2**63 - 1),
        ("media_type", "Application/JSON; charset=utf-8", "application/json"),
        ("media_type", "application/jwk-set+json", "application/jwk-set+json"),
        ("media_type", "application /json", None),
        ("media_type", "\uff41pplication/json", None),
        ("location", "/jwks?page=2", "/jwks?page=2"),
        ("location", "/jwks²", None),
        ("location", "/a b", None),
    ],
)
def test_response_fields_are_read_by_their_grammar(field: str, value: str, parsed: Any) -> None:
    assert getattr(http_fields, field)(value) == parsed
