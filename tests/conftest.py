"""Shared fixtures: the published vectors, a DevIssuer and a verifier over its keys."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.ci import skip_or_fail
from verifier.config import AppConfig
from verifier.jwks import parse_jwks
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

REPO = Path(__file__).resolve().parents[1]
#: ../shared/vectors beside the repository (CI clones the repo next to shared/).
VECTORS = Path(os.environ.get("JWTEDGE_VECTORS", REPO.parent / "shared" / "vectors"))
ISSUER = "http://127.0.0.1:9000"


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The published JOSE vectors; a clear skip only when the folder is absent."""
    if not VECTORS.is_dir():
        # Under CI, shared/ must be cloned beside the repository: a failure there.
        skip_or_fail(f"JOSE vectors not found at {VECTORS} (set JWTEDGE_VECTORS)")
    return VECTORS


@pytest.fixture(scope="session")
def issuer() -> DevIssuer:
    """One DevIssuer for the session (RSA key generation is slow). Do not rotate it."""
    return DevIssuer(issuer=ISSUER, audience="api", client_id="web")


def make_config(issuer: DevIssuer, *, keys: dict[str, Any] | None = None, **auth: Any) -> AppConfig:
    """An AppConfig whose bake is the issuer's current JWKS.

    The remote key layer is off (``keys.remote=never``) unless ``keys`` says
    otherwise: unit tests must not depend on an issuer being reachable.
    """
    values: dict[str, Any] = {
        "issuer": issuer.issuer,
        "audience": "api",
        "client_id": "web",
        "jwks": parse_jwks(issuer.jwks()),
    }
    values.update(auth)
    return AppConfig(auth=values, keys=keys or {"remote": "never"})


@pytest.fixture
def config_for() -> Callable[..., AppConfig]:
    return make_config


@pytest.fixture
def verifier(issuer: DevIssuer) -> TokenVerifier:
    return TokenVerifier.from_config(make_config(issuer))
