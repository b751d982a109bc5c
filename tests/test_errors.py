"""The error tree (verifier/errors.py): stable codes, statuses, context, causes."""

from __future__ import annotations

import pytest

from verifier import errors
from verifier.errors import (
    ERROR_CODES,
    AuthzError,
    ConfigInvalid,
    CSRFRejected,
    JWKSError,
    JWKSInvalid,
    KeyNotFound,
    KeysStale,
    OrgRequired,
    ScopeInsufficient,
    SignatureInvalid,
    TokenError,
    TokenMalformed,
    VerifierError,
)

# DESIGN.md, "Errors": the documented codes, in the order the page lists them.
TOKEN_CODES = (
    "token_missing",
    "token_too_large",
    "token_malformed",
    "header_invalid",
    "algorithm_not_allowed",
    "token_type_invalid",
    "key_not_found",
    "signature_invalid",
    "token_expired",
    "token_not_yet_valid",
    "issued_in_future",
    "issuer_mismatch",
    "audience_mismatch",
    "claims_invalid",
    "id_token_mismatch",
    "keys_stale",
)
OTHER_CODES = (
    "jwks_invalid",
    "jwks_fetch_failed",
    "refresh_failed",
    "csrf_rejected",
    "config_invalid",
)
AUTHZ_CODES = (
    "org_forbidden",
    "org_required",
    "org_membership_required",
    "project_forbidden",
    "role_insufficient",
    "scope_insufficient",
)
DESIGN_CODES = TOKEN_CODES + OTHER_CODES + AUTHZ_CODES


def all_error_classes() -> list[type[VerifierError]]:
    classes: list[type[VerifierError]] = []
    pending: list[type[VerifierError]] = [VerifierError]
    while pending:
        cls = pending.pop()
        classes.append(cls)
        pending.extend(cls.__subclasses__())
    return classes


def test_design_list_has_no_duplicates() -> None:
    assert len(set(DESIGN_CODES)) == len(DESIGN_CODES) == 27


def test_every_code_in_the_tree_is_unique() -> None:
    codes = [cls.code for cls in all_error_classes()]

    assert len(codes) == len(set(codes))


def test_every_documented_code_is_in_error_codes() -> None:
    assert set(DESIGN_CODES) <= set(ERROR_CODES)


def test_error_codes_hold_no_undocumented_leaf_code() -> None:
    assert set(ERROR_CODES) == set(DESIGN_CODES)


def test_error_codes_map_each_code_to_its_class() -> None:
    for code, cls in ERROR_CODES.items():
        assert cls.code == code
        assert issubclass(cls, VerifierError)
        assert cls.__subclasses__() == []


def test_every_public_error_class_is_exported() -> None:
    exported = [getattr(errors, name) for name in errors.__all__]

    assert all(cls in exported for cls in all_error_classes())


@pytest.mark.parametrize("code", [c for c in TOKEN_CODES if c != "keys_stale"])
def test_token_codes_answer_401_invalid_token(code: str) -> None:
    cls = ERROR_CODES[code]

    assert issubclass(cls, TokenError)
    assert cls.status == 401
    expected = "invalid_request" if code == "token_missing" else "invalid_token"
    assert cls.error == expected


def test_keys_stale_answers_503_because_the_user_did_nothing_wrong() -> None:
    assert issubclass(KeysStale, TokenError)
    assert KeysStale.status == 503
    assert KeysStale().status == 503


def test_csrf_rejected_answers_403() -> None:
    assert CSRFRejected.status == 403


def test_org_required_answers_400() -> None:
    assert issubclass(OrgRequired, AuthzError)
    assert OrgRequired.status == 400


@pytest.mark.parametrize("code", [c for c in AUTHZ_CODES if c != "org_required"])
def test_other_authz_codes_answer_403(code: str) -> None:
    cls = ERROR_CODES[code]

    assert issubclass(cls, AuthzError)
    assert cls.status == 403


def test_scope_insufficient_uses_the_rfc6750_error() -> None:
    assert ScopeInsufficient.error == "insufficient_scope"
    assert ScopeInsufficient().to_dict()["error"] == "insufficient_scope"


def test_branches_group_their_codes() -> None:
    assert issubclass(JWKSInvalid, JWKSError)
    assert issubclass(ERROR_CODES["jwks_fetch_failed"], JWKSError)
    for code in ("refresh_failed", "csrf_rejected", "config_invalid"):
        assert not issubclass(ERROR_CODES[code], TokenError | AuthzError | JWKSError)


@pytest.mark.parametrize("code", DESIGN_CODES)
def test_every_error_has_a_default_message(code: str) -> None:
    exc = ERROR_CODES[code]()

    assert exc.message
    assert exc.message == type(exc).default_message
    assert exc.code == code


def test_context_becomes_attributes() -> None:
    exc = KeyNotFound(kid="k1", alg="RS256")

    # Context attributes are dynamic, hence the ignores.
    assert exc.kid == "k1"  # type: ignore[attr-defined]
    assert exc.alg == "RS256"  # type: ignore[attr-defined]
    assert exc.context == {"kid": "k1", "alg": "RS256"}


def test_context_of_config_invalid_carries_the_problems() -> None:
    exc = ConfigInvalid("invalid configuration", problems=["APP_CONFIG_AUTH__LEEWAY: bad"])

    assert exc.problems == ["APP_CONFIG_AUTH__LEEWAY: bad"]  # type: ignore[attr-defined]


def test_a_custom_message_replaces_the_default() -> None:
    exc = SignatureInvalid("the RS256 signature does not verify")

    assert exc.message == "the RS256 signature does not verify"


def _decode_header() -> None:
    try:
        int("not a number")
    except ValueError as exc:
        raise TokenMalformed("the header is not base64url") from exc


def test_raise_from_keeps_the_cause() -> None:
    with pytest.raises(TokenMalformed) as info:
        _decode_header()

    assert isinstance(info.value.__cause__, ValueError)
    assert "not a number" in str(info.value.__cause__)


def test_str_and_repr_hold_code_and_message_only() -> None:
    exc = KeyNotFound("no baked key has the token's kid", kid="kid-VALUE", token="eyJ.TOKEN.sig")

    assert str(exc) == "key_not_found: no baked key has the token's kid"
    assert (
        repr(exc)
        == "KeyNotFound(code='key_not_found', message=\"no baked key has the token's kid\")"
    )
    for printed in (str(exc), repr(exc)):
        assert "kid-VALUE" not in printed
        assert "TOKEN" not in printed


def test_to_dict_is_the_api_body() -> None:
    exc = KeyNotFound(kid="k1")

    assert exc.to_dict() == {
        "error": "invalid_token",
        "code": "key_not_found",
        "message": KeyNotFound.default_message,
    }


@pytest.mark.parametrize("code", DESIGN_CODES)
def test_to_dict_has_error_code_and_message_for_every_code(code: str) -> None:
    body = ERROR_CODES[code]().to_dict()

    assert set(body) == {"error", "code", "message"}
    assert body["code"] == code
    assert all(isinstance(value, str) and value for value in body.values())


def test_every_error_is_catchable_as_verifier_error() -> None:
    for cls in ERROR_CODES.values():
        with pytest.raises(VerifierError):
            raise cls()
