"""Happy paths of TokenVerifier: each algorithm, rotation, sessions, claim names."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ISSUER, make_config
from verifier.config import AppConfig
from verifier.errors import VerifierError
from verifier.jwks import parse_jwks
from verifier.testing import KEY_ALGORITHMS, DevIssuer
from verifier.tokens import TokenVerifier

FIXED = 1_700_000_000

ORGS = [
    {"id": "o1", "slug": "acme", "name": "Acme Corp", "role": "owner"},
    {"id": "o2", "slug": "globex", "name": "Globex", "role": "member"},
]
PROJECTS = [
    {"id": "p1", "slug": "site", "organizationId": "o1"},
    {"id": "p2", "slug": "api", "organizationId": "o2"},
]


def verifier(issuer: DevIssuer, *, now: float = FIXED, **auth: Any) -> TokenVerifier:
    return TokenVerifier.from_config(make_config(issuer, **auth), now=lambda: now)


def refused(call: Any, *args: Any, **kwargs: Any) -> VerifierError:
    with pytest.raises(VerifierError) as info:
        call(*args, **kwargs)
    return info.value


@pytest.fixture(scope="module")
def every_alg() -> DevIssuer:
    """A DevIssuer with one key for each algorithm it can create."""
    issuer = DevIssuer(issuer=ISSUER, audience="api", client_id="web")
    for alg in KEY_ALGORITHMS:
        if not issuer.kids(alg):
            issuer.rotate(alg)
    return issuer


@pytest.mark.parametrize("alg", ["RS256", "ES256", "Ed25519"])
def test_access_token_of_each_initial_key_verifies(issuer: DevIssuer, alg: str) -> None:
    token = issuer.access_token("u1", alg=alg, iat=FIXED)

    verified = verifier(issuer).verify_access(token)

    assert verified["sub"] == "u1"
    assert verified["iss"] == ISSUER
    assert verified["aud"] == "api"


def test_ed25519_key_verifies_a_token_that_says_eddsa(issuer: DevIssuer) -> None:
    token = issuer.access_token("u1", alg="EdDSA", iat=FIXED)

    assert verifier(issuer).verify_access(token)["sub"] == "u1"


@pytest.mark.parametrize("alg", KEY_ALGORITHMS)
def test_every_supported_algorithm_verifies(every_alg: DevIssuer, alg: str) -> None:
    token = every_alg.access_token("u1", kid=every_alg.kids(alg)[-1], alg=alg, iat=FIXED)

    assert verifier(every_alg).verify_access(token)["sub"] == "u1"


@pytest.mark.parametrize(("key_alg", "token_alg"), [("EdDSA", "Ed25519"), ("Ed25519", "EdDSA")])
def test_eddsa_and_ed25519_name_one_algorithm(
    every_alg: DevIssuer, key_alg: str, token_alg: str
) -> None:
    kid = every_alg.kids(key_alg)[-1]
    token = every_alg.access_token("u1", kid=kid, alg=token_alg, iat=FIXED)

    assert verifier(every_alg).verify_access(token)["sub"] == "u1"


def test_verify_access_returns_every_claim(issuer: DevIssuer) -> None:
    token = issuer.access_token(
        "u1", organizations=ORGS, projects=PROJECTS, sid="s1", iat=FIXED, extra={"custom": [1]}
    )

    verified = verifier(issuer).verify_access(token)

    assert verified["organizations"] == ORGS
    assert verified["projects"] == PROJECTS
    assert verified["sid"] == "s1"
    assert verified["custom"] == [1]
    assert verified["exp"] == FIXED + 300


def test_wall_clock_verifier_accepts_a_fresh_token(issuer: DevIssuer) -> None:
    verified = TokenVerifier.from_config(make_config(issuer)).verify_access(
        issuer.access_token("u1", ttl=300)
    )

    assert verified["sub"] == "u1"


def test_token_from_a_rotated_key_verifies_once_the_config_is_rebuilt() -> None:
    rotating = DevIssuer(issuer=ISSUER, audience="api", client_id="web")
    old_token = rotating.access_token("u1", iat=FIXED)
    before = verifier(rotating)

    new_kid = rotating.rotate()
    new_token = rotating.access_token("u1", iat=FIXED)
    after = verifier(rotating)

    assert rotating.kid == new_kid
    assert refused(before.verify_access, new_token).code == "key_not_found"
    assert after.verify_access(new_token)["sub"] == "u1"
    # The old key stays published, so tokens signed before the rotation still verify.
    assert after.verify_access(old_token)["sub"] == "u1"


def test_session_from_a_realistic_pair(issuer: DevIssuer) -> None:
    access = issuer.access_token(
        "u1",
        organizations=ORGS,
        projects=PROJECTS,
        scope="openid profile read:projects",
        sid="s1",
        iat=FIXED,
    )
    id_token = issuer.id_token(
        "u1", email="ada@example.com", name="Ada Lovelace", sid="s1", iat=FIXED
    )

    session = verifier(issuer).session(access, id_token)

    assert session.user.id == "u1"
    assert session.user.email == "ada@example.com"
    assert session.user.name == "Ada Lovelace"
    assert session.user.email_verified is True
    assert session.user.is_authenticated
    assert [(o.id, o.slug, o.name, o.role) for o in session.organizations] == [
        ("o1", "acme", "Acme Corp", "owner"),
        ("o2", "globex", "Globex", "member"),
    ]
    assert [(p.id, p.slug, p.organization_id) for p in session.projects] == [
        ("p1", "site", "o1"),
        ("p2", "api", "o2"),
    ]
    assert session.scopes == ("authenticated", "openid", "profile", "read:projects")
    assert session.session_id == "s1"
    assert session.expires_at == FIXED + 300
    assert session.claims["sub"] == "u1"
    assert session.id_claims is not None
    assert session.id_claims["email"] == "ada@example.com"


def test_session_without_an_id_token_uses_the_access_token_alone(issuer: DevIssuer) -> None:
    access = issuer.access_token("u1", iat=FIXED, extra={"email": "u1@example.com"})

    session = verifier(issuer).session(access)

    assert session.user.email == "u1@example.com"
    assert session.user.name is None
    assert session.user.email_verified is False
    assert session.id_claims is None


def test_expired_id_token_still_makes_a_session(issuer: DevIssuer) -> None:
    # The ID token proves the login; the access token carries the session.
    access = issuer.access_token("u1", iat=FIXED)
    id_token = issuer.id_token("u1", iat=FIXED - 7200, ttl=300)

    assert verifier(issuer).session(access, id_token).user.name == "Ada Lovelace"


def test_check_expiry_false_accepts_an_expired_token(issuer: DevIssuer) -> None:
    expired = issuer.access_token("u1", iat=FIXED - 3600, ttl=300)
    tv = verifier(issuer)

    assert refused(tv.verify_access, expired).code == "token_expired"
    assert tv.verify_access(expired, check_expiry=False)["sub"] == "u1"


@pytest.mark.parametrize(
    ("mint", "code"),
    [
        ({"audience": "other"}, "audience_mismatch"),
        ({"extra": {"iss": ISSUER + "/"}}, "issuer_mismatch"),
        ({"extra": {"nbf": FIXED + 3600}}, "token_not_yet_valid"),
        ({"extra": {"exp": "soon"}}, "claims_invalid"),
        ({"extra": {"nonce": "n"}}, "token_type_invalid"),
        ({"alg": "PS256"}, "algorithm_not_allowed"),
    ],
    ids=["aud", "iss", "nbf", "exp-type", "id-token", "alg"],
)
def test_check_expiry_false_still_checks_everything_else(
    issuer: DevIssuer, mint: dict[str, Any], code: str
) -> None:
    # The RSA key signing PS256 under its own kid: the key is bound to RS256.
    kid = issuer.kids("RS256")[-1] if "alg" in mint else None
    token = issuer.access_token("u1", iat=FIXED - 3600, ttl=300, kid=kid, **mint)

    err = refused(verifier(issuer).verify_access, token, check_expiry=False)

    assert err.code == code


def test_check_expiry_false_still_checks_the_signature(issuer: DevIssuer) -> None:
    head, _, sig = issuer.access_token("u1", iat=FIXED - 3600, ttl=300).split(".")
    _, body, _ = issuer.access_token("admin", iat=FIXED - 3600, ttl=300).split(".")

    err = refused(verifier(issuer).verify_access, f"{head}.{body}.{sig}", check_expiry=False)

    assert err.code == "signature_invalid"


def namespaced_config(issuer: DevIssuer) -> AppConfig:
    return AppConfig(
        auth={
            "issuer": issuer.issuer,
            "audience": "api",
            "client_id": "web",
            "jwks": parse_jwks(issuer.jwks()),
        },
        claims={
            "organizations": "https://example.com/orgs",
            "projects": "https://example.com/projects",
            "scope": "https://example.com/scope",
        },
    )


def test_namespaced_claim_names_come_from_the_claims_section(issuer: DevIssuer) -> None:
    access = issuer.access_token(
        "u1",
        scope="ignored",
        iat=FIXED,
        extra={
            "https://example.com/orgs": ORGS[:1],
            "https://example.com/projects": PROJECTS[:1],
            "https://example.com/scope": "read write",
        },
    )
    tv = TokenVerifier.from_config(namespaced_config(issuer), now=lambda: FIXED)

    session = tv.session(access)

    assert [org.name for org in session.organizations] == ["Acme Corp"]
    assert [project.organization_id for project in session.projects] == ["o1"]
    assert session.scopes == ("authenticated", "read", "write")


def test_default_claim_names_are_ignored_when_namespaced_names_are_configured(
    issuer: DevIssuer,
) -> None:
    access = issuer.access_token("u1", organizations=ORGS, projects=PROJECTS, iat=FIXED)
    tv = TokenVerifier.from_config(namespaced_config(issuer), now=lambda: FIXED)

    session = tv.session(access)

    assert session.organizations == ()
    assert session.projects == ()
