"""The profile mechanism: registry, settings, overrides, rankings, claims_mapper, audience rules.

Issuer-specific behaviour lives in one test file per profile beside this one.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import unquote

import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.conftest import REPO
from tests.profiles.helpers import NOW, config, refused, sign, verifier
from verifier.app import LIST_HEADER_CAP, create_app
from verifier.authz import requires_org, requires_permissions, requires_roles, resolve_org
from verifier.config import AppConfig
from verifier.errors import ConfigInvalid, OrgRequired
from verifier.fastapi import install_error_handler
from verifier.fastapi import require_permissions as fastapi_permissions
from verifier.fastapi import require_roles as fastapi_roles
from verifier.middleware import JWTSessionMiddleware
from verifier.profiles import (
    Organization,
    Profile,
    ProfileContext,
    SessionParts,
    get_profile,
    profile_names,
    register_profile,
)
from verifier.session import Session
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISS = "https://id.example.com"
PART_ONE = {"jwtedge", "auth0", "keycloak", "okta", "entra", "cognito"}


def jwtedge_claims(**extra: Any) -> dict[str, Any]:
    return {
        "iss": ISS,
        "sub": "u1",
        "aud": "api",
        "scope": "read",
        "organizations": [
            {"id": "o1", "slug": "acme", "name": "Acme", "role": "member"},
            {"id": "o2", "slug": "globex", "name": "Globex", "role": "owner"},
        ],
        **extra,
    }


# -- registry ---------------------------------------------------------------------------


def test_registry_finds_every_issuer_module() -> None:
    assert set(profile_names()) >= PART_ONE
    for name in profile_names():
        profile = get_profile(name)
        assert profile.name == name
        assert profile.docs, f"{name} cites no documentation"


def test_unknown_profile_is_a_config_error_naming_the_setting(issuer: DevIssuer) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        config(issuer, profile="nope", iss=ISS, audience="api")

    assert "APP_CONFIG_CLAIMS__PROFILE" in caught.value.message
    assert "unknown claims profile 'nope'" in caught.value.message


def test_an_app_can_register_its_own_profile_and_never_replace_one(issuer: DevIssuer) -> None:
    class Acme(Profile):
        name = "acme-test-profile"
        docs = ("https://acme.example/tokens",)

        def map_claims(
            self,
            access: Mapping[str, Any],
            id_claims: Mapping[str, Any] | None,
            context: ProfileContext,
        ) -> SessionParts:
            return SessionParts(roles=tuple(access.get("acme_roles", ())))

    register_profile(Acme())
    tv = verifier(issuer, profile="acme-test-profile", iss=ISS, audience="api")
    session = tv.session(sign(issuer, {"iss": ISS, "sub": "u1", "aud": "api", "acme_roles": ["x"]}))

    assert session.roles == ("x",)
    with pytest.raises(ValueError, match="already registered"):
        register_profile(Acme())

    class Impostor(Acme):
        name = "jwtedge"

    with pytest.raises(ValueError, match="already registered"):
        register_profile(Impostor())


# -- the default profile ------------------------------------------------------------------


def test_jwtedge_profile_keeps_todays_shape_and_names_the_active_org(issuer: DevIssuer) -> None:
    tv = verifier(issuer, profile="jwtedge", iss=ISS, audience="api")
    claims = jwtedge_claims(active_org="globex")

    session = tv.session(sign(issuer, claims))

    assert session.to_dict() == Session.from_claims(session.claims).to_dict()
    assert session.active_organization == session.organizations[1]
    assert session.organizations[1] == Organization("o2", "globex", "Globex", "owner", ("owner",))
    assert (session.roles, session.permissions) == ((), ())


def test_a_cached_session_is_the_same_object_for_any_profile(issuer: DevIssuer) -> None:
    tv = verifier(issuer, profile="okta", iss=ISS, audience="api")
    token = sign(issuer, {"iss": ISS, "sub": "a@example.com", "uid": "00u1", "aud": "api"})

    first = tv.session(token)
    again = tv.session(token)

    assert again is first
    assert (tv.cache_stats.hits, tv.cache_stats.misses) == (1, 1)


# -- claims.roles / claims.permissions ------------------------------------------------------


def test_roles_from_a_json_pointer_and_permissions_from_a_namespaced_claim(
    issuer: DevIssuer,
) -> None:
    tv = verifier(
        issuer,
        profile="jwtedge",
        iss=ISS,
        audience="api",
        claims={"roles": "/realm_access/roles", "permissions": "https://example.com/perms"},
    )
    claims = jwtedge_claims(
        realm_access={"roles": ["admin", "auditor"]},
        **{"https://example.com/perms": ["read:all"]},
    )

    session = tv.session(sign(issuer, claims))

    assert session.roles == ("admin", "auditor")
    assert session.permissions == ("read:all",)


def test_pointer_escapes_reach_names_with_slashes_and_tildes(issuer: DevIssuer) -> None:
    tv = verifier(
        issuer, profile="jwtedge", iss=ISS, audience="api", claims={"roles": "/a~1b/c~0d"}
    )

    session = tv.session(sign(issuer, jwtedge_claims(**{"a/b": {"c~d": ["x"]}})))

    assert session.roles == ("x",)


@pytest.mark.parametrize("value", ["admin", {"roles": ["admin"]}, [1, 2], ["ok", None]])
def test_a_roles_claim_of_the_wrong_type_is_claims_invalid(issuer: DevIssuer, value: Any) -> None:
    tv = verifier(issuer, profile="jwtedge", iss=ISS, audience="api", claims={"roles": "roles"})

    error = refused(tv, sign(issuer, jwtedge_claims(roles=value)))

    assert error.code == "claims_invalid"
    assert "roles" in error.message


def test_a_malformed_pointer_is_a_config_error(issuer: DevIssuer) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        config(issuer, profile="jwtedge", iss=ISS, audience="api", claims={"roles": "/a/~2"})

    assert "APP_CONFIG_CLAIMS__ROLES" in caught.value.message


# -- role ranking -------------------------------------------------------------------------


def ranked_app(cfg: AppConfig, tv: TokenVerifier, role: str) -> TestClient:
    @requires_org(role)
    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse({"org": request.state.org.id})

    app = Starlette(
        routes=[Route("/api/thing", endpoint)],
        middleware=[Middleware(JWTSessionMiddleware, verifier=tv, config=cfg)],
    )
    return TestClient(app)


def test_role_ranks_setting_ranks_any_of_the_org_roles(issuer: DevIssuer) -> None:
    ranks = {"viewer": 1, "maintainer": 5, "boss": 9}
    cfg = config(issuer, profile="keycloak", iss=ISS, audience="api", claims={"role_ranks": ranks})
    tv = TokenVerifier.from_config(cfg, now=lambda: NOW)
    claims = {
        "iss": ISS,
        "sub": "u1",
        "aud": "api",
        "typ": "Bearer",
        "scope": "openid organization:acme",
        "organization": {"acme": {"id": "o-1", "roles": ["viewer", "maintainer"]}},
    }
    headers = {"Authorization": f"Bearer {sign(issuer, claims)}"}

    assert tv.role_ranks == ranks
    allowed = ranked_app(cfg, tv, "maintainer").get("/api/thing", headers=headers)
    assert allowed.json() == {"org": "o-1"}
    denied = ranked_app(cfg, tv, "boss").get("/api/thing", headers=headers)
    assert denied.status_code == 403
    assert denied.json()["code"] == "role_insufficient"


def test_role_ranks_must_be_integers(issuer: DevIssuer) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        config(
            issuer, profile="jwtedge", iss=ISS, audience="api", claims={"role_ranks": {"a": "1"}}
        )

    assert "APP_CONFIG_CLAIMS__ROLE_RANKS" in caught.value.message


# -- requires_roles / requires_permissions ----------------------------------------------------


def roles_session_app(issuer: DevIssuer) -> tuple[TestClient, TestClient, dict[str, str]]:
    cfg = config(
        issuer,
        profile="jwtedge",
        iss=ISS,
        audience="api",
        claims={"roles": "roles", "permissions": "permissions"},
    )
    tv = TokenVerifier.from_config(cfg, now=lambda: NOW)

    @requires_roles("editor")
    async def edit(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @requires_permissions("read:reports", "write:reports")
    async def report(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    starlette = Starlette(
        routes=[Route("/api/edit", edit), Route("/api/report", report)],
        middleware=[Middleware(JWTSessionMiddleware, config=cfg, verifier=tv)],
    )
    fastapi = FastAPI()
    fastapi.add_middleware(JWTSessionMiddleware, config=cfg, verifier=tv)
    install_error_handler(fastapi)

    @fastapi.get("/api/edit")
    async def f_edit(
        session: Annotated[Session, Depends(fastapi_roles("editor"))],
    ) -> dict[str, bool]:
        return {"ok": True}

    @fastapi.get("/api/report")
    async def f_report(
        session: Annotated[Session, Depends(fastapi_permissions("read:reports", "write:reports"))],
    ) -> dict[str, bool]:
        return {"ok": True}

    claims = jwtedge_claims(roles=["editor"], permissions=["read:reports"])
    headers = {"Authorization": f"Bearer {sign(issuer, claims)}"}
    return TestClient(starlette), TestClient(fastapi), headers


@pytest.mark.parametrize("flavour", ["starlette", "fastapi"])
def test_requires_roles_and_permissions(issuer: DevIssuer, flavour: str) -> None:
    starlette, fastapi, headers = roles_session_app(issuer)
    client = starlette if flavour == "starlette" else fastapi

    assert client.get("/api/edit", headers=headers).json() == {"ok": True}
    short = client.get("/api/report", headers=headers)
    assert short.status_code == 403
    assert short.json()["code"] == "scope_insufficient"
    assert short.json()["error"] == "insufficient_scope"
    assert "write:reports" in short.json()["message"]
    assert short.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'
    assert client.get("/api/edit").status_code == 401


def test_requires_roles_refuses_a_caller_without_the_role(issuer: DevIssuer) -> None:
    starlette, fastapi, _ = roles_session_app(issuer)
    headers = {"Authorization": f"Bearer {sign(issuer, jwtedge_claims(roles=['viewer']))}"}

    for client in (starlette, fastapi):
        denied = client.get("/api/edit", headers=headers)
        assert denied.status_code == 403
        assert denied.json()["code"] == "role_insufficient"


@pytest.mark.parametrize("names", [(), ("",), ("two words",)])
def test_requires_roles_and_permissions_check_their_names_at_decoration(
    names: tuple[str, ...],
) -> None:
    for factory in (requires_roles, requires_permissions, fastapi_roles, fastapi_permissions):
        with pytest.raises(ValueError, match=r"at least one|invalid"):
            factory(*names)


# -- claims_mapper -----------------------------------------------------------------------------


def house_mapper(
    access: Mapping[str, Any], id_claims: Mapping[str, Any] | None, context: ProfileContext
) -> SessionParts:
    """An in-house issuer: one team per token, the team's grants as permissions."""
    team = Organization(access["team"]["uuid"], None, access["team"]["label"])
    return SessionParts(
        organizations=(team,),
        active_organization=team,
        roles=tuple(access.get("house_roles", ())),
        permissions=tuple(access["team"]["grants"]),
    )


HOUSE = {
    "iss": ISS,
    "sub": "u-7",
    "aud": "api",
    "team": {"uuid": "t-1", "label": "Blue team", "grants": ["deploy"]},
    "house_roles": ["ops"],
}


def test_claims_mapper_on_the_verifier_replaces_the_profile_mapping(issuer: DevIssuer) -> None:
    tv = TokenVerifier.from_config(
        config(issuer, profile="jwtedge", iss=ISS, audience="api"),
        now=lambda: NOW,
        claims_mapper=house_mapper,
    )

    session = tv.session(sign(issuer, HOUSE))

    assert session.user.id == "u-7"
    assert session.organizations == (Organization("t-1", None, "Blue team"),)
    assert session.active_organization == session.organizations[0]
    assert (session.roles, session.permissions) == (("ops",), ("deploy",))


def test_claims_mapper_on_the_middleware_reaches_the_app(issuer: DevIssuer) -> None:
    cfg = config(issuer, profile="jwtedge", iss=ISS, audience="api")

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse(request.auth.to_dict())

    app = Starlette(
        routes=[Route("/api/me", whoami)],
        middleware=[Middleware(JWTSessionMiddleware, config=cfg, claims_mapper=house_mapper)],
    )
    # A real clock here: re-sign with fresh dates.
    token = issuer.sign(
        {**HOUSE, "iat": int(issuer.clock()), "exp": int(issuer.clock()) + 300},
        {"alg": "RS256", "kid": issuer.kids("RS256")[-1]},
        kid=issuer.kids("RS256")[-1],
        alg="RS256",
    )

    body = TestClient(app).get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()

    assert body["organizations"][0]["id"] == "t-1"
    assert body["active_organization"] == "t-1"
    assert body["permissions"] == ["deploy"]


def test_middleware_refuses_a_claims_mapper_beside_a_ready_verifier(issuer: DevIssuer) -> None:
    cfg = config(issuer, profile="jwtedge", iss=ISS, audience="api")

    with pytest.raises(ValueError, match="claims_mapper"):
        JWTSessionMiddleware(
            Starlette(),
            cfg,
            verifier=TokenVerifier.from_config(cfg),
            claims_mapper=house_mapper,
        )


# -- audience settings ---------------------------------------------------------------------------


def test_audience_claim_none_is_an_opt_in_with_a_start_up_warning(
    issuer: DevIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="jwtedge"):
        tv = verifier(issuer, profile="jwtedge", iss=ISS, audience_claim="none")

    assert "tokens are bound by issuer and keys only" in caplog.text
    assert tv.audience_claim is None
    session = tv.session(sign(issuer, {"iss": ISS, "sub": "u1"}))
    assert session.user.id == "u1"
    assert refused(tv, sign(issuer, {"iss": "https://other.example", "sub": "u1"})).code == (
        "issuer_mismatch"
    )


def test_audience_claim_none_with_an_audience_is_refused(issuer: DevIssuer) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        config(issuer, profile="jwtedge", iss=ISS, audience="api", audience_claim="none")

    assert "APP_CONFIG_AUTH__AUDIENCE" in caught.value.message
    assert "audience_claim=none" in caught.value.message


def test_a_missing_audience_without_the_opt_in_is_refused(issuer: DevIssuer) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        config(issuer, profile="jwtedge", iss=ISS)

    assert "APP_CONFIG_AUTH__AUDIENCE" in caught.value.message


def test_audience_claim_setting_overrides_the_profile(issuer: DevIssuer) -> None:
    tv = verifier(issuer, profile="jwtedge", iss=ISS, audience="web", audience_claim="azp")

    assert tv.session(sign(issuer, {"iss": ISS, "sub": "u1", "azp": "web"})).user.id == "u1"
    assert refused(tv, sign(issuer, {"iss": ISS, "sub": "u1", "aud": "web"})).code == (
        "audience_mismatch"
    )


def test_all_digit_ids_stay_strings(
    issuer: DevIssuer, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("APP_CONFIG_ENV_FILE", str(tmp_path / "none.env"))
    monkeypatch.setenv("APP_CONFIG_AUTH__ISSUER", ISS)
    monkeypatch.setenv("APP_CONFIG_AUTH__AUDIENCE", "284719360215432711")
    monkeypatch.setenv("APP_CONFIG_AUTH__CLIENT_ID", "284719360215432999")

    env_config = AppConfig()
    json_config = AppConfig(
        auth={"issuer": ISS, "audience": [284719360215432711], "client_id": 42}, claims={}
    )

    assert env_config.auth.audiences == ("284719360215432711",)
    assert env_config.auth.client_id == "284719360215432999"
    assert json_config.auth.audiences == ("284719360215432711",)
    assert json_config.auth.client_id == "42"
    tv = verifier(issuer, profile="jwtedge", iss=ISS, audience="284719360215432711")
    token = sign(issuer, {"iss": ISS, "sub": "u1", "aud": "284719360215432711"})
    assert tv.session(token).user.id == "u1"


def test_tenants_belong_to_the_entra_profile_only(issuer: DevIssuer) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        config(issuer, profile="okta", iss=ISS, audience="api", tenants=["t1"])

    assert "APP_CONFIG_AUTH__TENANTS" in caught.value.message


# -- forward-auth headers --------------------------------------------------------------------------


def forward_auth(issuer: DevIssuer, claims: dict[str, Any]) -> Mapping[str, str]:
    cfg = config(
        issuer,
        profile="jwtedge",
        iss=ISS,
        audience="api",
        claims={"roles": "roles", "permissions": "permissions"},
    )
    tv = TokenVerifier.from_config(cfg, now=lambda: NOW)
    with TestClient(create_app(cfg, verifier=tv)) as client:
        response = client.get(
            "/auth/verify", headers={"Authorization": f"Bearer {sign(issuer, claims)}"}
        )
    assert response.status_code == 200
    return response.headers


def test_forward_auth_sends_roles_and_permissions_percent_encoded(issuer: DevIssuer) -> None:
    claims = jwtedge_claims(roles=["admin", "a,b", "new\nline"], permissions=["read:all", "é"])

    headers = forward_auth(issuer, claims)

    assert headers["x-auth-roles"] == "admin,a%2Cb,new%0Aline"
    assert [unquote(part) for part in headers["x-auth-roles"].split(",")] == claims["roles"]
    assert headers["x-auth-permissions"] == "read:all,%C3%A9"
    assert "x-auth-truncated" not in headers


def test_forward_auth_caps_long_lists_at_a_whole_entry(issuer: DevIssuer) -> None:
    roles = [f"role-{n:04d}-{'x' * 40}" for n in range(100)]

    headers = forward_auth(issuer, jwtedge_claims(roles=roles, permissions=["p"]))

    sent = headers["x-auth-roles"]
    assert len(sent) <= LIST_HEADER_CAP
    assert sent.split(",") == roles[: len(sent.split(","))]
    assert headers["x-auth-truncated"] == "roles"
    assert headers["x-auth-permissions"] == "p"


def test_forward_auth_names_an_organization_without_a_slug_by_its_id(issuer: DevIssuer) -> None:
    cfg = config(issuer, profile="jwtedge", iss=ISS, audience="api")
    tv = TokenVerifier.from_config(cfg, now=lambda: NOW, claims_mapper=house_mapper)
    with TestClient(create_app(cfg, verifier=tv)) as client:
        response = client.get(
            "/auth/verify", headers={"Authorization": f"Bearer {sign(issuer, HOUSE)}"}
        )

    assert response.headers["x-auth-orgs"] == "t-1"
    assert response.headers["x-auth-org"] == "t-1"


def test_the_readme_claims_mapper_example_builds_this_session(issuer: DevIssuer) -> None:
    readme = (REPO / "README.md").read_text("utf-8")
    block = next(
        part.split("```", 1)[0]
        for part in readme.split("```python")
        if "def house_claims" in part.split("```", 1)[0]
    )
    namespace: dict[str, Any] = {}
    # The example ends by installing the middleware on the reader's app.
    exec(block.partition("app.add_middleware")[0], namespace)  # noqa: S102 - our README
    tv = TokenVerifier.from_config(
        config(issuer, profile="jwtedge", iss=ISS, audience="api"),
        now=lambda: NOW,
        claims_mapper=namespace["house_claims"],
    )

    session = tv.session(sign(issuer, {**HOUSE, "scope": "deploy:read"}))

    assert session.organizations == (Organization("t-1", None, "Blue team"),)
    assert session.active_organization == session.organizations[0]
    assert (session.roles, session.permissions) == (("ops",), ("deploy",))
    assert session.token_scopes == ("deploy:read",)


def test_the_profiles_bench_runs_for_every_profile() -> None:
    env = {**os.environ, "APP_CONFIG_ENV_FILE": str(REPO / "bench" / "no-such.env")}
    result = subprocess.run(
        [sys.executable, "-m", "bench.profiles", "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    for name in PART_ONE:
        assert f"\n{name} " in result.stdout
    assert "cached / jwtedge" in result.stdout


def test_resolve_org_takes_the_active_organization_among_several(issuer: DevIssuer) -> None:
    def two_teams(
        access: Mapping[str, Any], id_claims: Mapping[str, Any] | None, context: ProfileContext
    ) -> SessionParts:
        teams = (Organization("t-1", "red", None), Organization("t-2", None, "Blue"))
        return SessionParts(organizations=teams, active_organization=teams[1])

    tv = TokenVerifier.from_config(
        config(issuer, profile="jwtedge", iss=ISS, audience="api"),
        now=lambda: NOW,
        claims_mapper=two_teams,
    )
    session = tv.session(sign(issuer, {"iss": ISS, "sub": "u1", "aud": "api"}))

    assert resolve_org(session).id == "t-2"
    assert resolve_org(session, explicit_slug="red").id == "t-1"


def test_org_required_names_organizations_by_slug_or_id(issuer: DevIssuer) -> None:
    def two_teams(
        access: Mapping[str, Any], id_claims: Mapping[str, Any] | None, context: ProfileContext
    ) -> SessionParts:
        return SessionParts(
            organizations=(Organization("t-1", "red", None), Organization("t-2", None, "Blue"))
        )

    tv = TokenVerifier.from_config(
        config(issuer, profile="jwtedge", iss=ISS, audience="api"),
        now=lambda: NOW,
        claims_mapper=two_teams,
    )
    session = tv.session(sign(issuer, {"iss": ISS, "sub": "u1", "aud": "api"}))

    with pytest.raises(OrgRequired) as caught:
        resolve_org(session)

    assert caught.value.context["organizations"] == ["red", "t-2"]
    assert caught.value.message.endswith("one of red, t-2")


def test_forward_auth_ranks_the_role_parameter_by_the_profile_ranking(issuer: DevIssuer) -> None:
    ranks = {"viewer": 1, "maintainer": 5, "boss": 9}
    cfg = config(issuer, profile="keycloak", iss=ISS, audience="api", claims={"role_ranks": ranks})
    tv = TokenVerifier.from_config(cfg, now=lambda: NOW)
    claims = {
        "iss": ISS,
        "sub": "u1",
        "aud": "api",
        "typ": "Bearer",
        "organization": {"acme": {"id": "o-1", "roles": ["maintainer"]}},
    }
    headers = {"Authorization": f"Bearer {sign(issuer, claims)}"}

    with TestClient(create_app(cfg, verifier=tv)) as client:
        allowed = client.get("/auth/verify?org=acme&role=viewer", headers=headers)
        denied = client.get("/auth/verify?org=acme&role=boss", headers=headers)
        unranked = client.get("/auth/verify?org=acme&role=admin", headers=headers)

    assert allowed.status_code == 200
    assert allowed.headers["x-auth-org"] == "acme"
    assert allowed.headers["x-auth-role"] == "maintainer"
    assert (denied.status_code, denied.json()["code"]) == (403, "role_insufficient")
    # A role the ranking does not know is a proxy misconfiguration: loud, as before.
    assert unranked.status_code == 500
