"""CookieJar: names, reading, chunking and Set-Cookie attributes; secure and loopback rules."""

from __future__ import annotations

from typing import Any

import pytest

from verifier.config import CookiesSettings
from verifier.cookies import (
    CHUNK_SIZE,
    CookieJar,
    TokenSet,
    is_loopback_host,
    parse_cookie_header,
    request_is_secure,
)

ACCESS = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJlLW9mLWFjY2Vzcy10b2tlbg"
ID = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1MSIsImVtYWlsIjoiYUBleGFtcGxlLmNvbSJ9.aWQtc2lnbmF0dXJl"
REFRESH = "opaque-refresh-token-value-123"


def jar(**settings: Any) -> CookieJar:
    return CookieJar(CookiesSettings(**settings))


def long_value(chunks: float) -> str:
    """A token-like value spanning ``chunks`` chunks (letters, digits, '-' and '_')."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    size = int(CHUNK_SIZE * chunks)
    return (alphabet * (size // len(alphabet) + 1))[:size]


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str | bool]]:
    """``(name, value, attributes)`` with lower-cased attribute names."""
    pair, *attributes = (part.strip() for part in header.split(";"))
    name, _, value = pair.partition("=")
    attrs: dict[str, str | bool] = {}
    for attribute in attributes:
        key, sep, attr_value = attribute.partition("=")
        attrs[key.lower()] = attr_value if sep else True
    return name, value, attrs


def parsed(headers: list[str]) -> dict[str, tuple[str, dict[str, str | bool]]]:
    result = {}
    for header in headers:
        name, value, attrs = parse_set_cookie(header)
        result[name] = (value, attrs)
    return result


def returned_cookies(headers: list[str]) -> dict[str, str]:
    """What a browser sends back after these Set-Cookie values (cleared ones dropped)."""
    return {
        name: value
        for name, (value, attrs) in parsed(headers).items()
        if attrs.get("max-age") != "0"
    }


def http_scope(scheme: str, host: str | None) -> dict[str, Any]:
    headers = [(b"host", host.encode())] if host is not None else []
    return {"type": "http", "scheme": scheme, "headers": headers, "server": ("10.0.0.5", 8000)}


# -- names --------------------------------------------------------------------


def test_names_are_plain_when_not_secure_and_host_prefixed_when_secure() -> None:
    cookies = jar()

    assert cookies.names(secure=False) == {
        "access": "jwtedge_access",
        "id": "jwtedge_id",
        "refresh": "jwtedge_refresh",
    }
    assert cookies.names(secure=True) == {
        "access": "__Host-jwtedge_access",
        "id": "__Host-jwtedge_id",
        "refresh": "__Host-jwtedge_refresh",
    }


@pytest.mark.parametrize(
    "settings",
    [{"domain": "example.com"}, {"path": "/app"}, {"host_prefix": "never"}],
    ids=["domain", "path", "host_prefix_never"],
)
def test_secure_names_have_no_host_prefix_when_the_browser_would_refuse_it(
    settings: dict[str, Any],
) -> None:
    assert jar(**settings).names(secure=True)["access"] == "jwtedge_access"


# -- read and write -----------------------------------------------------------


@pytest.mark.parametrize("secure", [False, True])
def test_a_short_token_set_is_written_as_single_cookies_and_read_back(secure: bool) -> None:
    cookies = jar()
    tokens = TokenSet(access=ACCESS, id=ID, refresh=REFRESH)

    headers = cookies.set_cookies(tokens, secure=secure)

    names = cookies.names(secure=secure)
    assert set(returned_cookies(headers)) == set(names.values())
    assert cookies.read(returned_cookies(headers), secure=secure) == tokens


def test_read_ignores_cookies_under_the_other_names() -> None:
    cookies = jar()
    plain = {"jwtedge_access": ACCESS}

    assert cookies.read(plain, secure=False).access == ACCESS
    assert cookies.read(plain, secure=True).access is None


def test_read_treats_an_empty_cookie_as_missing() -> None:
    assert jar().read({"jwtedge_access": ""}, secure=False) == TokenSet()


def test_a_value_over_chunk_size_is_chunked_and_read_back_identical() -> None:
    cookies = jar()
    value = long_value(2.5)

    headers = cookies.set_cookies(TokenSet(access=value), secure=True)

    sent = returned_cookies(headers)
    assert set(sent) == {
        "__Host-jwtedge_access.0",
        "__Host-jwtedge_access.1",
        "__Host-jwtedge_access.2",
    }
    assert all(len(piece) <= CHUNK_SIZE for piece in sent.values())
    assert cookies.read(sent, secure=True).access == value


def test_a_value_of_exactly_chunk_size_is_one_cookie() -> None:
    headers = jar().set_cookies(TokenSet(access=long_value(1)), secure=False)

    assert set(returned_cookies(headers)) == {"jwtedge_access"}


def test_every_cookie_stays_under_the_browser_limit() -> None:
    headers = jar(domain="example.com").set_cookies(
        TokenSet(access=long_value(3.9), id=ID), secure=True
    )

    assert all(len(header) < 4096 for header in headers)


def test_a_chunk_after_a_gap_reads_as_missing() -> None:
    cookies = jar()
    sent = returned_cookies(cookies.set_cookies(TokenSet(access=long_value(2.5)), secure=False))
    del sent["jwtedge_access.1"]

    assert cookies.read(sent, secure=False).access is None


def test_a_missing_first_chunk_reads_as_missing() -> None:
    cookies = jar()
    sent = returned_cookies(cookies.set_cookies(TokenSet(access=long_value(1.5)), secure=False))
    del sent["jwtedge_access.0"]

    assert cookies.read(sent, secure=False).access is None


def test_stale_chunks_are_cleared_when_a_shorter_value_is_written() -> None:
    cookies = jar()
    present = ["jwtedge_access.0", "jwtedge_access.1", "jwtedge_access.2", "theme"]

    headers = parsed(cookies.set_cookies(TokenSet(access=ACCESS), secure=False, present=present))

    assert headers["jwtedge_access"][0] == ACCESS
    for stale in ("jwtedge_access.0", "jwtedge_access.1", "jwtedge_access.2"):
        assert headers[stale][1]["max-age"] == "0"
    assert "theme" not in headers


def test_the_unchunked_cookie_is_cleared_when_a_longer_value_is_written() -> None:
    cookies = jar()

    headers = parsed(
        cookies.set_cookies(
            TokenSet(access=long_value(1.5)), secure=False, present=["jwtedge_access"]
        )
    )

    assert headers["jwtedge_access"][0] in ("", '""')
    assert headers["jwtedge_access"][1]["max-age"] == "0"
    assert headers["jwtedge_access.0"][1]["max-age"] != "0"
    assert headers["jwtedge_access.1"][1]["max-age"] != "0"


def test_surplus_chunks_are_cleared_when_fewer_chunks_are_written() -> None:
    cookies = jar()
    present = [f"jwtedge_access.{i}" for i in range(4)]

    headers = parsed(
        cookies.set_cookies(TokenSet(access=long_value(1.5)), secure=False, present=present)
    )

    assert headers["jwtedge_access.0"][1]["max-age"] != "0"
    assert headers["jwtedge_access.1"][1]["max-age"] != "0"
    assert headers["jwtedge_access.2"][1]["max-age"] == "0"
    assert headers["jwtedge_access.3"][1]["max-age"] == "0"


def test_a_token_needing_more_than_max_chunks_is_refused() -> None:
    cookies = jar(max_chunks=2)

    assert cookies.set_cookies(TokenSet(access=long_value(2)), secure=False)
    with pytest.raises(ValueError, match=r"max_chunks"):
        cookies.set_cookies(TokenSet(access=long_value(2) + "x"), secure=False)


def test_too_many_chunks_with_the_default_limit_is_refused() -> None:
    with pytest.raises(ValueError, match=r"max_chunks"):
        jar().set_cookies(TokenSet(access=long_value(4) + "x"), secure=True)


def test_the_error_for_too_many_chunks_holds_no_token() -> None:
    value = long_value(5)
    with pytest.raises(ValueError, match=r"max_chunks") as info:
        jar().set_cookies(TokenSet(access=value), secure=True)

    assert value[:20] not in str(info.value)


# -- attributes -----------------------------------------------------------------


def test_every_set_cookie_is_httponly_with_lax_path_and_max_age() -> None:
    headers = jar().set_cookies(
        TokenSet(access=long_value(1.5), id=ID, refresh=REFRESH), secure=False
    )

    assert len(headers) == 4
    for header in headers:
        _, _, attrs = parse_set_cookie(header)
        assert attrs["httponly"] is True
        assert attrs["samesite"] == "Lax"
        assert attrs["path"] == "/"
        assert attrs["max-age"] == str(30 * 86400)
        assert "domain" not in attrs


def test_max_age_follows_refresh_max_age() -> None:
    headers = jar(refresh_max_age="1h").set_cookies(TokenSet(access=ACCESS), secure=False)

    assert parse_set_cookie(headers[0])[2]["max-age"] == "3600"


@pytest.mark.parametrize(
    ("mode", "scheme", "host", "secure", "name"),
    [
        ("auto", "https", "app.example.com", True, "__Host-jwtedge_access"),
        ("auto", "https", "127.0.0.1:8000", True, "__Host-jwtedge_access"),
        ("auto", "http", "app.example.com", True, "__Host-jwtedge_access"),
        ("auto", "http", "127.0.0.1", False, "jwtedge_access"),
        ("auto", "http", "localhost:8000", False, "jwtedge_access"),
        ("always", "http", "127.0.0.1", True, "__Host-jwtedge_access"),
        ("never", "https", "app.example.com", False, "jwtedge_access"),
    ],
)
def test_secure_attribute_and_names_follow_the_mode(
    mode: str, scheme: str, host: str, secure: bool, name: str
) -> None:
    cookies = jar(secure=mode)
    is_secure = request_is_secure(http_scope(scheme, host), mode)

    headers = parsed(cookies.set_cookies(TokenSet(access=ACCESS), secure=is_secure))

    assert is_secure is secure
    assert list(headers) == [name]
    assert (headers[name][1].get("secure") is True) is secure


@pytest.mark.parametrize(("same_site", "expected"), [("strict", "Strict"), ("lax", "Lax")])
def test_same_site_is_written_as_configured(same_site: str, expected: str) -> None:
    headers = jar(same_site=same_site).set_cookies(TokenSet(access=ACCESS), secure=False)

    _, _, attrs = parse_set_cookie(headers[0])
    assert attrs["samesite"] == expected
    assert "secure" not in attrs


def test_same_site_none_forces_secure() -> None:
    headers = jar(same_site="none").set_cookies(TokenSet(access=ACCESS, id=ID), secure=False)

    for header in headers:
        _, _, attrs = parse_set_cookie(header)
        assert attrs["samesite"] == "None"
        assert attrs["secure"] is True


def test_domain_is_written_and_drops_the_host_prefix() -> None:
    headers = jar(domain="example.com").set_cookies(TokenSet(access=ACCESS), secure=True)

    name, _, attrs = parse_set_cookie(headers[0])
    assert name == "jwtedge_access"
    assert attrs["domain"] == "example.com"
    assert attrs["secure"] is True


def test_path_is_written_as_configured() -> None:
    headers = jar(path="/app").set_cookies(TokenSet(access=ACCESS), secure=True)

    name, _, attrs = parse_set_cookie(headers[0])
    assert name == "jwtedge_access"
    assert attrs["path"] == "/app"


# -- clearing -------------------------------------------------------------------


def test_clear_cookies_expires_every_present_chunk() -> None:
    present = [
        "__Host-jwtedge_access.0",
        "__Host-jwtedge_access.1",
        "__Host-jwtedge_id",
        "__Host-jwtedge_refresh",
        "theme",
    ]

    headers = parsed(jar().clear_cookies(secure=True, present=present))

    assert set(headers) == set(present) - {"theme"}
    for value, attrs in headers.values():
        assert value in ("", '""')
        assert attrs["max-age"] == "0"
        assert attrs["path"] == "/"
        assert attrs["secure"] is True


def test_clear_cookies_without_present_names_clears_each_base_name() -> None:
    headers = parsed(jar().clear_cookies(secure=False))

    assert set(headers) == {"jwtedge_access", "jwtedge_id", "jwtedge_refresh"}
    assert all(attrs["max-age"] == "0" for _, attrs in headers.values())


def test_clear_cookies_with_present_names_clears_only_those() -> None:
    headers = parsed(jar().clear_cookies(secure=False, present=["jwtedge_refresh"]))

    assert set(headers) == {"jwtedge_refresh"}


def test_clear_cookies_with_nothing_present_sends_nothing() -> None:
    assert jar().clear_cookies(secure=True, present=[]) == []


def test_clear_missing_clears_only_the_present_kinds_without_a_token() -> None:
    headers = parsed(
        jar().set_cookies(
            TokenSet(access=ACCESS),
            secure=False,
            present=["jwtedge_access", "jwtedge_refresh"],
            clear_missing=True,
        )
    )

    assert headers["jwtedge_access"][0] == ACCESS
    assert headers["jwtedge_refresh"][1]["max-age"] == "0"
    assert "jwtedge_id" not in headers  # the request carried none: nothing to clear


def test_storing_a_token_set_writes_it_and_clears_only_present_leftover_chunks() -> None:
    tokens = TokenSet(access=ACCESS, id="id-token", refresh="refresh-token")
    present = ["jwtedge_access.0", "jwtedge_access.1", "jwtedge_id"]

    headers = jar().set_cookies(tokens, secure=False, present=present)

    names = [parse_set_cookie(value)[0] for value in headers]
    assert sorted(names) == sorted(
        ["jwtedge_access", "jwtedge_id", "jwtedge_refresh", "jwtedge_access.0", "jwtedge_access.1"]
    )


# -- request_is_secure and loopback ---------------------------------------------


def test_request_is_secure_honours_the_https_scheme_behind_proxy_headers() -> None:
    # uvicorn --proxy-headers rewrites the scope's scheme from X-Forwarded-Proto.
    assert request_is_secure(http_scope("https", "127.0.0.1:8000"), "auto") is True
    assert request_is_secure(http_scope("wss", "localhost"), "auto") is True


def test_request_is_secure_falls_back_to_the_server_address_without_host() -> None:
    scope = {"type": "http", "scheme": "http", "headers": [], "server": ("127.0.0.1", 8000)}

    assert request_is_secure(scope, "auto") is False
    assert request_is_secure(http_scope("http", None), "auto") is True


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:8000", True),
        ("127.0.0.1", True),
        ("127.0.0.1:8000", True),
        ("127.1.2.3", True),
        ("[::1]", True),
        ("[::1]:8000", True),
        ("app.localhost", True),
        ("app.localhost:3000", True),
        ("example.com", False),
        ("localhost.example.com", False),
        ("10.0.0.1", False),
        ("[::2]:8000", False),
        ("127.evil.com", False),
        ("127.0.0.1.nip.io", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_plain_http_to_a_dns_name_starting_with_127_gets_secure_cookies() -> None:
    assert request_is_secure(http_scope("http", "127.evil.com"), "auto") is True


# -- misc -----------------------------------------------------------------------


def test_parse_cookie_header_keeps_the_first_occurrence() -> None:
    assert parse_cookie_header("a=1; b=2; a=3; junk; =x; c=") == {"a": "1", "b": "2", "c": ""}


def test_token_set_repr_shows_no_token() -> None:
    text = repr(TokenSet(access=ACCESS, id=ID, refresh=REFRESH))

    for value in (ACCESS, ID, REFRESH):
        assert value not in text
    assert "access" in text
