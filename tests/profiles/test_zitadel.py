"""The ``zitadel`` profile against Zitadel's documented JWT access tokens.

Payloads follow https://zitadel.com/docs/apis/openidoauth/claims (the reserved
claims ``urn:zitadel:iam:org:project:roles`` and
``urn:zitadel:iam:org:project:{projectid}:roles``, both ``role -> {orgId:
orgDomain}``) and https://zitadel.com/docs/guides/integrate/retrieve-user-roles.
Zitadel ids are all digits: the project id is the audience.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.profiles.helpers import refused, session_dict, sign, verifier
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISS = "https://acme-x1y2z3.zitadel.cloud"
PROJECT = "284719360215432711"
CLIENT = "284719360282476807@acme"
USER = "284719263958679495"
ACME = "284719184741588103"
CAOS = "284719184741599104"
GENERIC = "urn:zitadel:iam:org:project:roles"
PER_PROJECT = f"urn:zitadel:iam:org:project:{PROJECT}:roles"

ACCESS = {
    "aud": [PROJECT, CLIENT],
    "client_id": CLIENT,
    "iss": ISS,
    "jti": "284720107145521159",
    "nbf": 0,
    "sub": USER,
    GENERIC: {
        "admin": {ACME: "acme.zitadel.cloud"},
        "user": {ACME: "acme.zitadel.cloud", CAOS: "caos.ch"},
    },
}


def zitadel(issuer: DevIssuer) -> TokenVerifier:
    return verifier(issuer, profile="zitadel", iss=ISS, audience=PROJECT)


def test_roles_are_inverted_into_organizations(issuer: DevIssuer) -> None:
    session = zitadel(issuer).session(sign(issuer, ACCESS))

    assert session_dict(session) == {
        "user": {
            "id": USER,
            "email": None,
            "name": None,
            "picture": None,
            "email_verified": False,
        },
        "organizations": [
            {
                "id": ACME,
                "slug": "acme.zitadel.cloud",
                "name": None,
                "role": "admin",
                "roles": ["admin", "user"],
                "permissions": [],
            },
            {
                "id": CAOS,
                "slug": "caos.ch",
                "name": None,
                "role": "user",
                "roles": ["user"],
                "permissions": [],
            },
        ],
        "active_organization": None,
        "projects": [],
        "scopes": [],
        "roles": ["admin", "user"],
        "permissions": [],
        "session_id": None,
    }


def test_the_per_project_roles_claim_alone_gives_the_same_organizations(
    issuer: DevIssuer,
) -> None:
    claims = {k: v for k, v in ACCESS.items() if k != GENERIC}
    claims[PER_PROJECT] = ACCESS[GENERIC]

    tv = zitadel(issuer)

    assert session_dict(tv.session(sign(issuer, claims))) == session_dict(
        tv.session(sign(issuer, ACCESS))
    )


def test_both_roles_claims_are_merged(issuer: DevIssuer) -> None:
    claims = {**ACCESS, PER_PROJECT: {"reviewer": {CAOS: "caos.ch"}, "admin": {ACME: "x"}}}

    session = zitadel(issuer).session(sign(issuer, claims))

    acme, caos = session.organizations
    assert acme.roles == ("admin", "user")
    assert acme.slug == "acme.zitadel.cloud"  # the first claim's domain stays
    assert caos.roles == ("user", "reviewer")
    assert session.roles == ("admin", "user", "reviewer")


def test_a_token_without_role_claims_has_no_organizations(issuer: DevIssuer) -> None:
    claims = {k: v for k, v in ACCESS.items() if k != GENERIC}

    session = zitadel(issuer).session(sign(issuer, claims))

    assert (session.organizations, session.roles) == ((), ())


def test_scope_is_read_when_present(issuer: DevIssuer) -> None:
    claims = {**ACCESS, "scope": "openid profile urn:zitadel:iam:org:project:id:zitadel:aud"}

    session = zitadel(issuer).session(sign(issuer, claims))

    assert session.token_scopes == (
        "openid",
        "profile",
        "urn:zitadel:iam:org:project:id:zitadel:aud",
    )


def test_an_all_digit_project_id_from_the_environment_stays_text(
    issuer: DevIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from verifier.config import AppConfig
    from verifier.jwks import parse_jwks

    monkeypatch.setenv("APP_CONFIG_AUTH__AUDIENCE", PROJECT)
    cfg = AppConfig(
        auth={"issuer": ISS, "jwks": parse_jwks(issuer.jwks())},
        claims={"profile": "zitadel"},
        keys={"remote": "never"},
    )

    assert cfg.auth.audiences == (PROJECT,)


# -- audience -----------------------------------------------------------------------------


@pytest.mark.parametrize("aud", [PROJECT, [CLIENT, PROJECT]])
def test_the_project_id_in_aud_is_accepted(issuer: DevIssuer, aud: Any) -> None:
    assert zitadel(issuer).session(sign(issuer, {**ACCESS, "aud": aud})).user.id == USER


@pytest.mark.parametrize("aud", [CLIENT, "284719360215432712", None])
def test_another_or_no_audience_is_audience_mismatch(issuer: DevIssuer, aud: Any) -> None:
    claims = {k: v for k, v in ACCESS.items() if k != "aud"}
    if aud is not None:
        claims["aud"] = aud

    assert refused(zitadel(issuer), sign(issuer, claims)).code == "audience_mismatch"


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        (GENERIC, ["admin"]),
        (GENERIC, {"admin": ["acme.zitadel.cloud"]}),
        (GENERIC, {"admin": {ACME: 7}}),
        (PER_PROJECT, "admin"),
    ],
)
def test_a_roles_claim_of_the_wrong_shape_is_claims_invalid(
    issuer: DevIssuer, claim: str, value: Any
) -> None:
    error = refused(zitadel(issuer), sign(issuer, {**ACCESS, claim: value}))

    assert error.code == "claims_invalid"
    assert claim in error.message
