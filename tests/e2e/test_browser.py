"""The reference app's ``/`` page in a real Chromium driven by Playwright, signed in at a DevIssuer.

Both servers run in process (:mod:`tests.e2e.servers`), with the app's
``refresh.skew`` at 1 s and ``auth.leeway`` at 0, so a token really is dead
once its ``exp`` has passed and only a refresh keeps the user signed in.
How long sign-in takes depends on the machine, so no test races a token's
expiry against it:

- the page-load refresh runs the issuer and the app's verifier on one
  :class:`SettableClock`: tokens live ``SESSION_TTL`` (minutes, so sign-in is
  never near a refresh) and the test moves that clock past ``exp`` instead of
  sleeping;
- the live panel needs its socket closed at expiry by the app's
  ``CloseAtExpiry``, which runs on the wall clock, so there the issuer mints
  ``LIVE_TTL`` tokens and the test really waits: ``LIVE_TTL`` is a generous
  bound on signing in and connecting the panel, not a figure it asserts.

Chromium is Debian's, found or installed by :mod:`tests.e2e.browser`; when
it (or Playwright) is missing these tests skip with the reason, and fail
under CI (:func:`tests.ci.under_ci`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from tests.ci import skip_or_fail
from tests.e2e.browser import BrowserUnavailable, ensure_chromium, launch
from tests.e2e.servers import app_config, dev_issuer, serve_app
from verifier.app import create_app
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

pytestmark = pytest.mark.e2e

#: Token lifetime on the settable clock: sign-in never comes near a refresh.
SESSION_TTL = 300
#: Token lifetime on the wall clock, for the socket CloseAtExpiry closes: a generous
#: bound on signing in and connecting the panel (they must end before ``exp - SKEW``).
LIVE_TTL = 15
SKEW = 1.0
#: A page, a selector or a socket message that takes longer than this is a hang.
ACTION_TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("Playwright is not installed (pip install -e '.[dev]')")
    try:
        executable = ensure_chromium()
    except BrowserUnavailable as exc:
        skip_or_fail(exc.reason)
    with sync_playwright() as playwright:
        chromium = launch(playwright, executable)
        try:
            yield chromium
        finally:
            chromium.close()


class SettableClock:
    """The wall clock plus an offset the test moves forward (seconds since the epoch)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def move_past(self, moment: float) -> None:
        """From now on the clock reads just after ``moment``."""
        self.offset += max(0.0, moment - self()) + 1.0


@dataclass
class Stack:
    issuer: DevIssuer
    url: str
    #: The clock of the issuer and the app's verifier (the wall clock unless settable).
    clock: SettableClock | None = None


@contextmanager
def short_lived_stack(*, ttl: int, clock: SettableClock | None = None) -> Iterator[Stack]:
    """A served DevIssuer minting ``ttl`` s tokens and the reference app in front of it.

    With ``clock``, the issuer mints and the app's verifier judges expiry by it.
    """
    with dev_issuer(**({"clock": clock} if clock is not None else {})) as issuer:
        issuer.access_ttl = ttl
        base = app_config(issuer)
        config = base.model_copy(
            update={
                "auth": base.auth.model_copy(update={"leeway": 0.0}),
                "refresh": base.refresh.model_copy(update={"skew": SKEW}),
            }
        )
        verifier = TokenVerifier.from_config(config, now=clock) if clock is not None else None
        with serve_app(create_app(config, verifier=verifier)) as url:
            yield Stack(issuer, url, clock)


@pytest.fixture
def stack() -> Iterator[Stack]:
    """Tokens that live minutes on a clock the test moves."""
    with short_lived_stack(ttl=SESSION_TTL, clock=SettableClock()) as running:
        yield running


@pytest.fixture
def live_stack() -> Iterator[Stack]:
    """Tokens that live ``LIVE_TTL`` s on the wall clock."""
    with short_lived_stack(ttl=LIVE_TTL) as running:
        yield running


@dataclass
class Tab:
    """A page in a fresh browser context (no cookies), with the errors it reported."""

    page: Page
    errors: list[str] = field(default_factory=list)

    def record(self, message: ConsoleMessage) -> None:
        url = message.location.get("url", "")
        # The app serves no icon: Chromium's own /favicon.ico request is not the page's doing.
        if message.type == "error" and not url.endswith("/favicon.ico"):
            self.errors.append(f"{message.text} ({url})")


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    context = browser.new_context()
    try:
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        tab = Tab(context.new_page())
        # CSP violations and script errors land here: the page must have none.
        tab.page.on("console", tab.record)
        tab.page.on("pageerror", lambda exc: tab.errors.append(str(exc)))
        yield tab
    finally:
        context.close()


def sign_in(page: Page, url: str) -> None:
    """Follow the sign-in link: app -> issuer /authorize (approves at once) -> callback -> ``/``."""
    response = page.goto(f"{url}/auth/login?next=/")
    assert response is not None
    assert response.status == 200
    assert page.url == f"{url}/"


def expires_at(page: Page) -> float:
    value = page.locator("#exp").get_attribute("data-exp")
    assert value is not None
    return float(value)


def assert_signed_in_page(page: Page) -> None:
    from playwright.sync_api import expect

    expect(page.locator("h1")).to_have_text("Signed in as Ada Lovelace")
    cells = page.locator("table tr td")
    assert cells.all_inner_texts() == [
        "Acme Inc.",
        "acme",
        "owner",
        "Globex Corporation",
        "globex",
        "member",
    ]
    assert page.locator("ul li").all_inner_texts() == [
        "website in Acme Inc. (prj_web)",
        "billing in Globex Corporation (prj_bill)",
    ]


def test_sign_in_shows_the_session_and_a_page_load_after_expiry_refreshes_it(
    tab: Tab, stack: Stack
) -> None:
    from playwright.sync_api import expect

    page = tab.page
    sign_in(page, stack.url)

    assert_signed_in_page(page)
    expect(page.locator("#ws-status")).to_have_text("connected")
    expect(page.locator("#ws-log")).to_contain_text('"id": "ada"')
    expect(page.locator("#ws-log")).to_contain_text('"name": "Globex Corporation"')
    first_exp = expires_at(page)
    assert stack.issuer.stats.refresh_grants == 0

    # Leave for a page without the live panel: on `/` the panel itself would
    # refresh when its socket closes at expiry, and this test is about the
    # middleware refreshing on a plain page load.
    page.goto(f"{stack.url}/account")
    expect(page.locator("table")).to_contain_text("ada")
    assert stack.clock is not None
    stack.clock.move_past(first_exp)  # for the issuer and the app: the token is dead now
    assert stack.issuer.stats.refresh_grants == 0

    response = page.goto(f"{stack.url}/")

    assert response is not None
    assert response.status == 200
    shown = page.locator("body").inner_text()
    assert "You are not signed in." not in shown, "signed out: the page load did not refresh"
    assert_signed_in_page(page)
    assert stack.issuer.stats.refresh_grants == 1
    assert expires_at(page) > first_exp
    expect(page.locator("#ws-log")).to_contain_text('"id": "ada"')
    assert tab.errors == []


def test_live_panel_refreshes_over_http_and_reconnects_when_its_socket_closes_at_expiry(
    tab: Tab, live_stack: Stack
) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import expect

    stack = live_stack
    page = tab.page
    sign_in(page, stack.url)
    expect(page.locator("#ws-log")).to_contain_text('"id": "ada"')
    first_exp = expires_at(page)
    assert stack.issuer.stats.refresh_grants == 0

    # CloseAtExpiry closes the socket with 4401 at exp; the page POSTs
    # /auth/refresh, opens a new socket and shows the session it receives.
    try:
        page.wait_for_function(
            """(exp) => {
                try {
                    const shown = JSON.parse(document.getElementById("ws-log").textContent);
                    return shown.session.expires_at > exp;
                } catch { return false; }
            }""",
            arg=first_exp,
            timeout=LIVE_TTL * 1000 + ACTION_TIMEOUT_MS,
        )
    except PlaywrightTimeoutError:
        status = page.locator("#ws-status").inner_text()
        note = page.locator("#refresh-status").inner_text()
        pytest.fail(f"the panel shows no refreshed session: {status!r}, {note!r}")

    expect(page.locator("#ws-status")).to_have_text("connected")
    expect(page.locator("#refresh-status")).to_have_text("refreshed")
    expect(page.locator("#ws-log")).to_contain_text('"id": "ada"')
    assert stack.issuer.stats.refresh_grants == 1
    assert tab.errors == []
