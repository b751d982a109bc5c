"""The reference app on real uvicorn, signing in at a real DevIssuer over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx2
import pytest

from tests.e2e.servers import app_config, dev_issuer, serve_app
from verifier.app import create_app
from verifier.clock import wall_clock
from verifier.testing import DevIssuer

pytestmark = pytest.mark.e2e

TOKEN_COOKIES = ("jwtedge_access", "jwtedge_id", "jwtedge_refresh")


@pytest.fixture
def issuer() -> Iterator[DevIssuer]:
    with dev_issuer() as issuer:
        yield issuer


@pytest.fixture
def app_url(issuer: DevIssuer) -> Iterator[str]:
    with serve_app(create_app(app_config(issuer))) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[httpx2.Client]:
    with httpx2.Client(follow_redirects=True, timeout=10.0) as client:
        yield client


def token_cookies(browser: httpx2.Client) -> set[str]:
    return {cookie.name for cookie in browser.cookies.jar if cookie.name in TOKEN_COOKIES}


def log_in(browser: httpx2.Client, app_url: str) -> httpx2.Response:
    """Follow the sign-in link up to the callback's redirect, without loading the page."""
    response = browser.get(f"{app_url}/auth/login?next=/", follow_redirects=False)
    for _ in range(2):  # login -> issuer /authorize -> callback
        assert response.status_code in (302, 303), response.text
        response = browser.get(response.headers["location"], follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/"
    return response


def test_sign_in_shows_orgs_and_projects_then_500_page_loads_never_call_the_issuer(
    issuer: DevIssuer, app_url: str, browser: httpx2.Client
) -> None:
    page = browser.get(f"{app_url}/auth/login?next=/")

    assert page.status_code == 200
    assert str(page.url) == f"{app_url}/"
    for text in ("Ada Lovelace", "Acme Inc.", "Globex Corporation", "website", "billing"):
        assert text in page.text
    assert token_cookies(browser) == set(TOKEN_COOKIES)
    session = browser.get(f"{app_url}/api/session").json()
    assert session["user"]["id"] == "ada"
    assert {org["slug"] for org in session["organizations"]} == {"acme", "globex"}

    before = (
        issuer.stats.token_requests,
        issuer.stats.jwks_requests,
        issuer.stats.discovery_requests,
    )
    for _ in range(500):
        assert browser.get(f"{app_url}/").status_code == 200
    after = (
        issuer.stats.token_requests,
        issuer.stats.jwks_requests,
        issuer.stats.discovery_requests,
    )
    assert after == before
    assert issuer.stats.jwks_requests == 0  # the bake was enough from the start


def test_a_token_due_for_refresh_is_refreshed_exactly_once_by_the_next_page_load(
    issuer: DevIssuer, app_url: str, browser: httpx2.Client
) -> None:
    # 5 s tokens minted 4 s ago: within a third of their lifetime, due at once.
    issuer.access_ttl = 5
    issuer.clock = lambda: time.time() - 4
    log_in(browser, app_url)
    assert issuer.stats.refresh_grants == 0
    issuer.access_ttl = 300  # what the refresh mints is not due again
    issuer.clock = wall_clock

    assert browser.get(f"{app_url}/").status_code == 200
    assert issuer.stats.refresh_grants == 1

    for _ in range(20):
        assert browser.get(f"{app_url}/").status_code == 200
    assert issuer.stats.refresh_grants == 1
    assert browser.get(f"{app_url}/api/session").json()["user"]["id"] == "ada"


def test_post_auth_refresh_shows_a_new_project_on_the_next_page(
    issuer: DevIssuer, app_url: str, browser: httpx2.Client
) -> None:
    browser.get(f"{app_url}/auth/login?next=/")
    issuer.add_project("ada", {"id": "prj_apollo", "slug": "apollo", "organizationId": "org_acme"})
    assert "apollo" not in browser.get(f"{app_url}/").text

    refreshed = browser.post(f"{app_url}/auth/refresh", headers={"Origin": app_url})

    assert refreshed.status_code == 200
    assert "apollo" in browser.get(f"{app_url}/").text


def test_post_auth_refresh_without_origin_is_refused(
    issuer: DevIssuer, app_url: str, browser: httpx2.Client
) -> None:
    browser.get(f"{app_url}/auth/login?next=/")

    assert browser.post(f"{app_url}/auth/refresh").status_code == 403
    assert issuer.stats.refresh_grants == 0


def test_logout_clears_the_cookies_and_revokes(issuer: DevIssuer, browser: httpx2.Client) -> None:
    app = create_app(app_config(issuer, post_logout_redirect="http://127.0.0.1:1/"))
    with serve_app(app) as app_url:
        browser.get(f"{app_url}/auth/login?next=/")
        assert token_cookies(browser) == set(TOKEN_COOKIES)

        response = browser.post(
            f"{app_url}/auth/logout", headers={"Origin": app_url}, follow_redirects=False
        )

        assert response.status_code == 303
        assert response.headers["location"].startswith(f"{issuer.url}/logout?")
        assert token_cookies(browser) == set()
        assert issuer.stats.revocations == 1
        assert browser.get(f"{app_url}/api/session").status_code == 401
        assert "Sign in" in browser.get(f"{app_url}/").text


def test_forward_auth_over_http(issuer: DevIssuer, app_url: str, browser: httpx2.Client) -> None:
    assert browser.get(f"{app_url}/auth/verify").status_code == 401
    browser.get(f"{app_url}/auth/login?next=/")

    response = browser.get(f"{app_url}/auth/verify?org=acme&role=owner")

    assert response.status_code == 200
    assert response.headers["x-auth-user"] == "ada"
    assert response.headers["x-auth-org"] == "acme"
    assert browser.get(f"{app_url}/auth/verify?org=globex&role=owner").status_code == 403


def test_the_websocket_over_uvicorn_sends_the_session_and_refuses_anonymous_upgrades(
    app_url: str, browser: httpx2.Client
) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    ws_url = app_url.replace("http://", "ws://") + "/ws"
    with pytest.raises(InvalidStatus) as refused, connect(ws_url, open_timeout=5):
        pass
    assert refused.value.response.status_code == 401

    browser.get(f"{app_url}/auth/login?next=/")
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies.jar)
    headers = {"Cookie": cookie}
    with connect(ws_url, origin=app_url, additional_headers=headers, open_timeout=5) as ws:
        message = ws.recv(timeout=5)
    assert '"user":{"id":"ada"' in str(message)
