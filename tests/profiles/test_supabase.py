"""The ``supabase`` profile against Supabase Auth's documented JWT fields.

The user token follows https://supabase.com/docs/guides/auth/jwt-fields (``aud``
and ``role`` ``authenticated``, ``session_id``, ``aal``, ``amr``, the metadata
objects, ``is_anonymous``); ``user_role`` is the claim of Supabase's RBAC guide
(a custom access token hook). The ``anon`` and ``service_role`` payloads are
the project API keys' (``iss`` ``supabase``, ``ref``, ``role``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.profiles.helpers import refused, session_dict, sign, verifier
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

REF = "abcdefghijklmnopqrst"
ISS = f"https://{REF}.supabase.co/auth/v1"
USER = "8ccaa7af-909f-44e7-84cb-67cdccb56be6"
SESSION = "1f4e3c2b-6a5d-4e7f-8a9b-0c1d2e3f4a5b"

ACCESS = {
    "aal": "aal1",
    "amr": [{"method": "password", "timestamp": 1714752436}],
    "app_metadata": {"provider": "email", "providers": ["email"]},
    "aud": "authenticated",
    "email": "ada@example.com",
    "iss": ISS,
    "is_anonymous": False,
    "phone": "",
    "role": "authenticated",
    "session_id": SESSION,
    "sub": USER,
    "user_metadata": {"email": "ada@example.com", "email_verified": True},
}
#: The project's API keys, as Supabase issues them (no aud, iss "supabase").
ANON_KEY = {"iss": "supabase", "ref": REF, "role": "anon"}
SERVICE_KEY = {"iss": "supabase", "ref": REF, "role": "service_role"}


def supabase(issuer: DevIssuer) -> TokenVerifier:
    return verifier(issuer, profile="supabase", iss=ISS, audience="authenticated")


def test_a_users_token_gives_the_session_with_supabases_session_id(issuer: DevIssuer) -> None:
    session = supabase(issuer).session(sign(issuer, ACCESS))

    assert session_dict(session) == {
        "user": {
            "id": USER,
            "email": "ada@example.com",
            "name": None,
            "picture": None,
            "email_verified": False,
        },
        "organizations": [],
        "active_organization": None,
        "projects": [],
        "scopes": [],
        "roles": [],
        "permissions": [],
        "session_id": SESSION,
    }


def test_user_role_from_the_rbac_hook_is_the_sessions_role(issuer: DevIssuer) -> None:
    session = supabase(issuer).session(sign(issuer, {**ACCESS, "user_role": "moderator"}))

    assert session.roles == ("moderator",)


def test_an_anonymous_sign_in_is_a_user(issuer: DevIssuer) -> None:
    claims = {**ACCESS, "is_anonymous": True, "email": "", "amr": [{"method": "anonymous"}]}

    assert supabase(issuer).session(sign(issuer, claims)).user.id == USER


@pytest.mark.parametrize("key", [ANON_KEY, SERVICE_KEY], ids=["anon", "service_role"])
def test_the_projects_api_keys_are_refused(issuer: DevIssuer, key: dict[str, Any]) -> None:
    # As issued: another issuer, and no audience.
    assert refused(supabase(issuer), sign(issuer, key)).code == "issuer_mismatch"


@pytest.mark.parametrize("role", ["anon", "service_role"])
def test_an_anon_or_service_role_token_is_refused_even_with_the_right_issuer_and_aud(
    issuer: DevIssuer, role: str
) -> None:
    error = refused(supabase(issuer), sign(issuer, {**ACCESS, "role": role}))

    assert error.code == "token_type_invalid"
    assert f"Supabase {role} token" in error.message


@pytest.mark.parametrize("role", [None, "postgres", ["authenticated"]])
def test_any_role_but_authenticated_is_refused(issuer: DevIssuer, role: Any) -> None:
    claims = {k: v for k, v in ACCESS.items() if k != "role"}
    if role is not None:
        claims["role"] = role

    assert refused(supabase(issuer), sign(issuer, claims)).code == "token_type_invalid"


def test_the_issuer_is_matched_exactly(issuer: DevIssuer) -> None:
    for iss in (f"https://{REF}.supabase.co/auth/v1/", f"https://{REF}.supabase.co"):
        assert refused(supabase(issuer), sign(issuer, {**ACCESS, "iss": iss})).code == (
            "issuer_mismatch"
        )


@pytest.mark.parametrize("aud", ["authenticated", ["authenticated"]])
def test_the_authenticated_audience_is_accepted(issuer: DevIssuer, aud: Any) -> None:
    assert supabase(issuer).session(sign(issuer, {**ACCESS, "aud": aud})).user.id == USER


@pytest.mark.parametrize("aud", ["anon", "service_role", None])
def test_any_other_or_no_audience_is_audience_mismatch(issuer: DevIssuer, aud: Any) -> None:
    claims = {k: v for k, v in ACCESS.items() if k != "aud"}
    if aud is not None:
        claims["aud"] = aud

    assert refused(supabase(issuer), sign(issuer, claims)).code == "audience_mismatch"


@pytest.mark.parametrize(("name", "value"), [("user_role", ["admin"]), ("session_id", 7)])
def test_a_claim_of_the_wrong_type_is_claims_invalid(
    issuer: DevIssuer, name: str, value: Any
) -> None:
    error = refused(supabase(issuer), sign(issuer, {**ACCESS, name: value}))

    assert error.code == "claims_invalid"
    assert name in error.message
