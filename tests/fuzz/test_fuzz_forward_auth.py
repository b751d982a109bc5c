"""Fuzz the forward-auth endpoint's headers: method, Origin, Bearer whitespace, handshakes.

Requests are built as the shipped nginx config sends them to ``/auth/verify``
(the browser's ``Host``, ``X-Forwarded-Proto``, ``X-Original-Method``, the
client's ``Origin``, ``Sec-Fetch-Site``, ``Cookie``, ``Authorization`` and
WebSocket headers), with hostile values: methods in any case, lists, empty,
control characters and several method headers (``X-Original-Method`` and
Traefik's ``X-Forwarded-Method``); Origins that are the app's own in other
spellings, lookalikes, ``null``, repeated; Bearer values whose credential is
SP, HTAB, NBSP, ``\\x1f``, ``\\x85`` and other whitespace; any subset of the
handshake headers (``Sec-WebSocket-Key``, ``Sec-WebSocket-Version``,
``Upgrade``, ``Sec-Fetch-Mode``) in any case. Properties:

- the verdict is 200 (with the user), 401 or 403 ``csrf_rejected``; nothing
  else, no exception;
- the middleware in process and forward auth give the same verdict
  (:func:`tests.test_request_rules.both_verdicts`);
- an independent reading of the rules (regular expressions and sets written
  here from DESIGN.md, no ``verifier`` code) never sees forward auth lend the
  victim's cookie identity to a cross-origin handshake or a cross-origin
  unsafe (or unknown, or malformed) method, and never sees a request with a
  Bearer credential refused for its origin or authenticated by its cookies.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.fuzz import examples
from tests.test_request_rules import (
    EVIL,
    NO_IDENTITY,
    OWN,
    REFUSED,
    SIBLING,
    Case,
    Judges,
    both_verdicts,
    forward_auth_verdict,
    make_judges,
)

SAFE = {"GET", "HEAD", "OPTIONS", "TRACE"}
BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] (.*)", re.DOTALL)
#: Whitespace a Bearer credential might be made of; only SP and HTAB are stripped.
BLANKS = [" ", "\t", "\xa0", "\x1f", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\r", "\n"]
METHOD_WORDS = [
    "GET", "HEAD", "OPTIONS", "TRACE", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "PROPFIND",
    "get", "post", "Get", "POST, GET", "GET, POST", "GET,POST", "", " GET", "GET ", "GET\t",
    "G\x00ET", "GET\x85", "\xa0GET",
]  # fmt: skip
ORIGIN_WORDS = [
    OWN, OWN.upper(), f"{OWN}/", f"{OWN}//", EVIL, SIBLING, "null", "", "http://127.0.0.1",
    f"{OWN}.evil.example", "https://127.0.0.1:8000", f"{OWN}:80", f" {OWN}", f"{OWN}\xa0",
    f"{OWN}, {OWN}", "http://127.0.0.1:8000@evil.example",
]  # fmt: skip
FETCH_SITES = ["same-origin", "Same-Origin", "same-site", "cross-site", "none", "", "same-origin "]
HANDSHAKE_VALUES = {
    "sec-websocket-key": ["dGhlIHNhbXBsZSBub25jZQ==", "", "x"],
    "sec-websocket-version": ["13", "8", ""],
    "upgrade": ["websocket", "WebSocket", "WEBSOCKET", "h2c, websocket", "websocket/13", "h2c"],
    "sec-fetch-mode": ["websocket", "WebSocket", "navigate", "cors", "no-cors"],
}

latin1 = st.text(alphabet=st.characters(max_codepoint=255), max_size=20)


@pytest.fixture(scope="module")
def judges() -> Judges:
    return make_judges()


def cookie_choices(judges: Judges) -> list[str | None]:
    return [
        judges.cookie("access", "id"),
        judges.cookie("access"),
        judges.cookie("refresh"),
        judges.cookie("access", access=judges.tokens["expired"]),
        f"theme=dark; {judges.cookie('access', 'id')}",
        "theme=dark",
        None,
    ]


@st.composite
def authorizations(draw: st.DrawFn, judges: Judges) -> str | None:
    kind = draw(st.sampled_from(["none", "blank", "valid", "padded-valid", "other", "random"]))
    scheme = draw(st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Bearerx"]))
    if kind == "none":
        return None
    if kind == "blank":
        return f"{scheme} " + "".join(draw(st.lists(st.sampled_from(BLANKS), max_size=4)))
    if kind in ("valid", "padded-valid"):
        pad = "".join(draw(st.lists(st.sampled_from([" ", "\t"]), max_size=3)))
        return f"{scheme} {pad}{judges.tokens['access']}{pad if kind == 'padded-valid' else ''}"
    if kind == "other":
        return draw(st.sampled_from(["Basic dXNlcjpwYXNz", "Bearer", "", "Token abc"]))
    return f"{scheme} " + draw(latin1)


def methods() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(METHOD_WORDS), latin1)


def origins() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(ORIGIN_WORDS), latin1)


@st.composite
def handshakes(draw: st.DrawFn) -> tuple[tuple[str, str], ...]:
    names = draw(st.lists(st.sampled_from(sorted(HANDSHAKE_VALUES)), unique=True, max_size=4))
    pairs = []
    for name in names:
        spelled = draw(st.sampled_from([name, name.upper(), name.title()])).lower()
        pairs.append((spelled, draw(st.sampled_from(HANDSHAKE_VALUES[name]))))
    return tuple(pairs)


@st.composite
def cases(draw: st.DrawFn, judges: Judges) -> Case:
    """One request both judges can see: one method (a handshake is a GET)."""
    pairs = draw(handshakes())
    # In process, a handshake is an ASGI websocket scope, whose method is GET;
    # look-alikes (Upgrade: h2c, Sec-Fetch-Mode: navigate) ride on a plain request.
    handshake = tuple(pair for pair in pairs if _names_a_handshake(*pair))
    method = draw(st.sampled_from([None, "GET"]) if handshake else st.one_of(st.none(), methods()))
    return Case(
        cookies=draw(st.sampled_from(cookie_choices(judges))),
        authorization=draw(authorizations(judges)),
        method=method,
        origin=draw(st.one_of(st.none(), origins())),
        sec_fetch_site=draw(st.one_of(st.none(), st.sampled_from(FETCH_SITES), latin1)),
        handshake=handshake,
        extra=tuple(pair for pair in pairs if pair not in handshake),
    )


# -- an independent reading of the rules -------------------------------------------------


def _names_a_handshake(name: str, value: str) -> bool:
    if name in ("sec-websocket-key", "sec-websocket-version"):
        return True
    if name == "upgrade":
        return any(
            re.fullmatch(r"[ \t]*websocket(/[^,]*)?[ \t]*", part, re.IGNORECASE)
            for part in value.split(",")
        )
    return name == "sec-fetch-mode" and value.strip(" \t").lower() == "websocket"


def _bearer(values: list[str]) -> str | None:
    """The first Authorization value that is a Bearer with a credential left after SP/HTAB."""
    for value in values:
        match = BEARER.fullmatch(value)
        if match and match.group(1).strip(" \t"):
            return match.group(1).strip(" \t")
    return None


def _own(origin: str) -> bool:
    return origin.strip(" \t").lower().rstrip("/") == OWN


def _expect(headers: list[tuple[str, str]], judges: Judges) -> tuple[str | None, bool, bool, bool]:
    """(bearer, cookie-authenticated, handshake, every original method safe)."""

    def get(name: str) -> list[str]:
        return [value for key, value in headers if key == name]

    bearer = _bearer(get("authorization"))
    cookie = "; ".join(get("cookie"))
    has_token_cookie = re.search(r"(^|; )jwtedge_(access|refresh)=", cookie) is not None
    handshake = any(_names_a_handshake(name, value) for name, value in headers)
    methods = get("x-original-method") + get("x-forwarded-method")
    return bearer, bearer is None and has_token_cookie, handshake, set(methods) <= SAFE


def _same_origin_rule(headers: list[tuple[str, str]]) -> bool:
    origins = [v for k, v in headers if k == "origin"]
    if origins:
        return len(origins) == 1 and _own(origins[0])
    sites = [v for k, v in headers if k == "sec-fetch-site"]
    return len(sites) == 1 and sites[0].strip(" \t").lower() == "same-origin"


def _handshake_rule(headers: list[tuple[str, str]]) -> bool:
    origins = [v for k, v in headers if k == "origin"]
    return len(origins) == 1 and _own(origins[0])


# -- properties ---------------------------------------------------------------------------


@settings(max_examples=examples(300))
@given(data=st.data())
async def test_forward_auth_and_the_middleware_agree_on_random_headers(
    judges: Judges, data: st.DataObject
) -> None:
    case = data.draw(cases(judges))

    in_process, forward = await both_verdicts(judges, case)

    event(f"verdict: {forward}")
    assert forward in (REFUSED, NO_IDENTITY, "user:ada")
    assert in_process == forward


@st.composite
def forward_requests(draw: st.DrawFn, judges: Judges) -> list[tuple[str, str]]:
    """Raw extra headers for /auth/verify: repeated names, both method headers."""
    pairs: list[tuple[str, str]] = []
    cookie = draw(st.sampled_from(cookie_choices(judges)))
    if cookie is not None:
        pairs.append(("cookie", cookie))
    for _ in range(draw(st.integers(0, 2))):
        value = draw(authorizations(judges))
        if value is not None:
            pairs.append(("authorization", value))
    for name, strategy in (
        ("x-original-method", methods()),
        ("x-forwarded-method", methods()),
        ("origin", origins()),
        ("sec-fetch-site", st.one_of(st.sampled_from(FETCH_SITES), latin1)),
    ):
        for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2]))):
            pairs.append((name, draw(strategy)))
    pairs.extend(draw(handshakes()))
    return draw(st.permutations(pairs))


@settings(max_examples=examples(400))
@given(data=st.data())
async def test_forward_auth_never_lends_the_cookie_identity_to_a_cross_origin_request(
    judges: Judges, data: st.DataObject
) -> None:
    headers = data.draw(forward_requests(judges))
    # Case carries these as extra headers; its own fields stay empty.
    verdict = await forward_auth_verdict(judges.app, Case(extra=tuple(headers)))
    bearer, cookie_auth, handshake, safe = _expect(headers, judges)

    event(f"verdict: {verdict}; cookie_auth={cookie_auth}; handshake={handshake}")
    assert verdict in (REFUSED, NO_IDENTITY, "user:ada")
    if bearer is not None:
        # A Bearer request: judged on its token alone, never on the cookies.
        assert verdict != REFUSED
        assert (verdict == "user:ada") == (bearer == judges.tokens["access"])
        return
    if not cookie_auth:
        assert verdict == NO_IDENTITY
        return
    allowed = (not handshake or _handshake_rule(headers)) and (safe or _same_origin_rule(headers))
    if not allowed:
        assert verdict == REFUSED
    else:
        assert verdict != REFUSED
