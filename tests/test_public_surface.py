"""The public surface other code relies on (pinned like httpx's test_exported_members)."""

from __future__ import annotations

import importlib
import types

import pytest

import verifier

#: Every name ``verifier`` exports. Extend this when the package exports more.
EXPORTED = (
    "AppConfig",
    "JWTSessionMiddleware",
    "KeyStore",
    "Organization",
    "Project",
    "Session",
    "TokenVerifier",
    "User",
    "VerifierError",
    "get_session",
)


def test_all_is_exactly_the_pinned_names_sorted() -> None:
    assert verifier.__all__ == sorted(EXPORTED)


def test_every_public_attribute_of_the_package_is_in_all() -> None:
    public = {
        name
        for name, value in vars(verifier).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }

    assert public == set(verifier.__all__)


@pytest.mark.parametrize("name", EXPORTED)
def test_each_exported_name_is_importable_from_the_package(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from verifier import {name}", namespace)  # noqa: S102 - a fixed name from EXPORTED

    assert namespace[name] is getattr(verifier, name)
    assert getattr(namespace[name], "__module__", "").startswith("verifier.")


def test_dev_issuer_is_importable_from_verifier_testing() -> None:
    from verifier.testing import DevIssuer

    assert importlib.import_module("verifier.testing").DevIssuer is DevIssuer


def test_verifier_error_is_the_base_of_every_error_code() -> None:
    from verifier.errors import ERROR_CODES

    assert all(issubclass(cls, verifier.VerifierError) for cls in ERROR_CODES.values())
