"""The reference edge app: pages, API, WebSocket, forward auth, health and metrics."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient, WebSocketDenialResponse

from tests.test_login import (
    APP,
    ISSUER_URL,
    ORGS,
    ORIGIN,
    PROJECTS,
    edge_app,
    edge_config,
    new_issuer,
    sign_in,
)
from verifier.app import create_app
from verifier.cookies import CookieJar
from verifier.middleware import JWTSessionMiddleware
from verifier.refresh import InProcessRefresher
from verifier.remote import RemoteKeys
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

WS = "ws://127.0.0.1/ws"


@pytest.fixture
def issuer() -> DevIssuer:
    return new_issuer()


@pytest.fixture
def client(issuer: DevIssuer) -> Iterator[TestClient]:
    with TestClient(edge_app(issuer), base_url=APP, follow_redirects=False) as client:
        yield client


@pytest.fixture
def signed_in(client: TestClient, issuer: DevIssuer) -> TestClient:
    sign_in(client, issuer)
    return client


# -- pages --------------------------------------------------------------------------------


def test_the_home_page_offers_sign_in_to_anonymous_visitors(client: TestClient) -> None:
    page = client.get("/")

    assert page.status_code == 200
    assert "/auth/login?next=/" in page.text
    assert page.headers["cache-control"] == "no-store"


def test_the_home_page_shows_the_user_orgs_projects_expiry_and_a_live_panel(
    signed_in: TestClient,
) -> None:
    page = signed_in.get("/")

    assert page.status_code == 200
    for org in ORGS:
        assert org["name"] in page.text
        assert org["role"] in page.text
    for project in PROJECTS:
        assert project["slug"] in page.text
    assert "ada@example.com" in page.text
    assert re.search(r"data-exp='\d+(\.\d+)?'", page.text)
    assert 'new WebSocket(scheme + location.host + "/ws")' in page.text
    assert page.headers["cache-control"] == "no-store"
    csp = page.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce is not None
    assert f"<script nonce='{nonce.group(1)}'>" in page.text
    assert "frame-ancestors 'none'" in csp


def test_pages_escape_every_claim(issuer: DevIssuer) -> None:
    issuer.add_user(
        "mallory",
        name="<script>alert('name')</script>",
        email="m@example.com",
        organizations=[
            {"id": "o1", "slug": "s<b>", "name": "<img src=x onerror=1>", "role": "<r>"}
        ],
        projects=[{"id": "p'\"1", "slug": "<i>slug</i>", "organizationId": "o1"}],
    )
    issuer.default_user = "mallory"
    with TestClient(edge_app(issuer), base_url=APP, follow_redirects=False) as client:
        sign_in(client, issuer)
        for path in ("/", "/account"):
            text = client.get(path).text
            assert "<script>alert" not in text
            assert "<img src=x" not in text
            assert "<i>slug</i>" not in text
            assert "<r>" not in text
        assert "&lt;img src=x onerror=1&gt;" in client.get("/").text


def test_a_page_that_needs_sign_in_sends_anonymous_browsers_to_the_login(
    client: TestClient,
) -> None:
    response = client.get("/account?tab=orgs")

    assert response.status_code == 302
    assert response.headers["location"] == "/auth/login?next=/account%3Ftab%3Dorgs"


def test_the_account_page_shows_the_signed_in_user(signed_in: TestClient) -> None:
    page = signed_in.get("/account")

    assert page.status_code == 200
    assert "ada@example.com" in page.text
    assert page.headers["cache-control"] == "no-store"


def test_head_requests_work_on_pages(signed_in: TestClient) -> None:
    assert signed_in.head("/").status_code == 200


# -- API ----------------------------------------------------------------------------------


def test_api_session_is_401_with_a_challenge_when_anonymous(client: TestClient) -> None:
    response = client.get("/api/session")

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["code"] == "token_missing"


def test_api_session_accepts_a_bearer_token(client: TestClient, issuer: DevIssuer) -> None:
    token = issuer.access_token("ada", organizations=ORGS)

    response = client.get("/api/session", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 200
    assert response.json()["user"]["id"] == "ada"


def test_org_projects_lists_the_projects_of_that_organization(signed_in: TestClient) -> None:
    response = signed_in.get("/api/orgs/acme/projects")

    assert response.status_code == 200
    body = response.json()
    assert body["organization"]["name"] == "Acme Inc."
    assert [project["id"] for project in body["projects"]] == ["prj_web"]
    by_id = signed_in.get("/api/orgs/org_globex/projects").json()
    assert [project["id"] for project in by_id["projects"]] == ["prj_bill"]


def test_org_projects_of_another_organization_are_forbidden(signed_in: TestClient) -> None:
    response = signed_in.get("/api/orgs/initech/projects")

    assert response.status_code == 403
    assert response.json()["code"] == "org_forbidden"


def test_org_projects_need_a_session(client: TestClient) -> None:
    assert client.get("/api/orgs/acme/projects").status_code == 401


# -- WebSocket ----------------------------------------------------------------------------


def test_the_websocket_sends_the_session_after_accept(signed_in: TestClient) -> None:
    with signed_in.websocket_connect(WS, headers=dict(ORIGIN)) as websocket:
        message = websocket.receive_json()
        assert message["type"] == "session"
        assert message["session"]["user"]["id"] == "ada"
        websocket.send_text("session")
        assert websocket.receive_json()["session"]["user"]["id"] == "ada"


def test_an_anonymous_websocket_is_refused(client: TestClient) -> None:
    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect(WS):
        pass

    assert denied.value.status_code == 401


def test_a_cross_origin_websocket_with_cookies_is_refused(signed_in: TestClient) -> None:
    headers = {"Origin": "https://evil.test"}
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        signed_in.websocket_connect(WS, headers=headers),
    ):
        pass

    assert denied.value.status_code == 403


def test_the_websocket_closes_with_4401_when_the_session_expires() -> None:
    # Tokens that expired 10 s ago: still inside the 30 s leeway, so the upgrade
    # is accepted, and the socket closes at once with the configured code.
    issuer = new_issuer(clock=lambda: time.time() - 20)
    issuer.access_ttl = 10
    with TestClient(edge_app(issuer), base_url=APP, follow_redirects=False) as client:
        sign_in(client, issuer)
        with client.websocket_connect(WS, headers=dict(ORIGIN)) as websocket:
            codes = []
            for _ in range(3):
                message = websocket.receive()
                if message["type"] == "websocket.close":
                    codes.append(message["code"])
                    break
            assert codes == [4401]


# -- forward auth ------------------------------------------------------------------------


def test_forward_auth_is_401_for_anonymous_requests(client: TestClient) -> None:
    response = client.get("/auth/verify")

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert not any(name.lower().startswith("x-auth-") for name in response.headers)


def test_forward_auth_answers_200_with_identity_headers(signed_in: TestClient) -> None:
    response = signed_in.get("/auth/verify", headers={"X-Auth-User": "spoofed"})

    assert response.status_code == 200
    assert response.headers["x-auth-user"] == "ada"
    assert response.headers["x-auth-email"] == "ada@example.com"
    assert response.headers["x-auth-orgs"] == "acme,globex"
    assert response.headers["x-auth-projects"] == "prj_web,prj_bill"
    # Two organizations and none chosen: no X-Auth-Org rather than a guess.
    assert "x-auth-org" not in response.headers
    assert response.headers["cache-control"] == "no-store"


def test_forward_auth_names_the_organization_when_one_is_chosen(signed_in: TestClient) -> None:
    by_param = signed_in.get("/auth/verify?org=globex")
    by_header = signed_in.get("/auth/verify", headers={"X-Org-Slug": "acme"})

    assert (by_param.status_code, by_param.headers["x-auth-org"]) == (200, "globex")
    assert by_param.headers["x-auth-role"] == "member"
    assert (by_header.status_code, by_header.headers["x-auth-org"]) == (200, "acme")


def test_forward_auth_names_the_only_organization(issuer: DevIssuer) -> None:
    issuer.add_user("solo", organizations=[ORGS[0]], projects=[PROJECTS[0]])
    issuer.default_user = "solo"
    with TestClient(edge_app(issuer), base_url=APP, follow_redirects=False) as client:
        sign_in(client, issuer)
        assert client.get("/auth/verify").headers["x-auth-org"] == "acme"


def test_forward_auth_leaves_out_an_unverified_email(issuer: DevIssuer) -> None:
    issuer.add_user("bob", email="bob@example.com", email_verified=False, organizations=ORGS)
    issuer.default_user = "bob"
    with TestClient(edge_app(issuer), base_url=APP, follow_redirects=False) as client:
        sign_in(client, issuer)
        response = client.get("/auth/verify")
        assert response.status_code == 200
        assert response.headers["x-auth-user"] == "bob"
        assert "x-auth-email" not in response.headers


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("org=globex&role=owner", "role_insufficient"),
        ("org=globex&role=admin", "role_insufficient"),
        ("org=initech", "org_forbidden"),
        ("role=member", "org_required"),
    ],
)
def test_forward_auth_refuses_with_403(signed_in: TestClient, query: str, code: str) -> None:
    response = signed_in.get(f"/auth/verify?{query}")

    assert response.status_code == 403
    assert response.json()["code"] == code


def test_forward_auth_allows_a_sufficient_role(signed_in: TestClient) -> None:
    response = signed_in.get("/auth/verify?org=acme&role=admin")

    assert response.status_code == 200
    assert response.headers["x-auth-org"] == "acme"


def test_forward_auth_answers_a_misconfigured_role_loudly(signed_in: TestClient) -> None:
    assert signed_in.get("/auth/verify?org=acme&role=superuser").status_code == 500


def test_forward_auth_applies_the_csrf_rule_to_the_original_request(
    signed_in: TestClient,
) -> None:
    cross_site = {"X-Original-Method": "POST", "Origin": "https://evil.test"}
    same_site = {"X-Original-Method": "POST", "Origin": APP}
    safe = {"X-Original-Method": "GET", "Origin": "https://evil.test"}
    traefik = {"X-Forwarded-Method": "DELETE"}

    refused = signed_in.get("/auth/verify", headers=cross_site)

    assert refused.status_code == 403
    assert refused.json()["code"] == "csrf_rejected"
    assert signed_in.get("/auth/verify", headers=same_site).status_code == 200
    assert signed_in.get("/auth/verify", headers=safe).status_code == 200
    assert signed_in.get("/auth/verify", headers=traefik).status_code == 403
    metrics = signed_in.get("/metrics").text
    assert "jwtedge_csrf_rejected_total 2.0" in metrics


def test_forward_auth_needs_no_origin_for_bearer_callers(
    client: TestClient, issuer: DevIssuer
) -> None:
    token = issuer.access_token("ada", organizations=ORGS)
    headers = {"Authorization": f"Bearer {token}", "X-Original-Method": "POST"}

    assert client.get("/auth/verify", headers=headers).status_code == 200


def test_forward_auth_never_refreshes(issuer: DevIssuer) -> None:
    # 5 s tokens minted 4 s ago: inside a third of their lifetime, so due.
    issuer.access_ttl = 5
    issuer.clock = lambda: time.time() - 4
    with TestClient(edge_app(issuer), base_url=APP, follow_redirects=False) as client:
        sign_in(client, issuer)
        grants = issuer.stats.refresh_grants

        response = client.get("/auth/verify")

        assert response.status_code == 200
        assert "set-cookie" not in response.headers
        assert issuer.stats.refresh_grants == grants
        client.get("/")
        assert issuer.stats.refresh_grants == grants + 1


def test_forward_auth_encodes_claim_values_for_headers(issuer: DevIssuer) -> None:
    odd = [{"id": "o1", "slug": "we,ird\nslug", "name": "Odd", "role": "owner"}]
    issuer.add_user("odd", organizations=odd, projects=[{"id": "p,1", "organizationId": "o1"}])
    issuer.default_user = "odd"
    with TestClient(edge_app(issuer), base_url=APP, follow_redirects=False) as client:
        sign_in(client, issuer)
        response = client.get("/auth/verify")
        assert response.headers["x-auth-orgs"] == "we%2Cird%0Aslug"
        assert response.headers["x-auth-projects"] == "p%2C1"


# -- health ---------------------------------------------------------------------------------


def test_healthz_is_ok(client: TestClient) -> None:
    response = client.get("/healthz")

    assert (response.status_code, response.text) == (200, "ok")


def test_readyz_reports_the_key_source_kids_and_bake_age(
    client: TestClient, issuer: DevIssuer
) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["keys"]["source"] == "baked"
    assert sorted(body["keys"]["kids"]) == sorted(issuer.kids())
    assert body["bake"]["baked_at"].startswith("2030-01-01")
    assert body["bake"]["age_seconds"] == 0.0  # baked "in the future": clamped
    assert body["remote"]["last_fetch_error"] is None


def test_readyz_reports_an_old_bake_age(issuer: DevIssuer) -> None:
    baked_at = time.time() - 7200
    meta = {"issuer": issuer.issuer, "baked_at": baked_at}
    config = edge_config(issuer, auth={"jwks_meta": meta})
    with TestClient(create_app(config), base_url=APP) as client:
        age = client.get("/readyz").json()["bake"]["age_seconds"]
        assert 7199 < age < 7260
        assert re.search(r"^jwtedge_bake_age_seconds 7[12]\d\d", client.get("/metrics").text, re.M)


def test_readyz_is_503_without_a_usable_key(issuer: DevIssuer) -> None:
    config = edge_config(issuer, auth={"jwks": None})
    with TestClient(create_app(config), base_url=APP) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["keys"]["source"] == "none"
        assert "no verification key" in response.json()["reasons"][0]


def test_readyz_turns_503_when_fetched_keys_go_stale(issuer: DevIssuer) -> None:
    snapshot = issuer.jwks()
    answers = iter([httpx2.Response(200, json=snapshot)])

    def issuer_jwks(request: httpx2.Request) -> httpx2.Response:
        return next(answers, httpx2.Response(500, json={"error": "down"}))

    clock = [1000.0]
    config = edge_config(
        issuer,
        auth={"jwks": None},
        keys={"remote": "unknown-kid", "stale_if_error": 60, "cooldown": 1},
    )
    verifier = TokenVerifier.from_config(config)
    remote = RemoteKeys.from_config(
        config, verifier.keys, transport=httpx2.MockTransport(issuer_jwks), now=lambda: clock[0]
    )
    app = create_app(config, verifier=verifier, remote=remote)
    with TestClient(app, base_url=APP) as client:
        # Nothing was baked: start-up fetched the keys once.
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["keys"]["source"] == "remote"
        clock[0] += 61
        unknown = issuer.sign(
            {"iss": issuer.issuer, "sub": "ada", "aud": "api", "exp": time.time() + 60},
            header={"alg": "RS256", "kid": "a-kid-nobody-has", "typ": "at+jwt"},
            kid=issuer.kids("RS256")[0],
        )

        refused = client.get("/api/session", headers={"Authorization": f"Bearer {unknown}"})
        assert refused.status_code == 503
        assert refused.json()["code"] == "keys_stale"

        stale = client.get("/readyz")
        assert stale.status_code == 503
        body = stale.json()
        assert body["keys"]["stale"] is True
        assert body["remote"]["last_fetch_error"]
        assert "jwtedge_keys_stale 1.0" in client.get("/metrics").text
        client.portal.call(remote.aclose)


# -- metrics --------------------------------------------------------------------------------

DOCUMENTED = {
    "jwtedge_requests",
    "jwtedge_csrf_rejected",
    "jwtedge_cache_hits",
    "jwtedge_cache_misses",
    "jwtedge_key_fetches",
    "jwtedge_key_refetch_suppressed",
    "jwtedge_keys_stale_served",
    "jwtedge_keys_stale",
    "jwtedge_bake_age_seconds",
    "jwtedge_refresh",
    "jwtedge_websocket_upgrades",
    "jwtedge_request_duration_seconds",
}


def metric_samples(text: str) -> dict[str, list[Any]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_metrics_expose_the_documented_names(signed_in: TestClient) -> None:
    signed_in.get("/api/orgs/acme/projects")
    signed_in.get("/api/orgs/globex/projects")
    signed_in.get("/no/such/page")
    with signed_in.websocket_connect(WS, headers=dict(ORIGIN)) as websocket:
        websocket.receive_json()

    response = signed_in.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = metric_samples(response.text)
    assert set(families) >= DOCUMENTED
    counts = {
        sample.labels["outcome"]: sample.value
        for sample in families["jwtedge_requests"]
        if sample.name == "jwtedge_requests_total"
    }
    assert counts["authenticated"] >= 3
    upgrades = {
        s.labels["outcome"]: s.value
        for s in families["jwtedge_websocket_upgrades"]
        if s.name.endswith("_total")
    }
    assert upgrades["authenticated"] == 1
    routes = {s.labels["route"] for s in families["jwtedge_request_duration_seconds"]}
    assert "/api/orgs/{slug}/projects" in routes
    assert "unmatched" in routes
    assert not any("acme" in route for route in routes)
    logins = {
        (s.labels["result"], s.labels["code"]): s.value
        for s in families["jwtedge_logins"]
        if s.name.endswith("_total")
    }
    assert logins[("completed", "")] == 1


def test_each_app_has_its_own_registry(issuer: DevIssuer) -> None:
    first, second = edge_app(issuer), edge_app(issuer)
    with (
        TestClient(first, base_url=APP) as one,
        TestClient(second, base_url=APP) as two,
    ):
        one.get("/")
        one.get("/")
        text = two.get("/metrics").text
    samples = metric_samples(text)["jwtedge_requests"]
    anonymous = [s.value for s in samples if s.labels.get("outcome") == "anonymous"]
    assert anonymous == [0.0]


def test_metrics_and_health_are_reachable_with_bad_credentials(client: TestClient) -> None:
    headers = {"Authorization": "Bearer not-a-token"}

    assert client.get("/healthz", headers=headers).status_code == 200
    assert client.get("/metrics", headers=headers).status_code == 200


def test_refresh_and_logout_work_from_the_issuer_side_too(
    signed_in: TestClient, issuer: DevIssuer
) -> None:
    assert signed_in.post("/auth/refresh", headers=ORIGIN).status_code == 200
    response = signed_in.post("/auth/logout", headers=ORIGIN)

    assert response.status_code == 303
    assert response.headers["location"].startswith(f"{ISSUER_URL}/logout")
    assert signed_in.get("/api/session").status_code == 401


def test_a_redis_url_gives_the_app_a_shared_refresh_store(issuer: DevIssuer) -> None:
    from verifier.redis_refresher import RedisRefresher

    app = edge_app(issuer, refresh={"redis_url": "redis://127.0.0.1:1/0", "store_key": "s" * 40})
    with TestClient(app, base_url=APP) as client:
        assert isinstance(app.state.edge.refresher, RedisRefresher)
        text = client.get("/metrics").text
    assert 'jwtedge_refresh_store_events_total{event="degraded"} 0.0' in text


def test_the_middleware_does_not_undo_token_cookies_the_app_cleared(issuer: DevIssuer) -> None:
    config = edge_config(issuer)
    jar = CookieJar(config.cookies)

    async def logout(request: Request) -> Response:
        response = PlainTextResponse("signed out")
        for value in jar.clear_cookies(secure=False):
            response.headers.append("set-cookie", value)
        return response

    verifier = TokenVerifier.from_config(config)
    refresher = InProcessRefresher.from_config(
        config, verifier, transport=httpx2.ASGITransport(app=issuer.app)
    )
    app = JWTSessionMiddleware(
        Starlette(routes=[Route("/logout", logout)]),
        config,
        verifier=verifier,
        refresher=refresher,
    )
    # 5 s tokens minted 4 s ago: due for refresh on every request.
    issuer.access_ttl = 5
    issuer.clock = lambda: time.time() - 4
    tokens = issuer.login("ada")
    with TestClient(app, base_url=APP) as client:
        client.cookies.set("jwtedge_access", tokens["access_token"])
        client.cookies.set("jwtedge_id", tokens["id_token"])
        client.cookies.set("jwtedge_refresh", tokens["refresh_token"])

        response = client.get("/logout")

    # Only the app's clearing cookies go out: the due refresh must not re-set them.
    set_cookies = response.headers.get_list("set-cookie")
    assert sorted(value.partition("=")[0] for value in set_cookies) == [
        "jwtedge_access",
        "jwtedge_id",
        "jwtedge_refresh",
    ]
    assert all("Max-Age=0" in value for value in set_cookies)
