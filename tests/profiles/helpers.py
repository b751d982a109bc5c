"""Shared helpers for the issuer profile tests: configs, a fixed clock, signing.

Every payload in these tests has the shape its issuer documents; only the
keys are the DevIssuer's (its ``sign`` puts any claims and header in a token).
"""

from __future__ import annotations

from typing import Any

import pytest

from verifier.config import AppConfig
from verifier.errors import VerifierError
from verifier.jwks import parse_jwks
from verifier.session import Session
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

#: The tests' clock: every documented payload is re-dated around it.
NOW = 1_750_000_000


def dated(claims: dict[str, Any], *, ttl: int = 3600) -> dict[str, Any]:
    """``claims`` with ``iat``/``exp`` (and ``nbf``/``auth_time`` when present) around NOW."""
    out = dict(claims)
    out["iat"] = NOW - 60
    out["exp"] = NOW + ttl
    for name in ("nbf", "auth_time"):
        if name in out:
            out[name] = NOW - 60
    return out


def sign(issuer: DevIssuer, claims: dict[str, Any], *, typ: str | None = "JWT") -> str:
    """A token over ``claims`` (re-dated) signed by the DevIssuer's RS256 key."""
    kid = issuer.kids("RS256")[-1]
    header: dict[str, Any] = {"alg": "RS256", "kid": kid}
    if typ is not None:
        header["typ"] = typ
    return issuer.sign(dated(claims), header, kid=kid, alg="RS256")


def config(
    issuer: DevIssuer,
    *,
    profile: str,
    iss: str,
    claims: dict[str, Any] | None = None,
    **auth: Any,
) -> AppConfig:
    """An AppConfig for ``profile`` whose bake is the DevIssuer's key set."""
    values: dict[str, Any] = {"issuer": iss, "jwks": parse_jwks(issuer.jwks()), **auth}
    return AppConfig(
        auth=values, claims={"profile": profile, **(claims or {})}, keys={"remote": "never"}
    )


def verifier(issuer: DevIssuer, **kwargs: Any) -> TokenVerifier:
    """A TokenVerifier over :func:`config` with the clock at NOW."""
    return TokenVerifier.from_config(config(issuer, **kwargs), now=lambda: NOW)


def refused(tv: TokenVerifier, access: str, id_token: str | None = None) -> VerifierError:
    """The error ``tv.session`` raises for the pair (fails the test when it accepts)."""
    with pytest.raises(VerifierError) as caught:
        tv.session(access, id_token)
    return caught.value


def session_dict(session: Session) -> dict[str, Any]:
    """``to_dict`` without ``expires_at`` (which follows NOW)."""
    view = session.to_dict()
    assert view.pop("expires_at") == float(NOW + 3600)
    return view
