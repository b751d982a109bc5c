"""The bake recognises the issuer: host and path rules as pure functions, discovery
shapes served by real uvicorn on 127.0.0.1, and ``--write-profile``.

Loopback URLs cannot carry the SaaS hostnames, so the host rules are tested as
pure functions; what the bake sees end to end (a discovery document, a path, a
``--jwks-url``) is tested against a real server.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from dotenv import dotenv_values
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner, Result

from deploy.bake import JWKS_META_VAR, JWKS_VAR, PROFILE_VAR
from deploy.cli import Seams, app
from deploy.detect import PROFILES, Setting, describe, detect, match_discovery, match_url
from deploy.run import serve_in_thread
from verifier.profiles import get_profile, profile_names
from verifier.testing import DevIssuer

from . import discovery_shapes as shapes

runner = CliRunner()
ORIGIN = "https://auth.example.com"
STYTCH_JWKS_PATH = f"/v1/b2b/sessions/jwks/{shapes.STYTCH_PROJECT}"
WORKOS_JWKS_PATH = f"/sso/jwks/{shapes.WORKOS_CLIENT}"
DESCOPE_JWKS_PATH = f"/v2/keys/{shapes.DESCOPE_PROJECT}"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("APP_CONFIG_") or name == "GITHUB_ENV":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


# -- host and path rules (pure) ------------------------------------------------------

URLS = [
    ("https://humble-owl-12.clerk.accounts.dev", "clerk"),
    ("https://clerk.example.com", "clerk"),
    ("https://api.workos.com", "workos"),
    (f"https://api.workos.com/user_management/{shapes.WORKOS_CLIENT}", "workos"),
    ("https://acme.authkit.app", "workos"),
    ("https://acme-x1y2z3.zitadel.cloud", "zitadel"),
    ("https://acme.zitadel.ch", "zitadel"),
    ("https://acme.kinde.com", "kinde"),
    ("https://abcdefghijklmnopqrst.supabase.co/auth/v1", "supabase"),
    ("https://supabase.example.com/auth/v1", "supabase"),
    (f"https://securetoken.google.com/{shapes.FIREBASE_PROJECT}", "firebase"),
    (f"stytch.com/{shapes.STYTCH_PROJECT}", "stytch"),
    ("https://test.stytch.com", "stytch"),
    ("https://humble-owl-12.customers.stytch.dev", "stytch"),
    ("https://123456789.propelauthtest.com", "propelauth"),
    ("https://auth.propelauth.com", "propelauth"),
    (f"https://api.descope.com/{shapes.DESCOPE_PROJECT}", "descope"),
    (f"https://api.euc1.descope.com/{shapes.DESCOPE_PROJECT}", "descope"),
    ("https://acme.logto.app/oidc", "logto"),
    ("https://sso.example.com/realms/acme", "keycloak"),
    ("https://sso.example.com/auth/realms/acme/", "keycloak"),
    ("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123", "cognito"),
    ("https://cognito-idp.us-gov-west-1.amazonaws.com/us-gov-west-1_AbCdEf123", "cognito"),
    (f"https://login.microsoftonline.com/{shapes.ENTRA_TENANT}/v2.0", "entra"),
    (f"https://sts.windows.net/{shapes.ENTRA_TENANT}/", "entra"),
    (f"https://acme.ciamlogin.com/{shapes.ENTRA_TENANT}/v2.0", "entra"),
    (f"https://login.microsoftonline.us/{shapes.ENTRA_TENANT}/v2.0", "entra"),
    ("https://acme.eu.auth0.com/", "auth0"),
    ("https://dev-12345.okta.com/oauth2/default", "okta"),
    ("https://acme.oktapreview.com", "okta"),
    ("https://acme.okta-emea.com/oauth2/aus1a2b3c4", "okta"),
]


@pytest.mark.parametrize(("url", "profile"), URLS)
def test_issuer_url_names_its_profile(url: str, profile: str) -> None:
    found = match_url(url)
    assert found is not None, url
    assert found[0] == profile


def test_every_profile_has_a_host_or_path_rule() -> None:
    assert {profile for _, profile in URLS} == set(PROFILES)
    assert len(PROFILES) == 15


def test_detection_names_every_built_in_issuer_profile() -> None:
    # Apps may register their own profiles; the built-in ones are the package's modules.
    built_in = {
        name
        for name in profile_names()
        if type(get_profile(name)).__module__ == f"verifier.profiles.{name}"
    }
    assert {*PROFILES, "jwtedge"} == built_in


@pytest.mark.parametrize(
    "url",
    [
        ORIGIN,
        "https://evilkinde.com",  # a suffix, not a subdomain
        "https://acme.kinde.com.evil.example",
        "https://login.microsoftonline.com.evil.example/tid/v2.0",
        "https://notokta.com/oauth2/default",
        "https://example.com/realm/acme",
        "https://example.com/realms/acme/extra",
        "https://example.com/auth/v2",
        "https://cognito-idp.example.com/eu-west-1_AbC",
        "https://stytch.com",
        "https://clerk.com",
        "not a url",
        "https://",
        "https://[::1",
        "",
    ],
)
def test_unrelated_or_malformed_url_names_no_profile(url: str) -> None:
    assert match_url(url) is None
    assert detect(url) is None


def test_host_is_compared_case_insensitively_and_without_its_trailing_dot() -> None:
    assert match_url("https://ACME.Kinde.COM.") == ("kinde", "the host ends with .kinde.com")


def test_url_rules_win_over_the_discovery_document() -> None:
    # A Kinde host whose document looks like Zitadel's is still Kinde: the host is ours,
    # the document is the issuer's word.
    _, zitadel_doc = shapes.zitadel("https://acme.kinde.com")
    detection = detect("https://acme.kinde.com", zitadel_doc)
    assert detection is not None
    assert detection.profile == "kinde"


# -- discovery documents (pure) --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(shapes.RECOGNISED_ON_LOOPBACK))
def test_discovery_shape_is_recognised_on_a_neutral_host(name: str) -> None:
    shape, profile = shapes.RECOGNISED_ON_LOOPBACK[name]
    issuer, document = shape(ORIGIN)
    detection = detect(issuer, document)
    assert detection is not None, name
    assert detection.profile == profile
    assert detection.settings[0] == Setting(PROFILE_VAR, profile)


@pytest.mark.parametrize("shape", [shapes.plain, shapes.cognito])
def test_discovery_without_any_issuer_mark_names_no_profile(shape: shapes.Shape) -> None:
    issuer, document = shape(ORIGIN)
    assert match_discovery(document) is None
    assert detect(issuer, document) is None


@pytest.mark.parametrize(
    ("jwks_path", "profile"),
    [
        (STYTCH_JWKS_PATH, "stytch"),
        (WORKOS_JWKS_PATH, "workos"),
        (DESCOPE_JWKS_PATH, "descope"),
        ("/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com", "firebase"),
    ],
)
def test_the_jwks_url_alone_names_the_issuer_when_discovery_was_skipped(
    jwks_path: str, profile: str
) -> None:
    detection = detect(ORIGIN, None, jwks_uri=f"{ORIGIN}{jwks_path}")
    assert detection is not None
    assert detection.profile == profile


def test_a_document_jwks_uri_wins_over_the_jwks_url_argument() -> None:
    document = {"issuer": ORIGIN, "jwks_uri": f"{ORIGIN}/jwks"}
    assert detect(ORIGIN, document, jwks_uri=f"{ORIGIN}{STYTCH_JWKS_PATH}") is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "issuer",
        "jwks_uri",
        "authorization_endpoint",
        "userinfo_endpoint",
        "end_session_endpoint",
        "scopes_supported",
        "claims_supported",
        "mfa_challenge_endpoint",
        "cloud_instance_name",
    ]
)


@settings(max_examples=100, deadline=None)
@given(document=st.dictionaries(KEYS | st.text(max_size=20), JSON, max_size=8), url=st.text())
def test_detection_never_raises_on_any_document_or_url(document: dict[str, Any], url: str) -> None:
    detection = detect(url, document)
    if detection is not None:
        assert detection.profile in PROFILES
        assert detection.settings[0].name == PROFILE_VAR


def test_detection_ignores_a_document_that_is_not_an_object() -> None:
    assert detect(ORIGIN, ["mfa_challenge_endpoint"]) is None  # type: ignore[arg-type]


# -- the settings each profile needs -----------------------------------------------------


def settings_of(url: str, document: dict[str, Any] | None = None) -> dict[str, str]:
    detection = detect(url, document)
    assert detection is not None
    return {setting.name: setting.value for setting in detection.settings}


def test_values_the_issuer_url_holds_are_given_exactly() -> None:
    firebase = settings_of(f"https://securetoken.google.com/{shapes.FIREBASE_PROJECT}")
    assert firebase["APP_CONFIG_AUTH__AUDIENCE"] == shapes.FIREBASE_PROJECT
    entra = settings_of(f"https://login.microsoftonline.com/{shapes.ENTRA_TENANT.upper()}/v2.0")
    assert entra["APP_CONFIG_AUTH__TENANTS"] == shapes.ENTRA_TENANT
    stytch = settings_of(f"stytch.com/{shapes.STYTCH_PROJECT}")
    assert stytch["APP_CONFIG_AUTH__AUDIENCE"] == shapes.STYTCH_PROJECT
    descope = settings_of(f"https://api.descope.com/{shapes.DESCOPE_PROJECT}")
    assert descope["APP_CONFIG_AUTH__AUDIENCE"] == shapes.DESCOPE_PROJECT
    assert settings_of("https://dev-1.okta.com/oauth2/default")["APP_CONFIG_AUTH__AUDIENCE"] == (
        "api://default"
    )
    assert settings_of("https://db.example.com/auth/v1")["APP_CONFIG_AUTH__AUDIENCE"] == (
        "authenticated"
    )


def test_values_only_the_user_knows_are_placeholders() -> None:
    entra = detect("https://login.microsoftonline.com/common/v2.0")
    assert entra is not None
    tenants = next(s for s in entra.settings if s.name == "APP_CONFIG_AUTH__TENANTS")
    assert tenants.is_placeholder
    okta = settings_of("https://dev-1.okta.com/oauth2/aus1a2b3c4")
    assert okta["APP_CONFIG_AUTH__AUDIENCE"].startswith("<")


def test_clerk_needs_its_session_cookie_and_no_refresh() -> None:
    clerk = settings_of("https://humble-owl-12.clerk.accounts.dev")
    assert clerk[PROFILE_VAR] == "clerk"
    assert clerk["APP_CONFIG_COOKIES__ACCESS"] == "__session"
    assert clerk["APP_CONFIG_COOKIES__HOST_PREFIX"] == "never"
    assert clerk["APP_CONFIG_REFRESH__ENABLED"] == "false"
    assert clerk["APP_CONFIG_AUTH__AUDIENCE"].startswith("<")


def test_issuers_without_an_audience_need_the_explicit_opt_in() -> None:
    assert (
        settings_of("https://1234.propelauthtest.com")["APP_CONFIG_AUTH__AUDIENCE_CLAIM"] == "none"
    )
    assert settings_of("https://api.workos.com")["APP_CONFIG_AUTH__AUDIENCE_CLAIM"] == "none"


def test_workos_user_management_issuer_points_at_its_jwks() -> None:
    workos = settings_of(f"https://api.workos.com/user_management/{shapes.WORKOS_CLIENT}")
    assert workos["--jwks-url"] == f"https://api.workos.com/sso/jwks/{shapes.WORKOS_CLIENT}"


def test_describe_names_the_issuer_its_evidence_and_every_setting() -> None:
    detection = detect("https://acme.kinde.com")
    lines = "\n".join(describe(detection))
    assert "Kinde" in lines
    assert ".kinde.com" in lines
    assert f"{PROFILE_VAR}=kinde" in lines
    assert "APP_CONFIG_AUTH__AUDIENCE=<" in lines
    assert "not recognised" in "\n".join(describe(None))


# -- the bake against loopback issuers ----------------------------------------------------


class ShapeServer:
    """One real uvicorn server on 127.0.0.1 serving every shape under its own prefix.

    ``/<name>/...`` is the issuer of shape ``name``; its discovery document is served
    at ``<issuer>/.well-known/openid-configuration`` and every other GET answers the
    key set, so each shape's own ``jwks_uri`` works unchanged.
    """

    NAMES = (*shapes.RECOGNISED_ON_LOOPBACK, "plain", "cognito")

    def __init__(self, origin: str, jwks: dict[str, Any]) -> None:
        self.origin = origin
        self.jwks = jwks
        self.issuers: dict[str, str] = {}
        self.documents: dict[str, dict[str, Any]] = {}
        for name in self.NAMES:
            shape = getattr(shapes, name)
            issuer, document = shape(f"{origin}/{name}")
            self.issuers[name] = issuer
            path = (
                issuer.removesuffix("/").removeprefix(origin) + "/.well-known/openid-configuration"
            )
            self.documents[path] = document
        self.requests: list[str] = []

    async def handle(self, request: Request) -> Response:
        self.requests.append(request.url.path)
        document = self.documents.get(request.url.path)
        if document is not None:
            return JSONResponse(document)
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return Response(status_code=404)
        return JSONResponse(self.jwks)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET"])])


@pytest.fixture(scope="module")
def server() -> Iterator[ShapeServer]:
    keys = DevIssuer(issuer="http://127.0.0.1:9", audience="api").jwks()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        shape_server = ShapeServer(f"http://127.0.0.1:{sock.getsockname()[1]}", keys)
        with serve_in_thread(shape_server.app(), sock):
            yield shape_server


def bake(*args: str) -> Result:
    return runner.invoke(app, ["bake", "--allow-loopback", *args], obj=Seams())


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(shapes.RECOGNISED_ON_LOOPBACK))
def test_bake_recognises_each_discovery_shape_served_on_loopback(
    server: ShapeServer, name: str
) -> None:
    _, profile = shapes.RECOGNISED_ON_LOOPBACK[name]
    result = bake("--issuer", server.issuers[name])
    assert result.exit_code == 0, result.stderr
    assert f"profile {profile}" in result.stderr
    assert f"{PROFILE_VAR}={profile}" in result.stderr
    assert "pass --write-profile" in result.stderr
    # Printed, never written: stdout holds the two bake lines only.
    names = [line.split("=", 1)[0] for line in result.stdout.splitlines()]
    assert names == [JWKS_VAR, JWKS_META_VAR]


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("jwks_path", "profile", "audience"),
    [
        (STYTCH_JWKS_PATH, "stytch", shapes.STYTCH_PROJECT),
        (WORKOS_JWKS_PATH, "workos", None),
        (DESCOPE_JWKS_PATH, "descope", None),
    ],
)
def test_bake_with_jwks_url_recognises_the_issuer_from_the_key_url(
    server: ShapeServer, jwks_path: str, profile: str, audience: str | None
) -> None:
    result = bake("--issuer", f"{server.origin}/{profile}", "--jwks-url", server.origin + jwks_path)
    assert result.exit_code == 0, result.stderr
    assert f"profile {profile}" in result.stderr
    if audience is not None:
        assert f"APP_CONFIG_AUTH__AUDIENCE={audience}" in result.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["plain", "cognito"])
def test_bake_of_an_unrecognised_issuer_says_the_default_profile_applies(
    server: ShapeServer, name: str
) -> None:
    result = bake("--issuer", server.issuers[name])
    assert result.exit_code == 0, result.stderr
    assert "not recognised" in result.stderr
    assert "default claims profile (jwtedge)" in result.stderr


@pytest.mark.e2e
def test_bake_of_the_dev_issuer_recognises_nothing_and_writes_no_profile(tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    with DevIssuer.serve(port=0, audience="api") as issuer:
        result = bake("--issuer", issuer.url, "--env-file", str(env_file), "--write-profile")
    assert result.exit_code == 0, result.stderr
    assert "not recognised" in result.stderr
    assert f"{PROFILE_VAR} not written" in result.stderr
    assert set(dotenv_values(env_file)) == {JWKS_VAR, JWKS_META_VAR}


@pytest.mark.e2e
def test_write_profile_adds_the_profile_to_every_output(
    server: ShapeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text(f"{PROFILE_VAR}=jwtedge\nOTHER=kept\n")
    json_file = tmp_path / "bake.json"
    github = tmp_path / "github.env"
    monkeypatch.setenv("GITHUB_ENV", str(github))
    result = bake(
        "--issuer",
        server.issuers["keycloak"],
        "--env-file",
        str(env_file),
        "--json-file",
        str(json_file),
        "--github-env",
        "--write-profile",
    )
    assert result.exit_code == 0, result.stderr
    values = dotenv_values(env_file)
    assert values[PROFILE_VAR] == "keycloak"
    assert values["OTHER"] == "kept"
    assert env_file.read_text().count(PROFILE_VAR) == 1  # replaced in place, not appended
    assert orjson.loads(json_file.read_bytes())["claims"] == {"profile": "keycloak"}
    assert f"{PROFILE_VAR}<<" in github.read_text()
    assert "\nkeycloak\n" in github.read_text()


@pytest.mark.e2e
def test_write_profile_on_stdout_prints_a_third_line(server: ShapeServer) -> None:
    result = bake("--issuer", server.issuers["zitadel"], "--write-profile")
    assert result.exit_code == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert list(lines) == [JWKS_VAR, JWKS_META_VAR, PROFILE_VAR]
    assert lines[PROFILE_VAR] == "'zitadel'"


@pytest.mark.e2e
def test_without_write_profile_an_existing_profile_setting_is_left_alone(
    server: ShapeServer, tmp_path: Path
) -> None:
    # A team on jwtedge's own claim shape keeps it: detection never overwrites by default.
    env_file = tmp_path / "app.env"
    env_file.write_text(f"{PROFILE_VAR}=jwtedge\n")
    result = bake("--issuer", server.issuers["auth0"], "--env-file", str(env_file))
    assert result.exit_code == 0, result.stderr
    assert "profile auth0" in result.stderr
    assert dotenv_values(env_file)[PROFILE_VAR] == "jwtedge"


def test_failed_discovery_of_a_workos_issuer_suggests_its_jwks_url() -> None:
    # A WorkOS host cannot be served on loopback: an in-memory transport answers 404.
    issuer = f"https://api.workos.com/user_management/{shapes.WORKOS_CLIENT}"
    transport = httpx2.MockTransport(lambda request: httpx2.Response(404))
    result = runner.invoke(app, ["bake", "--issuer", issuer], obj=Seams(transport=transport))
    assert result.exit_code == 3
    assert f"try --jwks-url=https://api.workos.com/sso/jwks/{shapes.WORKOS_CLIENT}" in (
        result.stderr
    )


def test_bake_result_values_carry_the_profile_only_when_set() -> None:
    from deploy.bake import BakeResult

    fields = {
        "jwks": None,
        "jwks_json": "{}",
        "meta": {"issuer": ORIGIN},
        "metadata": None,
        "size": 0,
        "elapsed": 0.0,
    }
    plain_result = BakeResult(**fields)  # type: ignore[arg-type]
    assert list(plain_result.values) == [JWKS_VAR, JWKS_META_VAR]
    with_profile = BakeResult(**fields, profile="okta")  # type: ignore[arg-type]
    assert with_profile.values[PROFILE_VAR] == "okta"
    assert json.loads(with_profile.meta_json) == {"issuer": ORIGIN}
