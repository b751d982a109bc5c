"""Per-profile session cost: uncached and cached, beside the default ``jwtedge`` profile.

Run ``python -m bench.profiles`` (``--quick`` for a smoke run). Each profile
verifies the same number of distinct RS256 tokens of its issuer's shape
(cache off), and one token again and again (cached hit); rounds are
interleaved and the ratios to ``jwtedge`` are medians of per-round ratios.
A cached hit should cost the same for every profile: it is a dict lookup
plus a clock read, whatever the profile did to build the session.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import (
    ORGANIZATIONS,
    PROJECTS,
    SCOPE,
    banner,
    interleaved,
    make_issuer,
    median,
    paired_ratio,
    table,
)
from verifier.config import AppConfig
from verifier.jwks import parse_jwks
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISS = "https://issuer.example"
ENTRA_TID = "9122040d-6c67-4c5b-b112-36a304b66dad"
ENTRA_ISS = f"https://login.microsoftonline.com/{ENTRA_TID}/v2.0"


def _payloads(index: int) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Per profile: (auth settings, claims) for a typical access token."""
    sub = f"user_{index:07d}"
    return {
        "jwtedge": (
            {"issuer": ISS, "audience": "api"},
            {
                "iss": ISS,
                "sub": sub,
                "aud": "api",
                "scope": SCOPE,
                "organizations": ORGANIZATIONS,
                "projects": PROJECTS,
            },
        ),
        "auth0": (
            {"issuer": ISS, "audience": "https://api.example/"},
            {
                "iss": ISS,
                "sub": f"auth0|{sub}",
                "aud": ["https://api.example/", f"{ISS}/userinfo"],
                "azp": "client",
                "scope": SCOPE,
                "org_id": "org_9ybsU1dN2dKfDkBi",
                "org_name": "acme",
                "permissions": ["read:reports", "write:reports"],
            },
        ),
        "keycloak": (
            {"issuer": ISS, "audience": "api", "client_id": "web"},
            {
                "iss": ISS,
                "sub": sub,
                "aud": ["api", "account"],
                "typ": "Bearer",
                "azp": "web",
                "scope": "openid organization profile email",
                "realm_access": {"roles": ["default-roles", "offline_access"]},
                "resource_access": {"web": {"roles": ["editor"]}},
                "groups": ["/engineering"],
                "organization": {"acme": {"id": "o-1"}, "globex": {"id": "o-2"}},
            },
        ),
        "okta": (
            {"issuer": ISS, "audience": "api://default"},
            {
                "iss": ISS,
                "sub": f"{sub}@example.com",
                "uid": sub,
                "cid": "0oa1",
                "aud": "api://default",
                "scp": ["openid", "profile", "email"],
                "groups": ["Everyone", "Admins"],
            },
        ),
        "entra": (
            {"issuer": ENTRA_ISS, "audience": "api"},
            {
                "iss": ENTRA_ISS,
                "sub": f"pairwise-{sub}",
                "oid": sub,
                "tid": ENTRA_TID,
                "aud": "api",
                "azp": "client",
                "scp": "access_as_user",
                "roles": ["Reports.Reader"],
                "ver": "2.0",
            },
        ),
        "cognito": (
            {"issuer": ISS, "audience": "client"},
            {
                "iss": ISS,
                "sub": sub,
                "client_id": "client",
                "token_use": "access",
                "scope": "openid email",
                "cognito:groups": ["admin"],
            },
        ),
        "clerk": (
            {"issuer": ISS, "audience": "https://app.example"},
            {
                "iss": ISS,
                "sub": sub,
                "azp": "https://app.example",
                "sid": f"sess_{index}",
                "v": 2,
                "fea": "o:billing,o:impersonation,o:magic_links,o:posts",
                "o": {
                    "id": "org_2vf9pbXnvF3rRRs5qj8NtGCJkC7",
                    "slg": "acme",
                    "rol": "admin",
                    "per": "create,delete,manage,read",
                    "fpm": "12,12,9,14",
                },
            },
        ),
        "workos": (
            {"issuer": ISS, "audience_claim": "none"},
            {
                "iss": ISS,
                "sub": sub,
                "sid": f"session_{index}",
                "org_id": "org_01HRDMC6CM357W30QMHMQ96Q0S",
                "role": "admin",
                "roles": ["admin"],
                "permissions": ["posts:read", "posts:write"],
            },
        ),
        "zitadel": (
            {"issuer": ISS, "audience": "284719360215432711"},
            {
                "iss": ISS,
                "sub": sub,
                "aud": ["284719360215432711", "284719360282476807@acme"],
                "urn:zitadel:iam:org:project:roles": {
                    "admin": {"284719184741588103": "acme.zitadel.cloud"},
                    "user": {"284719184741588103": "acme.zitadel.cloud", "2847191": "caos.ch"},
                },
            },
        ),
        "kinde": (
            {"issuer": ISS, "audience": "https://api.example"},
            {
                "iss": ISS,
                "sub": f"kp_{sub}",
                "aud": ["https://api.example"],
                "org_code": "org_e5f28e1676d",
                "org_name": "Acme",
                "roles": [{"id": "1", "key": "admin", "name": "Admin"}],
                "permissions": ["read:todos", "create:todos"],
                "scp": ["openid", "profile", "email", "offline"],
            },
        ),
        "supabase": (
            {"issuer": ISS, "audience": "authenticated"},
            {
                "iss": ISS,
                "sub": sub,
                "aud": "authenticated",
                "role": "authenticated",
                "session_id": f"session-{index}",
                "email": "ada@example.com",
                "user_role": "admin",
            },
        ),
        "firebase": (
            {"issuer": ISS, "audience": "acme-prod"},
            {
                "iss": ISS,
                "sub": sub,
                "aud": "acme-prod",
                "user_id": sub,
                "email": "ada@example.com",
                "email_verified": True,
                "firebase": {"sign_in_provider": "password", "tenant": "tenant-2-p9gxy"},
            },
        ),
        "stytch": (
            {"issuer": ISS, "audience": "project-test-1"},
            {
                "iss": ISS,
                "sub": sub,
                "aud": ["project-test-1"],
                "https://stytch.com/organization": {"organization_id": "org-1", "slug": "acme"},
                "https://stytch.com/session": {
                    "id": f"member-session-{index}",
                    "roles": ["stytch_member", "stytch_admin"],
                },
            },
        ),
        "propelauth": (
            {"issuer": ISS, "audience_claim": "none"},
            {
                "iss": ISS,
                "sub": sub,
                "user_id": sub,
                "email": "ada@example.com",
                "org_id_to_org_member_info": {
                    "o-1": {
                        "org_id": "o-1",
                        "org_name": "Acme",
                        "url_safe_org_name": "acme",
                        "user_role": "Owner",
                        "inherited_user_roles_plus_current_role": ["Owner", "Admin", "Member"],
                        "additional_roles": [],
                        "user_permissions": ["propelauth::can_invite"],
                    }
                },
            },
        ),
        "descope": (
            {"issuer": ISS, "audience": "P2abc"},
            {
                "iss": ISS,
                "sub": sub,
                "aud": ["P2abc"],
                "drn": "DS",
                "tenants": {"T1": {"roles": ["Tenant Admin"], "permissions": ["User Admin"]}},
                "dct": "T1",
                "roles": ["Support"],
            },
        ),
        "logto": (
            {"issuer": ISS, "audience": "https://api.example"},
            {
                "iss": ISS,
                "sub": sub,
                "aud": "https://api.example",
                "organization_id": "wzbf0c5mt8ms",
                "scope": "read:products write:products",
            },
        ),
    }


def _token(issuer: DevIssuer, claims: dict[str, Any]) -> str:
    kid = issuer.kids("RS256")[-1]
    now = int(issuer.clock())
    dated = {**claims, "iat": now, "exp": now + 3600}
    return issuer.sign(dated, {"alg": "RS256", "kid": kid, "typ": "JWT"}, kid=kid, alg="RS256")


def _verifier(issuer: DevIssuer, profile: str, auth: dict[str, Any], cache: int) -> TokenVerifier:
    config = AppConfig(
        _env_file=None,
        auth={**auth, "jwks": parse_jwks(issuer.jwks())},
        claims={"profile": profile},
        keys={"remote": "never"},
        cache={"size": cache},
    )
    return TokenVerifier.from_config(config)


def run(n: int, rounds: int) -> dict[str, list[float]]:
    issuer = make_issuer()
    per_token = [_payloads(index) for index in range(n)]
    cases: dict[str, tuple[Callable[[Any], object], Sequence[Any]]] = {}
    for profile, (auth, _) in per_token[0].items():
        tokens = [_token(issuer, payloads[profile][1]) for payloads in per_token]
        uncached = _verifier(issuer, profile, auth, 0)
        cached = _verifier(issuer, profile, auth, 10_000)
        cached.session(tokens[0])
        cases[f"{profile} uncached"] = (uncached.session, tokens)
        cases[f"{profile} cached"] = (cached.session, [tokens[0]] * max(n * 10, 100))
    return interleaved(cases, rounds=rounds)


def report(samples: dict[str, list[float]], n: int, rounds: int) -> None:
    banner("session() per profile: µs per token (median of rounds)")
    print(f"{n} distinct RS256 tokens per profile per round, {rounds} rounds interleaved.")
    profiles = [name.removesuffix(" uncached") for name in samples if name.endswith(" uncached")]
    rows = []
    for profile in profiles:
        uncached, cached = samples[f"{profile} uncached"], samples[f"{profile} cached"]
        rows.append(
            [
                profile,
                median(uncached),
                paired_ratio(uncached, samples["jwtedge uncached"]),
                median(cached),
                paired_ratio(cached, samples["jwtedge cached"]),
            ]
        )
    print(
        table(
            ["profile", "uncached µs", "uncached / jwtedge", "cached hit µs", "cached / jwtedge"],
            rows,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100, help="distinct tokens per profile (100)")
    parser.add_argument("--rounds", type=int, default=11, help="timed rounds (11)")
    parser.add_argument("--quick", action="store_true", help="tiny run: --n 10 --rounds 2")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.rounds = 10, 2
    warnings.simplefilter("ignore")
    report(run(args.n, args.rounds), args.n, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
