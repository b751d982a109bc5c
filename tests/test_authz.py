"""Authorization units: organization context, project access, roles, scopes, statuses."""

from __future__ import annotations

import subprocess
import sys
import warnings
from typing import Any

import pytest

from verifier.authz import (
    ORG_REQUIRED_FORWARD_AUTH_STATUS,
    acheck_project,
    check_project,
    error_body,
    require_role,
    require_scopes,
    requires_org,
    requires_scopes,
    resolve_org,
    status_for,
)
from verifier.errors import (
    AuthzError,
    CSRFRejected,
    KeysStale,
    OrgForbidden,
    OrgMembershipRequired,
    OrgRequired,
    ProjectForbidden,
    RoleInsufficient,
    ScopeInsufficient,
    TokenExpired,
    TokenMissing,
)
from verifier.session import Organization, Session

ACME = {"id": "org-a", "slug": "acme", "name": "Acme", "role": "admin"}
GLOBEX = {"id": "org-b", "slug": "globex", "name": "Globex", "role": "member"}
INITECH = {"id": "org-c", "slug": "initech", "name": "Initech", "role": "owner"}
ACME_PROJECT = {"id": "p-a", "slug": "rocket", "organizationId": "org-a"}


def session(
    *orgs: dict[str, Any],
    projects: list[dict[str, Any]] | None = None,
    scope: str = "openid profile",
    **claims: Any,
) -> Session:
    return Session.from_claims(
        {
            "sub": "u1",
            "exp": 2_000_000_000,
            "organizations": list(orgs),
            "projects": projects or [],
            "scope": scope,
            **claims,
        }
    )


def org(role: str | None) -> Organization:
    return Organization(id="org-x", slug="x", name="X", role=role)


# -- organization context --------------------------------------------------------


def test_explicit_org_id_selects_that_membership() -> None:
    assert resolve_org(session(ACME, GLOBEX), explicit_id="org-b").slug == "globex"


def test_explicit_org_slug_selects_that_membership() -> None:
    assert resolve_org(session(ACME, GLOBEX), explicit_slug="acme").id == "org-a"


def test_explicit_reference_matches_an_id_or_a_slug() -> None:
    caller = session(ACME, GLOBEX)

    assert resolve_org(caller, explicit="org-b").slug == "globex"
    assert resolve_org(caller, explicit="acme").id == "org-a"


def test_explicit_org_wins_over_the_active_org_claim() -> None:
    caller = session(ACME, GLOBEX, active_org="org-a")

    assert resolve_org(caller, explicit_slug="globex").id == "org-b"


@pytest.mark.parametrize(
    "selector",
    [
        {"explicit_id": "org-z"},
        {"explicit_slug": "umbrella"},
        {"explicit": "umbrella"},
        # an id is not a slug and a slug is not an id
        {"explicit_id": "acme"},
        {"explicit_slug": "org-a"},
    ],
)
def test_explicit_org_the_caller_is_not_a_member_of_is_org_forbidden(
    selector: dict[str, str],
) -> None:
    with pytest.raises(OrgForbidden) as caught:
        resolve_org(session(ACME, GLOBEX, active_org="org-a"), **selector)

    assert caught.value.code == "org_forbidden"
    assert caught.value.status == 403


def test_explicit_non_member_org_is_refused_even_with_a_single_membership() -> None:
    with pytest.raises(OrgForbidden):
        resolve_org(session(ACME), explicit_slug="globex")


def test_explicit_selectors_naming_different_orgs_are_org_required() -> None:
    with pytest.raises(OrgRequired) as caught:
        resolve_org(session(ACME, GLOBEX), explicit_id="org-a", explicit_slug="globex")

    assert caught.value.status == 400


def test_explicit_selectors_naming_the_same_org_agree() -> None:
    chosen = resolve_org(session(ACME, GLOBEX), explicit_id="org-b", explicit_slug="globex")

    assert chosen.slug == "globex"


def test_empty_explicit_selector_counts_as_absent() -> None:
    assert resolve_org(session(ACME), explicit_id="", explicit_slug="  ").slug == "acme"


def test_active_org_claim_by_id_selects_that_membership() -> None:
    assert resolve_org(session(ACME, GLOBEX, active_org="org-b")).slug == "globex"


def test_active_org_claim_by_slug_selects_that_membership() -> None:
    assert resolve_org(session(ACME, GLOBEX, active_org="acme")).id == "org-a"


def test_active_org_claim_name_is_configurable() -> None:
    claims = {"sub": "u1", "exp": 2_000_000_000, "organizations": [ACME, GLOBEX]}
    caller = Session.from_claims({**claims, "https://example.com/active": "globex"})

    assert resolve_org(caller, active_claim="https://example.com/active").id == "org-b"


def test_active_org_naming_a_non_membership_is_ignored_and_the_single_org_is_used() -> None:
    assert resolve_org(session(ACME, active_org="org-z")).slug == "acme"


def test_active_org_naming_a_non_membership_is_ignored_and_several_orgs_need_a_choice() -> None:
    with pytest.raises(OrgRequired):
        resolve_org(session(ACME, GLOBEX, active_org="umbrella"))


def test_active_org_that_is_not_a_string_is_ignored() -> None:
    with pytest.raises(OrgRequired):
        resolve_org(session(ACME, GLOBEX, active_org={"id": "org-a"}))


def test_single_org_is_chosen_without_a_selector() -> None:
    assert resolve_org(session(GLOBEX)).id == "org-b"


def test_several_orgs_and_none_chosen_is_org_required_listing_the_slugs() -> None:
    with pytest.raises(OrgRequired) as caught:
        resolve_org(session(ACME, GLOBEX, INITECH))

    exc = caught.value
    assert exc.code == "org_required"
    assert exc.status == 400
    assert exc.context["organizations"] == ["acme", "globex", "initech"]
    assert "acme, globex, initech" in exc.message
    assert "acme, globex, initech" in exc.to_dict()["message"]


def test_no_organizations_is_org_membership_required() -> None:
    with pytest.raises(OrgMembershipRequired) as caught:
        resolve_org(session())

    assert caught.value.code == "org_membership_required"
    assert caught.value.status == 403


def test_no_organizations_with_an_explicit_selector_is_org_forbidden() -> None:
    with pytest.raises(OrgForbidden):
        resolve_org(session(), explicit_slug="acme")


# -- projects ---------------------------------------------------------------------


def test_project_listed_in_the_token_is_allowed_without_a_lookup() -> None:
    check_project(session(ACME, projects=[ACME_PROJECT]), "p-a")


def test_project_not_listed_and_no_lookup_is_forbidden() -> None:
    with pytest.raises(ProjectForbidden) as caught:
        check_project(session(ACME, projects=[ACME_PROJECT]), "p-other")

    assert caught.value.code == "project_forbidden"
    assert caught.value.status == 403


def test_project_the_lookup_puts_in_a_member_org_is_allowed() -> None:
    check_project(session(ACME, GLOBEX), "p-new", lookup={"p-new": "org-b"}.get)


def test_project_the_lookup_puts_in_a_non_member_org_is_forbidden() -> None:
    with pytest.raises(ProjectForbidden):
        check_project(session(ACME), "p-b", lookup={"p-b": "org-b"}.get)


def test_project_the_lookup_does_not_know_is_forbidden() -> None:
    with pytest.raises(ProjectForbidden):
        check_project(session(ACME), "p-missing", lookup=lambda _project_id: None)


def test_lookup_answer_is_matched_on_org_ids_not_slugs() -> None:
    with pytest.raises(ProjectForbidden):
        check_project(session(ACME), "p-x", lookup=lambda _project_id: "acme")


def test_member_of_org_a_naming_org_a_for_org_b_project_is_refused() -> None:
    caller = session(ACME, GLOBEX)
    seen: list[str] = []

    def lookup(project_id: str) -> str | None:
        seen.append(project_id)
        return "org-c"  # the app knows p-c belongs to Initech

    # The request selects Acme, which the caller is a member of ...
    assert resolve_org(caller, explicit_slug="acme").id == "org-a"
    # ... but that never decides whose project p-c is: only the lookup does.
    with pytest.raises(ProjectForbidden):
        check_project(caller, "p-c", lookup=lookup)
    assert seen == ["p-c"]


def test_lookup_is_not_called_for_a_project_the_token_lists() -> None:
    def lookup(_project_id: str) -> str | None:
        raise AssertionError("lookup must not run")

    check_project(session(ACME, projects=[ACME_PROJECT]), "p-a", lookup=lookup)


async def test_async_lookup_to_a_member_org_is_allowed() -> None:
    async def lookup(project_id: str) -> str | None:
        return {"p-new": "org-a"}.get(project_id)

    await acheck_project(session(ACME), "p-new", lookup=lookup)


async def test_async_lookup_to_a_non_member_org_is_forbidden() -> None:
    async def lookup(_project_id: str) -> str | None:
        return "org-b"

    with pytest.raises(ProjectForbidden):
        await acheck_project(session(ACME), "p-b", lookup=lookup)


async def test_async_check_accepts_a_sync_lookup() -> None:
    await acheck_project(session(ACME), "p-new", lookup={"p-new": "org-a"}.get)
    with pytest.raises(ProjectForbidden):
        await acheck_project(session(ACME), "p-b", lookup={"p-b": "org-b"}.get)


def test_sync_check_refuses_an_async_lookup_without_leaking_a_coroutine() -> None:
    async def lookup(_project_id: str) -> str | None:
        return "org-a"

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match="acheck_project"):
            check_project(session(ACME), "p-new", lookup=lookup)


# -- roles ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "required"),
    [
        ("member", "member"),
        ("admin", "member"),
        ("admin", "admin"),
        ("owner", "admin"),
        ("owner", "owner"),
    ],
)
def test_role_at_or_above_the_required_one_is_allowed(role: str, required: str) -> None:
    require_role(org(role), required)


@pytest.mark.parametrize(
    ("role", "required"),
    [("member", "admin"), ("member", "owner"), ("admin", "owner")],
)
def test_role_below_the_required_one_is_role_insufficient(role: str, required: str) -> None:
    with pytest.raises(RoleInsufficient) as caught:
        require_role(org(role), required)

    assert caught.value.code == "role_insufficient"
    assert caught.value.status == 403
    assert caught.value.context == {"required": required, "role": role}


@pytest.mark.parametrize("role", ["billing", "", None, "Owner"])
def test_unknown_or_missing_role_ranks_below_member(role: str | None) -> None:
    with pytest.raises(RoleInsufficient):
        require_role(org(role), "member")


def test_requiring_an_unknown_role_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown role 'superuser'"):
        require_role(org("owner"), "superuser")


@pytest.mark.parametrize("role", ["", "two words"])
def test_requires_org_with_a_malformed_role_fails_at_decoration_time(role: str) -> None:
    # The ranking (the issuer profile's) is known only at request time, where
    # an unranked role is a ValueError like require_role's above.
    with pytest.raises(ValueError, match="invalid role"):
        requires_org(role)


# -- scopes -----------------------------------------------------------------------


def test_session_with_every_required_scope_is_allowed() -> None:
    require_scopes(session(scope="read:projects write:projects"), "read:projects", "write:projects")


def test_missing_scope_is_scope_insufficient_with_insufficient_scope_error() -> None:
    with pytest.raises(ScopeInsufficient) as caught:
        require_scopes(session(scope="read:projects"), "read:projects", "write:projects")

    exc = caught.value
    assert exc.code == "scope_insufficient"
    assert exc.error == "insufficient_scope"
    assert exc.status == 403
    assert exc.context["missing"] == ["write:projects"]
    assert exc.to_dict()["error"] == "insufficient_scope"


def test_scope_must_match_exactly() -> None:
    with pytest.raises(ScopeInsufficient):
        require_scopes(session(scope="read:projects:all"), "read:projects")


def test_scope_holding_whitespace_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid scope"):
        require_scopes(session(scope="a b"), "a b")


def test_requires_scopes_without_scopes_fails_at_decoration_time() -> None:
    with pytest.raises(ValueError, match="at least one scope"):
        requires_scopes()


def test_decorator_needs_a_request_or_websocket_argument() -> None:
    async def endpoint(conn: Any) -> None:
        return None

    with pytest.raises(TypeError, match='No "request" or "websocket" argument'):
        requires_scopes("read")(endpoint)


# -- statuses ---------------------------------------------------------------------


def test_org_required_is_400_for_apps() -> None:
    assert status_for(OrgRequired(), forward_auth=False) == 400


def test_org_required_is_403_on_the_forward_auth_endpoint() -> None:
    assert ORG_REQUIRED_FORWARD_AUTH_STATUS == 403
    assert status_for(OrgRequired(), forward_auth=True) == ORG_REQUIRED_FORWARD_AUTH_STATUS


@pytest.mark.parametrize(
    "exc",
    [OrgForbidden(), RoleInsufficient(), ScopeInsufficient(), TokenExpired(), CSRFRejected()],
)
@pytest.mark.parametrize("forward_auth", [True, False])
def test_401_and_403_keep_their_status_everywhere(exc: AuthzError, forward_auth: bool) -> None:
    assert status_for(exc, forward_auth=forward_auth) == exc.status


def test_server_errors_keep_their_status_on_the_forward_auth_endpoint() -> None:
    assert status_for(KeysStale(), forward_auth=True) == 503


def test_anonymous_body_says_invalid_token_and_token_missing() -> None:
    body = error_body(TokenMissing())

    assert body["error"] == "invalid_token"
    assert body["code"] == "token_missing"


def test_authz_body_is_the_error_dict() -> None:
    assert error_body(ProjectForbidden()) == ProjectForbidden().to_dict()


BLOCK_FASTAPI = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "fastapi" or name.startswith("fastapi."):
            raise ImportError("fastapi is not installed")

sys.meta_path.insert(0, Block())
import verifier.authz
assert "fastapi" not in sys.modules
"""


def test_authz_imports_without_fastapi_installed() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_FASTAPI], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
