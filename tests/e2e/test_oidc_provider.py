"""jwtedge against panva's oidc-provider 8 (OpenID Certified), wired up as a team would.

The provider (``tests/e2e/oidc_provider/server.mjs``, see :mod:`tests.e2e.node_oidc`)
runs in Node on 127.0.0.1 with RS256, PS256, ES256 and EdDSA signing keys and
an RSA ``enc`` key, one confidential client (``client_secret_basic``, PKCE
required, a secret that needs form-encoding), refresh-token rotation,
revocation, resource indicators and ``extraTokenClaims`` putting organizations
and projects into its JWT access tokens. jwtedge runs for real too: the CLI in
a subprocess (``python -m deploy.cli``) and the reference app on uvicorn. A
cookie-keeping HTTP client plays the browser, submitting the provider's own
login and consent forms; one test drives the same login in Chromium.

Access tokens live ``ACCESS_TTL`` seconds, below the default ``refresh.skew``
(30 s), so waits for expiry are real sleeps of a few seconds: the provider,
the app and the client share the wall clock. Nothing is asserted on timings:
expiry is read from the tokens, calls are counted by the provider.
"""

from __future__ import annotations

import asyncio
import base64
import html
import itertools
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote_plus, urljoin, urlsplit

import httpx2
import pytest

from deploy.run import serve_in_thread
from tests.e2e.browser import BrowserUnavailable, ensure_chromium, launch
from tests.e2e.node_oidc import (
    OidcProvider,
    node_binary,
    provider_modules,
    running_provider,
    skip_or_fail,
    wait_until,
)
from verifier.app import create_app
from verifier.config import AppConfig
from verifier.login import OFFLINE_ACCESS_WARNING

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CLIENT_ID = "web"
#: Needs form-encoding before HTTP Basic (RFC 6749 §2.3.1): space, +, /, :, %, & and =.
CLIENT_SECRET = "s3cr3t with space+plus/slash:colon%25pct&amp=eq"
RESOURCE = "https://api.example.test/"
AUDIENCE = "api"
LOGIN, PASSWORD = "ada", "correct horse battery staple"
STATE_KEY = "oidc-provider-e2e-state-key-" + "k" * 32
#: Below refresh.skew (30 s): the effective skew is a third of it.
ACCESS_TTL = 6
TOKEN_COOKIES = ("jwtedge_access", "jwtedge_id", "jwtedge_refresh")


@pytest.fixture(scope="module", autouse=True)
def _node_and_provider_installed() -> None:
    """Skip (fail under CI) once for the module when Node or oidc-provider is missing."""
    node_binary()
    provider_modules()


# -- helpers -----------------------------------------------------------------------------


@contextmanager
def app_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound socket for the app, so its URL is known before the provider starts
    (the provider must know the client's redirect URI)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        yield sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def provider_for(tmp_path: Path, *app_urls: str, **options: Any) -> Iterator[OidcProvider]:
    """The provider with our one client, registered for these apps' callbacks."""
    with running_provider(
        tmp_path,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=[f"{url}/auth/callback" for url in app_urls],
        post_logout_redirect_uri=[f"{url}/" for url in app_urls],
        resource=RESOURCE,
        audience=AUDIENCE,
        **options,
    ) as provider:
        yield provider


def write_env(path: Path, provider: OidcProvider, app_url: str, **login: str) -> None:
    """The app's settings as a team writes them; ``jwtedge bake`` adds the keys."""
    lines = {
        "APP_CONFIG_AUTH__ISSUER": provider.issuer,
        "APP_CONFIG_AUTH__AUDIENCE": AUDIENCE,
        "APP_CONFIG_AUTH__CLIENT_ID": CLIENT_ID,
        "APP_CONFIG_AUTH__CLIENT_SECRET": CLIENT_SECRET,
        "APP_CONFIG_LOGIN__STATE_KEY": STATE_KEY,
        "APP_CONFIG_LOGIN__SCOPES": "openid profile email offline_access api:read",
        "APP_CONFIG_LOGIN__RESOURCE": json.dumps([RESOURCE]),
        "APP_CONFIG_LOGIN__POST_LOGOUT_REDIRECT": f"{app_url}/",
        **{f"APP_CONFIG_LOGIN__{name.upper()}": value for name, value in login.items()},
    }
    # Single quotes: python-dotenv reads the value literally.
    path.write_text("".join(f"{name}='{value}'\n" for name, value in lines.items()))


def jwtedge(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, with this worktree's code and no APP_CONFIG_* leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_CONFIG_")}
    env["PYTHONPATH"] = str(REPO)
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def env_file_value(path: Path, name: str) -> str:
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == name:
            return value.strip("'")
    raise KeyError(name)


def claims(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified (the app verified it; the test only reads exp and iat)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def header(token: str) -> dict[str, Any]:
    head = token.split(".")[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return decoded


class _Forms(HTMLParser):
    """The forms of a page: action, method and the inputs' names and values."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append({"action": values.get("action", ""), "inputs": {}})
        elif tag == "input" and self.forms and values.get("name"):
            self.forms[-1]["inputs"][values["name"]] = values.get("value", "")


def forms(page: str) -> list[dict[str, Any]]:
    parser = _Forms()
    parser.feed(page)
    return parser.forms


def set_cookie_names(response: httpx2.Response) -> list[str]:
    return [value.partition("=")[0] for value in response.headers.get_list("set-cookie")]


@dataclass
class SignIn:
    authorize_url: str
    callback: httpx2.Response
    landed: httpx2.Response
    pages: list[str]


def sign_in(client: httpx2.Client, app_url: str, provider: OidcProvider) -> SignIn:
    """App login → the provider's login and consent forms (when it shows them) → callback."""
    response = client.get(f"{app_url}/auth/login?next=/account")
    assert response.status_code == 302, response.text
    authorize_url = response.headers["location"]
    callback: httpx2.Response | None = None
    pages: list[str] = []
    for _ in range(20):
        url = str(response.url)
        if response.is_redirect:
            response = client.get(urljoin(url, response.headers["location"]))
        elif response.status_code == 200 and url.startswith(provider.issuer):
            page_forms = forms(response.text)
            assert len(page_forms) == 1, response.text
            form = page_forms[0]
            fields = dict(form["inputs"])
            if "password" in fields:
                pages.append("login")
                fields.update(login=LOGIN, password=PASSWORD)
            else:
                pages.append("consent")
            response = client.post(urljoin(url, form["action"]), data=fields)
        else:
            break
        if urlsplit(str(response.url)).path == "/auth/callback":
            callback = response
    assert callback is not None, (
        f"never reached the callback: {response.status_code} {response.url}"
    )
    return SignIn(authorize_url, callback, response, pages)


def token_cookie(client: httpx2.Client, name: str) -> str:
    for cookie in client.cookies.jar:
        if cookie.name == name and cookie.value:
            return cookie.value
    raise KeyError(name)


def cookie_header(values: dict[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in values.items())}


def metric(app_url: str, name: str, labels: str = "") -> float:
    text = httpx2.get(f"{app_url}/metrics", trust_env=False).text
    match = re.search(rf"^{re.escape(name + labels)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def refresh_at_provider(provider: OidcProvider, refresh_token: str) -> httpx2.Response:
    """The client's own refresh grant, straight to the provider (to see revocation)."""
    # RFC 6749 §2.3.1: both parts form-encoded before Basic, as jwtedge does.
    pair = f"{quote_plus(CLIENT_ID)}:{quote_plus(CLIENT_SECRET)}".encode()
    return httpx2.post(
        f"{provider.issuer}/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "resource": RESOURCE},
        headers={"Authorization": "Basic " + base64.b64encode(pair).decode()},
        trust_env=False,
    )


def browser_client() -> httpx2.Client:
    return httpx2.Client(follow_redirects=False, trust_env=False, timeout=15)


# -- the whole trial ---------------------------------------------------------------------


def test_bake_check_rotate_login_refresh_storm_grace_logout_and_inspect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with (
        app_socket() as (sock, app_url),
        provider_for(tmp_path, app_url, access_ttl=ACCESS_TTL) as provider,
    ):
        seen = _trial(tmp_path, provider, sock, app_url)

    # No token, refresh token or client secret in any log line of the app or the CLI
    # (the test's own HTTP client logs the URLs it requests; those hold no tokens).
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (CLIENT_SECRET, quote_plus(CLIENT_SECRET), *seen):
        assert secret not in logged


def _trial(tmp_path: Path, provider: OidcProvider, sock: socket.socket, app_url: str) -> list[str]:
    """The trial's steps; returns every token it saw, for the log check."""
    env = tmp_path / "app.env"
    write_env(env, provider, app_url, prompt="consent")

    # 1. bake: the four signing keys; the enc key skipped and named.
    baked = jwtedge("bake", "--allow-loopback", "--env-file", str(env))
    assert baked.returncode == 0, baked.stderr
    assert "1 key(s) not baked" in baked.stderr
    assert "enc" in baked.stderr
    assert "RSA without an alg" not in baked.stderr  # every key has its alg
    first_kids = provider.signing_kids()
    meta = json.loads(env_file_value(env, "APP_CONFIG_AUTH__JWKS_META"))
    assert sorted(meta["kids"]) == sorted(first_kids)
    assert meta["revocation_endpoint"]
    assert meta["end_session_endpoint"]

    # 2. check: no drift.
    checked = jwtedge("check", "--allow-loopback", "--env-file", str(env))
    assert checked.returncode == 0, checked.stderr

    # 3. the provider rotates (a redeploy with new keys first, the old ones kept).
    stale_config = AppConfig(_env_file=env)
    provider.restart(rotate=True)
    new_kids = [kid for kid in provider.signing_kids() if kid not in first_kids]
    assert len(new_kids) == 4
    drift = jwtedge("check", "--allow-loopback", "--env-file", str(env))
    assert drift.returncode == 1, drift.stdout + drift.stderr
    assert new_kids[0] in drift.stdout + drift.stderr
    rebaked = jwtedge("bake", "--allow-loopback", "--env-file", str(env))
    assert rebaked.returncode == 0, rebaked.stderr
    assert jwtedge("check", "--allow-loopback", "--env-file", str(env)).returncode == 0

    # 4. the app keeps running with the stale bake: the new kid costs one fetch.
    with serve_in_thread(create_app(stale_config), sock), browser_client() as client:
        assert metric(app_url, "jwtedge_key_fetches_total", '{result="ok"}') == 0
        login = sign_in(client, app_url, provider)

        query = parse_qs(urlsplit(login.authorize_url).query)
        assert query["prompt"] == ["consent"]
        assert query["resource"] == [RESOURCE]
        assert query["code_challenge_method"] == ["S256"]
        assert login.pages == ["login", "consent"]
        assert login.callback.status_code == 303, login.callback.text
        # Only what exists: three token cookies and the spent login state, no chunk clearing.
        names = set_cookie_names(login.callback)
        assert sorted(n for n in names if not n.startswith("jwtedge_login_")) == sorted(
            TOKEN_COOKIES
        )
        assert len(names) == 4
        assert login.landed.status_code == 200
        assert urlsplit(str(login.landed.url)).path == "/account"
        assert metric(app_url, "jwtedge_key_fetches_total", '{result="ok"}') == 1

        access = token_cookie(client, "jwtedge_access")
        seen = [token_cookie(client, name) for name in TOKEN_COOKIES]
        assert header(access)["kid"] in new_kids
        assert header(access)["alg"] == "ES256"
        assert header(token_cookie(client, "jwtedge_id"))["alg"] == "PS256"
        assert provider.grants("authorization_code") == 1

        # 5. the session, from the provider's JWT access token and ID token.
        session = client.get(f"{app_url}/api/session")
        assert session.status_code == 200
        body = session.json()
        assert body["user"]["id"] == "ada"
        assert body["user"]["email"] == "ada@example.com"
        assert body["user"]["name"] == "Ada Lovelace"
        assert [org["name"] for org in body["organizations"]] == [
            "Acme Inc.",
            "Globex Corporation",
        ]
        assert [p["id"] for p in body["projects"]] == ["prj_web", "prj_bill"]
        assert "api:read" in body["scopes"]
        projects = client.get(f"{app_url}/api/orgs/acme/projects").json()
        assert projects["projects"] == [
            {"id": "prj_web", "slug": "website", "organization_id": "org_acme"}
        ]

        # 6. refresh at expiry: one refresh grant, with the resource, so a new JWT.
        wait_until(claims(access)["exp"] + 0.2)
        refreshed = client.get(f"{app_url}/api/session")
        assert refreshed.status_code == 200
        assert sorted(set_cookie_names(refreshed)) == sorted(TOKEN_COOKIES)
        second = token_cookie(client, "jwtedge_access")
        assert second != access
        assert claims(second)["aud"] == AUDIENCE  # a JWT for the API, not an opaque token
        assert provider.grants("refresh_token") == 1

        # 7. a storm: ten concurrent requests with one expired token set → one call.
        due = {name: token_cookie(client, name) for name in TOKEN_COOKIES}
        wait_until(claims(second)["exp"] + 0.2)
        storm = asyncio.run(_storm(app_url, due, 10))
        assert [response.status_code for response in storm] == [200] * 10
        minted = {_set_cookie_value(response, "jwtedge_access") for response in storm}
        assert len(minted) == 1
        assert provider.grants("refresh_token") == 2

        # 8. grace: a late request with the old cookies gets the same new set, no call.
        late = client.get(f"{app_url}/api/session")
        assert late.status_code == 200
        assert _set_cookie_value(late, "jwtedge_access") in minted
        assert provider.grants("refresh_token") == 2
        # …and the old refresh token alone gets nothing.
        with browser_client() as thief:
            stolen = thief.get(
                f"{app_url}/api/session",
                headers=cookie_header({"jwtedge_refresh": due["jwtedge_refresh"]}),
            )
        assert stolen.status_code == 401
        assert provider.grants("refresh_token") == 2
        events = provider.events()
        assert events["grant_errors"] == []
        assert events["grants_revoked"] == 0
        # Nine storm requests joined the flight or, arriving after it landed, reused
        # its result, as did the late one: ten answers, one issuer call.
        joined = metric(app_url, "jwtedge_refresh_total", '{result="joined"}')
        reused = metric(app_url, "jwtedge_refresh_total", '{result="grace_reused"}')
        assert joined + reused == 10
        assert reused >= 1
        final_access = token_cookie(client, "jwtedge_access")
        final_refresh = token_cookie(client, "jwtedge_refresh")
        seen += [*due.values(), *(token_cookie(client, name) for name in TOKEN_COOKIES)]

        # 9. logout: clears what the browser holds, revokes, ends the provider session.
        logout = client.post(f"{app_url}/auth/logout", headers={"Origin": app_url})
        assert logout.status_code == 303
        assert sorted(set_cookie_names(logout)) == sorted(TOKEN_COOKIES)
        assert all("Max-Age=0" in value for value in logout.headers.get_list("set-cookie"))
        end_session = logout.headers["location"]
        assert end_session.startswith(f"{provider.issuer}/session/end?")
        revocations = [
            request
            for request in provider.events()["requests"]
            if request["path"] == "/token/revocation"
        ]
        assert revocations == [{"method": "POST", "path": "/token/revocation", "status": 200}]
        assert refresh_at_provider(provider, final_refresh).json()["error"] == "invalid_grant"
        confirm = client.get(end_session)
        assert confirm.status_code == 200
        (form,) = forms(confirm.text)
        # The confirm button (outside the form) sends logout=yes: end the whole session.
        done = client.post(
            urljoin(end_session, form["action"]), data={**form["inputs"], "logout": "yes"}
        )
        while done.is_redirect and not str(done.headers["location"]).startswith(app_url):
            done = client.get(urljoin(str(done.url), done.headers["location"]))
        assert done.headers["location"] == f"{app_url}/"
        assert client.get(f"{app_url}/api/session").status_code == 401

    # 10. inspect the last access token against the new bake (within auth.leeway).
    inspected = jwtedge("inspect", "--env-file", str(env), "--json", stdin=final_access)
    assert inspected.returncode == 0, inspected.stderr
    verdict = json.loads(inspected.stdout)
    assert verdict["valid"] is True
    assert verdict["session"]["user"]["id"] == "ada"
    assert final_access not in inspected.stdout + inspected.stderr
    for output in (baked, checked, drift, rebaked, inspected):
        assert CLIENT_SECRET not in output.stdout + output.stderr
    return seen


async def _storm(app_url: str, cookies: dict[str, str], count: int) -> list[httpx2.Response]:
    async with httpx2.AsyncClient(trust_env=False, timeout=30) as client:
        return list(
            await asyncio.gather(
                *(
                    client.get(f"{app_url}/api/session", headers=cookie_header(cookies))
                    for _ in range(count)
                )
            )
        )


def _set_cookie_value(response: httpx2.Response, name: str) -> str:
    for value in response.headers.get_list("set-cookie"):
        cookie, _, rest = value.partition("=")
        if cookie == name:
            return rest.split(";")[0]
    raise AssertionError(f"no {name} cookie set ({response.status_code})")


# -- login.prompt and refresh tokens -----------------------------------------------------


def test_without_prompt_consent_no_refresh_token_comes_back_and_jwtedge_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """oidc-provider's default refresh-token policy: offline_access needs prompt=consent."""
    caplog.set_level(logging.INFO)
    with (
        app_socket() as (plain_sock, plain_url),
        app_socket() as (consent_sock, consent_url),
        provider_for(tmp_path, plain_url, consent_url, refresh_policy="default") as provider,
    ):
        plain_env, consent_env = tmp_path / "plain.env", tmp_path / "consent.env"
        write_env(plain_env, provider, plain_url)
        write_env(consent_env, provider, consent_url, prompt="consent")
        for env in (plain_env, consent_env):
            assert jwtedge("bake", "--allow-loopback", "--env-file", str(env)).returncode == 0

        with serve_in_thread(create_app(AppConfig(_env_file=plain_env)), plain_sock):
            for _ in range(2):
                with browser_client() as client:
                    login = sign_in(client, plain_url, provider)
                    assert "prompt" not in parse_qs(urlsplit(login.authorize_url).query)
                    assert login.callback.status_code == 303
                    names = set_cookie_names(login.callback)
                    assert "jwtedge_access" in names
                    assert "jwtedge_refresh" not in names
            ready = httpx2.get(f"{plain_url}/readyz", trust_env=False).json()
            assert ready["warnings"] == [OFFLINE_ACCESS_WARNING]
            assert metric(plain_url, "jwtedge_login_refresh_token_missing_total") == 2
        warned = [r for r in caplog.records if r.getMessage() == OFFLINE_ACCESS_WARNING]
        assert len(warned) == 1  # once per process, however many logins
        assert "login.prompt" in OFFLINE_ACCESS_WARNING

        with (
            serve_in_thread(create_app(AppConfig(_env_file=consent_env)), consent_sock),
            browser_client() as client,
        ):
            login = sign_in(client, consent_url, provider)
            assert parse_qs(urlsplit(login.authorize_url).query)["prompt"] == ["consent"]
            assert "jwtedge_refresh" in set_cookie_names(login.callback)
            assert provider.grants("authorization_code") == 3
            # The refresh token works: one refresh grant, with the resource, so a JWT.
            response = client.post(f"{consent_url}/auth/refresh", headers={"Origin": consent_url})
            assert response.status_code == 200, response.text
            assert provider.grants("refresh_token") == 1
            assert claims(token_cookie(client, "jwtedge_access"))["aud"] == AUDIENCE
            ready = httpx2.get(f"{consent_url}/readyz", trust_env=False).json()
            assert ready["warnings"] == []


# -- short-lived tokens ------------------------------------------------------------------


def test_a_token_living_less_than_the_skew_is_refreshed_once_per_lifetime(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with (
        app_socket() as (sock, app_url),
        provider_for(tmp_path, app_url, access_ttl=ACCESS_TTL) as provider,
    ):
        env = tmp_path / "app.env"
        write_env(env, provider, app_url, prompt="consent")
        assert jwtedge("bake", "--allow-loopback", "--env-file", str(env)).returncode == 0
        config = AppConfig(_env_file=env)
        assert config.refresh.skew == 30.0 > ACCESS_TTL

        with serve_in_thread(create_app(config), sock), browser_client() as client:
            sign_in(client, app_url, provider)
            seen = [token_cookie(client, "jwtedge_access")]
            requests = 0
            deadline = time.monotonic() + 120  # a hang guard, not a timing assertion
            while len(seen) < 3 and time.monotonic() < deadline:
                response = client.get(f"{app_url}/api/session")
                requests += 1
                assert response.status_code == 200, "the session lapsed"
                current = token_cookie(client, "jwtedge_access")
                if current != seen[-1]:
                    seen.append(current)
                time.sleep(0.2)
        refresh_grants = provider.grants("refresh_token")

    assert len(seen) == 3, "two lifetimes did not pass"
    # Dozens of requests, one refresh per lifetime (before the fix: one per request).
    assert refresh_grants == 2
    assert requests > 10
    for old, new in itertools.pairwise(seen):
        before, after = claims(old), claims(new)
        lifetime = before["exp"] - before["iat"]
        assert lifetime == ACCESS_TTL
        # Refreshed in the last third of the old token's life, and before it ended.
        assert before["exp"] - lifetime / 3 <= after["iat"] <= before["exp"]
    short = [r for r in caplog.records if "no longer than refresh.skew" in r.getMessage()]
    assert len(short) == 1


# -- one RSA key, two algorithms ---------------------------------------------------------


@pytest.mark.parametrize(
    ("rsa_alg", "refused", "token_alg"),
    [("RS256", "ID token", "PS256"), ("PS256", "access token", "RS256")],
)
def test_an_rsa_key_without_alg_signing_two_algorithms_is_named_at_bake_and_login(
    tmp_path: Path, rsa_alg: str, refused: str, token_alg: str
) -> None:
    """oidc-provider signs RS256 access tokens and PS256 ID tokens with one RSA key
    that has no ``alg``; jwtedge keeps one algorithm per key (RFC 8725 §3.1) and says so."""
    with (
        app_socket() as (sock, app_url),
        provider_for(
            tmp_path,
            app_url,
            rsa_without_alg=True,
            access_token_alg="RS256",
            id_token_alg="PS256",
        ) as provider,
    ):
        env = tmp_path / "app.env"
        write_env(env, provider, app_url, prompt="consent")
        baked = jwtedge("bake", "--allow-loopback", "--env-file", str(env))
        assert baked.returncode == 0, baked.stderr
        warning = " ".join(baked.stderr.split())  # the console may wrap
        assert "RSA without an alg" in warning
        assert "auth.rsa_alg" in warning
        assert "APP_CONFIG_AUTH__RSA_ALG" in warning

        with env.open("a") as file:
            file.write(f"APP_CONFIG_AUTH__RSA_ALG={rsa_alg}\n")
        with serve_in_thread(create_app(AppConfig(_env_file=env)), sock), browser_client() as c:
            login = sign_in(c, app_url, provider)

    page = login.callback
    assert page.status_code == 400
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.text)).split())
    assert "token_invalid" in text
    assert f"{refused}: alg {token_alg} is not the key's algorithm" in text
    assert f"used with {rsa_alg} only" in text
    assert "auth.rsa_alg" in text
    assert not [name for name in set_cookie_names(page) if name in TOKEN_COOKIES]


# -- the same login in a real browser ----------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("Playwright is not installed (pip install -e '.[dev]')")
    try:
        executable = ensure_chromium()
    except BrowserUnavailable as exc:
        skip_or_fail(exc.reason)
    with sync_playwright() as playwright:
        browser = launch(playwright, executable)
        try:
            yield browser
        finally:
            browser.close()


def test_chromium_signs_in_through_the_providers_login_and_consent_pages(
    tmp_path: Path, chromium: Browser
) -> None:
    from playwright.sync_api import expect

    with (
        app_socket() as (sock, app_url),
        provider_for(tmp_path, app_url) as provider,
    ):
        env = tmp_path / "app.env"
        write_env(env, provider, app_url, prompt="consent")
        assert jwtedge("bake", "--allow-loopback", "--env-file", str(env)).returncode == 0
        with serve_in_thread(create_app(AppConfig(_env_file=env)), sock):
            context = chromium.new_context()
            try:
                context.set_default_timeout(15_000)
                page = context.new_page()
                page.goto(f"{app_url}/auth/login?next=/")
                expect(page.locator("h1")).to_have_text("Sign in")
                page.fill("input[name=login]", LOGIN)
                page.fill("input[name=password]", PASSWORD)
                page.click("#sign-in")
                expect(page.locator("h1")).to_have_text("Authorize")
                page.click("#allow")
                page.wait_for_url(f"{app_url}/")
                expect(page.locator("h1")).to_have_text("Signed in as Ada Lovelace")
                expect(page.locator("table")).to_contain_text("Globex Corporation")
                cookies = {c["name"] for c in context.cookies(app_url)}
                assert set(TOKEN_COOKIES) <= cookies
            finally:
                context.close()
            assert provider.grants("authorization_code") == 1
