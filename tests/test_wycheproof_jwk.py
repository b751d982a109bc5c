"""Every case of Wycheproof's json_web_key_test.json, through parse_jwks + KeyStore + verify_jws.

A case is "valid" for us iff its key set is accepted and its JWS verifies.
How a group's keys reach our model:

- a group with a ``public`` key set: that set, as given;
- a group with only a ``private`` set of private asymmetric keys: its public
  part (private members removed);
- any other ``private`` set (public keys mixed with private ones, or ``oct``
  keys): as given, so the "refuse the whole set" rules apply;
- a set of HMAC ``oct`` keys only, which a JWKS never yields, is how an
  operator would configure ``auth.hs_secret``: the one HMAC key with the
  token's kid becomes the secret, bound to that key's ``alg``, and only when
  it is at least ``MIN_HS_SECRET_BYTES`` long (config's rule).

tc8 and tc9 also have an empty payload segment, which verify_jws refuses as
detached content; both are "invalid" vectors and their key sets are refused
first anyway.

Where our strict model deliberately disagrees with the vector, the case is in
``KNOWN_DIFFERENCES`` and the test asserts that it still disagrees.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VECTORS
from verifier.config import HMAC_ALGORITHMS, MIN_HS_SECRET_BYTES
from verifier.errors import JWKSInvalid, TokenError
from verifier.jwks import parse_jwks
from verifier.keys import KeyStore
from verifier.tokens import verify_jws

RELATIVE = Path("wycheproof/testvectors_v1/json_web_key_test.json")
ASYMMETRIC_PRIVATE = ("d", "p", "q", "dp", "dq", "qi", "oth")

KNOWN_DIFFERENCES: dict[int, str] = {
    7: "ROCA-vulnerable RSA key (CVE-2017-15361): parse_jwks does not fingerprint ROCA moduli, "
    "the 2048-bit key is accepted and its signature verifies",
    11: "47-byte HS384 key: our rule is config's flat >= 32 bytes for every HS* "
    "(DESIGN: hs_secret >= 32 bytes), not RFC 7518 §3.2's >= hash size (48 bytes)",
    12: "63-byte HS512 key: our rule is config's flat >= 32 bytes for every HS* "
    "(DESIGN: hs_secret >= 32 bytes), not RFC 7518 §3.2's >= hash size (64 bytes)",
}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _cases(data: dict[str, Any]) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
    return {test["tcId"]: (group, test) for group in data["testGroups"] for test in group["tests"]}


def _params() -> list[Any]:
    # Collection needs the ids before fixtures run; the test itself reads the
    # file again through the `vectors` fixture (which skips or fails clearly).
    path = VECTORS / RELATIVE
    if not path.is_file():
        return []
    return [
        pytest.param(tc_id, id=f"tc{tc_id}-{test['comment']}")
        for tc_id, (_, test) in sorted(_cases(_load(path)).items())
    ]


PARAMS = _params()


@pytest.fixture(scope="module")
def cases(vectors: Path) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
    return _cases(_load(vectors / RELATIVE))


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def public_key_set(group: dict[str, Any]) -> dict[str, Any]:
    """The key set a deployment would bake for this group (see the module docstring)."""
    if "public" in group:
        keyset: dict[str, Any] = group["public"]
        return keyset
    private: dict[str, Any] = group["private"]
    keys = private["keys"]
    if all(key.get("kty") != "oct" and "d" in key for key in keys):
        return {
            **private,
            "keys": [
                {name: value for name, value in key.items() if name not in ASYMMETRIC_PRIVATE}
                for key in keys
            ],
        }
    return private


def hs_store(keyset: dict[str, Any], kid: object) -> KeyStore | str:
    """A KeyStore configured with ``hs_secret``, or why the set cannot be one."""
    keys = keyset["keys"]
    if not keys or not all(k.get("kty") == "oct" and k.get("alg") in HMAC_ALGORITHMS for k in keys):
        return "not an HMAC-only set"
    matching = [key for key in keys if key.get("kid") == kid]
    if len(matching) != 1:
        return f"{len(matching)} HMAC keys have the token's kid"
    secret = _b64decode(matching[0]["k"])
    if len(secret) < MIN_HS_SECRET_BYTES:
        return f"hs_secret of {len(secret)} bytes is shorter than {MIN_HS_SECRET_BYTES}"
    return KeyStore(None, hs_secret=secret, algorithms=[matching[0]["alg"]])


def outcome(group: dict[str, Any], test: dict[str, Any]) -> tuple[str, str]:
    """("valid" | "invalid", why)."""
    keyset = public_key_set(group)
    token: str = test["jws"]
    header = json.loads(_b64decode(token.split(".")[0]))
    store: KeyStore
    try:
        store = KeyStore(parse_jwks(keyset))
    except JWKSInvalid as exc:
        hs = hs_store(keyset, header.get("kid"))
        if isinstance(hs, str):
            return "invalid", f"{exc.code}: {exc.message}; {hs}"
        store = hs
    try:
        verify_jws(token, store)
    except TokenError as exc:
        return "invalid", f"{exc.code}: {exc.message}"
    return "valid", "parsed and verified"


def test_every_case_of_the_vector_file_is_parametrized(
    cases: dict[int, tuple[dict[str, Any], dict[str, Any]]], vectors: Path
) -> None:
    data = _load(vectors / RELATIVE)

    assert data["schema"] == "json_web_key_schema_v1.json"
    assert len(cases) == data["numberOfTests"] == sum(len(g["tests"]) for g in data["testGroups"])
    assert sorted(param.values[0] for param in PARAMS) == sorted(cases)
    assert set(KNOWN_DIFFERENCES) <= set(cases)


def test_public_sets_given_by_groups_are_their_private_sets_without_private_members(
    cases: dict[int, tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    # Checks the derivation rule above against the groups that spell out both.
    for group, _ in cases.values():
        if "public" in group:
            derived = public_key_set({"private": group["private"]})
            assert derived == group["public"], group["comment"]


@pytest.mark.parametrize("tc_id", PARAMS)
def test_json_web_key_case(
    cases: dict[int, tuple[dict[str, Any], dict[str, Any]]], tc_id: int
) -> None:
    group, test = cases[tc_id]

    result, why = outcome(group, test)

    if tc_id in KNOWN_DIFFERENCES:
        assert result != test["result"], (
            f"tc{tc_id} now matches the vector ({result}); remove it from KNOWN_DIFFERENCES"
        )
    else:
        assert result == test["result"], f"tc{tc_id} {test['comment']} {test['flags']}: {why}"
