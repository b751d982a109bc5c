"""Session, User, Organization, Project: built from claims only, immutable, Starlette-ready."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, UnauthenticatedUser, requires
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from verifier.config import ClaimsSettings
from verifier.errors import ClaimsInvalid
from verifier.session import ROLE_RANK, Organization, Project, Session, User, role_rank

EXP = 1_700_000_300


def access_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": "http://127.0.0.1:9000",
        "sub": "u1",
        "aud": "api",
        "exp": EXP,
        "sid": "s-secret-session",
        "scope": "openid read",
        "organizations": [
            {"id": "o1", "slug": "acme", "name": "Acme Corp", "role": "owner"},
        ],
        "projects": [{"id": "p-hidden", "slug": "site", "organizationId": "o1"}],
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


ID_CLAIMS = {
    "sub": "u1",
    "email": "ada@example.com",
    "email_verified": True,
    "name": "Ada Lovelace",
    "picture": "https://example.com/ada.png",
}


def make_session(**changes: Any) -> Session:
    return Session.from_claims(access_claims(**changes), ID_CLAIMS)


# -- immutability ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [("user", User(id="evil")), ("scopes", ["admin"]), ("expires_at", 0.0), ("anything", 1)],
)
def test_session_attributes_cannot_be_set(name: str, value: object) -> None:
    session = make_session()

    with pytest.raises(AttributeError):
        setattr(session, name, value)


def test_session_attributes_cannot_be_deleted() -> None:
    session = make_session()

    with pytest.raises(AttributeError):
        del session.user


def test_session_collections_are_read_only() -> None:
    session = make_session()

    assert isinstance(session.scopes, tuple)
    assert isinstance(session.organizations, tuple)
    assert isinstance(session.projects, tuple)
    with pytest.raises(TypeError):
        session.claims["sub"] = "evil"  # type: ignore[index]
    assert session.id_claims is not None
    with pytest.raises(TypeError):
        session.id_claims["email"] = "evil@example.com"  # type: ignore[index]


def test_session_claims_are_a_copy_of_the_input() -> None:
    claims = access_claims()
    session = Session.from_claims(claims)

    claims["sub"] = "evil"

    assert session.claims["sub"] == "u1"


@pytest.mark.parametrize(
    "value",
    [User(id="u1"), Organization(id="o1", slug="acme", name="Acme"), Project(id="p1")],
)
def test_user_organization_and_project_are_frozen(value: Any) -> None:
    # FrozenInstanceError (User) and NamedTuple's refusal are both AttributeErrors.
    with pytest.raises(AttributeError):
        value.id = "evil"


# -- Starlette's @requires -------------------------------------------------------------


class SessionFromHeader:
    """Sets scope["user"] / scope["auth"] from a Session chosen by a test header."""

    def __init__(self, app: ASGIApp, sessions: dict[str, Session]) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        session = self.sessions.get(headers.get(b"x-session", b"").decode())
        if session is None:
            scope["auth"], scope["user"] = AuthCredentials(), UnauthenticatedUser()
        else:
            scope["auth"], scope["user"] = session, session.user
        await self.app(scope, receive, send)


@requires("authenticated")
async def me(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.user.identity, "name": request.user.display_name})


@requires("read")
async def reports(request: Request) -> JSONResponse:
    return JSONResponse({"scopes": list(request.auth.scopes)})


@pytest.fixture
def client() -> TestClient:
    sessions = {
        "reader": make_session(scope="openid read"),
        "plain": make_session(scope="openid"),
    }
    app = Starlette(routes=[Route("/me", me), Route("/reports", reports)])
    return TestClient(SessionFromHeader(app, sessions))


def test_requires_authenticated_admits_a_session(client: TestClient) -> None:
    response = client.get("/me", headers={"x-session": "plain"})

    assert response.status_code == 200
    assert response.json() == {"id": "u1", "name": "Ada Lovelace"}


def test_requires_authenticated_refuses_an_anonymous_request(client: TestClient) -> None:
    assert client.get("/me").status_code == 403


def test_requires_a_token_scope_admits_only_sessions_with_it(client: TestClient) -> None:
    reader = client.get("/reports", headers={"x-session": "reader"})
    plain = client.get("/reports", headers={"x-session": "plain"})

    assert reader.status_code == 200
    assert reader.json() == {"scopes": ["authenticated", "openid", "read"]}
    assert plain.status_code == 403
    assert client.get("/reports").status_code == 403


def test_session_is_starlette_auth_credentials_and_user_a_base_user() -> None:
    session = make_session()

    assert isinstance(session, AuthCredentials)
    assert session.user.is_authenticated is True
    assert session.user.identity == "u1"


@pytest.mark.parametrize(
    ("user", "display"),
    [
        (User(id="u1", email="a@example.com", name="Ada"), "Ada"),
        (User(id="u1", email="a@example.com"), "a@example.com"),
        (User(id="u1"), "u1"),
    ],
)
def test_display_name_falls_back_from_name_to_email_to_id(user: User, display: str) -> None:
    assert user.display_name == display


# -- organizations and projects -------------------------------------------------------


@pytest.mark.parametrize(
    "organizations",
    [
        {"id": "o1"},
        "o1",
        [{"slug": "acme"}],
        [{"id": 1}],
        [{"id": ""}],
        [{"id": None}],
        ["o1"],
        [{"id": "o1", "slug": 1}],
        [{"id": "o1", "name": ["Acme"]}],
        [{"id": "o1", "role": {"admin": True}}],
        [{"id": "o1", "role": 3}],
    ],
)
def test_malformed_organizations_are_claims_invalid(organizations: Any) -> None:
    with pytest.raises(ClaimsInvalid) as info:
        make_session(organizations=organizations)

    assert info.value.code == "claims_invalid"


@pytest.mark.parametrize(
    "projects",
    [
        {"id": "p1"},
        "p1",
        [{"slug": "site"}],
        [{"id": 7}],
        [None],
        [{"id": "p1", "slug": False}],
        [{"id": "p1", "organizationId": 1}],
    ],
)
def test_malformed_projects_are_claims_invalid(projects: Any) -> None:
    with pytest.raises(ClaimsInvalid) as info:
        make_session(projects=projects)

    assert info.value.code == "claims_invalid"


def test_missing_slug_and_name_default_to_the_id_then_the_slug() -> None:
    session = make_session(
        organizations=[{"id": "o1"}, {"id": "o2", "slug": "globex"}],
        projects=[{"id": "p1"}],
    )

    assert session.organizations == (
        Organization(id="o1", slug="o1", name="o1", role=None),
        Organization(id="o2", slug="globex", name="globex", role=None),
    )
    assert session.projects == (Project(id="p1", slug=None, organization_id=None),)


def test_missing_organizations_and_projects_are_empty() -> None:
    session = Session.from_claims({"sub": "u1", "exp": EXP})

    assert session.organizations == ()
    assert session.projects == ()
    assert session.scopes == ("authenticated",)
    assert session.session_id is None


def test_organization_is_found_by_id_or_slug() -> None:
    session = make_session()

    assert session.organization("o1") is session.organizations[0]
    assert session.organization("acme") is session.organizations[0]
    assert session.organization("globex") is None


# -- profile ----------------------------------------------------------------------------


def test_profile_comes_from_the_id_token_before_the_access_token() -> None:
    session = Session.from_claims(access_claims(email="old@example.com"), ID_CLAIMS)

    assert session.user == User(
        id="u1",
        email="ada@example.com",
        name="Ada Lovelace",
        picture="https://example.com/ada.png",
        email_verified=True,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [("email", 1), ("name", ["Ada"]), ("picture", {}), ("email_verified", "true")],
)
def test_profile_claims_of_the_wrong_type_are_claims_invalid(name: str, value: Any) -> None:
    with pytest.raises(ClaimsInvalid):
        Session.from_claims(access_claims(), {**ID_CLAIMS, name: value})


# -- scopes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "scopes"),
    [
        ({"scope": "read write"}, ("read", "write")),
        ({"scope": "  read   write "}, ("read", "write")),
        ({"scopes": ["read", "write"]}, ("read", "write")),
        ({"scp": ["read", "write"]}, ("read", "write")),
        ({"scp": "read write"}, ("read", "write")),
        ({"scope": "read", "scopes": ["write"], "scp": ["admin"]}, ("read",)),
        ({"scopes": ["write"], "scp": ["admin"]}, ("write",)),
        ({}, ()),
    ],
)
def test_scopes_come_from_scope_scopes_or_scp(claims: dict[str, Any], scopes: tuple[str]) -> None:
    session = Session.from_claims({"sub": "u1", "exp": EXP, **claims})

    assert session.token_scopes == scopes
    assert session.scopes == ("authenticated", *scopes)
    assert session.scope_set == frozenset(scopes)


def test_scope_claim_name_is_configurable() -> None:
    claims = {"sub": "u1", "exp": EXP, "scope": "ignored", "https://example.com/scope": "read"}

    session = Session.from_claims(claims, names=ClaimsSettings(scope="https://example.com/scope"))

    assert session.token_scopes == ("read",)


@pytest.mark.parametrize("value", [1, ["read", 2], {"read": True}])
def test_scopes_of_the_wrong_type_are_claims_invalid(value: Any) -> None:
    with pytest.raises(ClaimsInvalid):
        Session.from_claims({"sub": "u1", "exp": EXP, "scope": value})


# -- roles ---------------------------------------------------------------------------------


def test_known_roles_rank_member_admin_owner() -> None:
    assert role_rank("member") < role_rank("admin") < role_rank("owner")
    assert dict(ROLE_RANK) == {"member": 1, "admin": 2, "owner": 3}


@pytest.mark.parametrize("role", ["billing", "Owner", "", None, "superuser"])
def test_unknown_roles_rank_below_member(role: str | None) -> None:
    assert role_rank(role) < role_rank("member")
    assert Organization(id="o1", slug="o1", name="o1", role=role).rank == 0


# -- repr and to_dict ---------------------------------------------------------------------


def test_repr_names_the_user_id_and_no_profile_or_membership_details() -> None:
    session = make_session()

    text = repr(session)

    assert "u1" in text
    secrets = [
        "ada@example.com",
        "Ada Lovelace",
        "ada.png",
        "s-secret-session",
        "Acme Corp",
        "owner",
        "p-hidden",
        "openid",
        "127.0.0.1",
    ]
    assert [value for value in secrets if value in text] == []


def test_repr_holds_no_claim_value_beyond_the_user_id() -> None:
    text = repr(make_session())

    assert "acme" not in text
    assert str(EXP) not in text


def test_to_dict_is_a_json_ready_view_without_raw_claims() -> None:
    assert make_session().to_dict() == {
        "user": {
            "id": "u1",
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "picture": "https://example.com/ada.png",
            "email_verified": True,
        },
        "organizations": [
            {
                "id": "o1",
                "slug": "acme",
                "name": "Acme Corp",
                "role": "owner",
                "roles": ["owner"],
                "permissions": [],
            }
        ],
        "active_organization": None,
        "projects": [{"id": "p-hidden", "slug": "site", "organization_id": "o1"}],
        "scopes": ["openid", "read"],
        "roles": [],
        "permissions": [],
        "session_id": "s-secret-session",
        "expires_at": float(EXP),
    }


def test_session_id_falls_back_to_the_id_token_sid() -> None:
    session = Session.from_claims(access_claims(sid=None), {**ID_CLAIMS, "sid": "s-id"})

    assert session.session_id == "s-id"
