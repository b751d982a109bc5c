"""The reference app's HTML pages: the home page with its live panel, and the account page.

Every page carries ``Cache-Control: no-store`` and a Content-Security-Policy
with a per-response nonce; every value is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import html
import re
import secrets
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..config import AppConfig
from ..login import LOGOUT_PATH
from ..session import Session
from .state import NO_STORE, EdgeState

__all__ = ["account_page", "home_page", "login_link", "page"]

_NETLOC = re.compile(r"[A-Za-z0-9.\-:\[\]]+")

_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem;"
    "color:#222}table{border-collapse:collapse}th,td{padding:.25rem .75rem;text-align:left;"
    "border-bottom:1px solid #ddd}code,pre{font:13px ui-monospace,monospace}"
    "pre{background:#f5f5f5;padding:.75rem;overflow:auto;max-height:48rem}"
    "form.inline{display:inline}.muted{color:#666}button{font:inherit}"
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def page(
    request: Request, title: str, body: str, *, script: str = "", status: int = 200
) -> Response:
    """An HTML page with a per-response CSP nonce; never cached (it may show a session)."""
    nonce = secrets.token_urlsafe(16)
    edge: EdgeState = request.app.state.edge
    netloc = request.url.netloc
    connect = "'self'"
    if _NETLOC.fullmatch(netloc):
        connect += f" {'wss' if request.url.scheme == 'https' else 'ws'}://{netloc}"
    form_action = "'self'"
    end_session = edge.config.endpoint("end_session")
    if (
        end_session
        and (origin := _origin(end_session))
        and _NETLOC.fullmatch(origin.split("//")[1])
    ):
        form_action += f" {origin}"
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        f"connect-src {connect}; form-action {form_action}; img-src 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )
    scripts = f"<script nonce='{nonce}'>{script}</script>" if script else ""
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width'>"
        f"<title>{_e(title)}</title><style nonce='{nonce}'>{_STYLE}</style></head>"
        f"<body>{body}{scripts}</body></html>\n"
    )
    headers = {
        **NO_STORE,
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
    }
    return HTMLResponse(document, status_code=status, headers=headers)


def _expiry(session: Session) -> str:
    moment = datetime.fromtimestamp(session.expires_at, UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def _orgs_table(session: Session) -> str:
    if not session.organizations:
        return "<p class=muted>No organizations.</p>"
    rows = "".join(
        f"<tr><td>{_e(org.name or org.label)}</td><td><code>{_e(org.label)}</code></td>"
        f"<td>{_e(org.role or 'no role')}</td></tr>"
        for org in session.organizations
    )
    return f"<table><tr><th>Organization</th><th>Slug</th><th>Role</th></tr>{rows}</table>"


def _projects_list(session: Session) -> str:
    if not session.projects:
        return "<p class=muted>No projects.</p>"
    names = {org.id: org.name or org.label for org in session.organizations}
    items = "".join(
        f"<li><code>{_e(project.slug or project.id)}</code>"
        + (
            f" in {_e(names.get(project.organization_id, project.organization_id))}"
            if project.organization_id
            else ""
        )
        + f" <span class=muted>({_e(project.id)})</span></li>"
        for project in session.projects
    )
    return f"<ul>{items}</ul>"


def login_link(config: AppConfig, target: str) -> str:
    return f"{config.http.login_path}?next={quote(target, safe='/')}"


_HOME_SCRIPT = """
const expEl = document.getElementById("exp"), left = document.getElementById("left");
let exp = Number(expEl.dataset.exp);
function tick() {
  const s = Math.round(exp - Date.now() / 1000);
  left.textContent = s > 0 ? "in " + s + " s" : "expired: the next page load refreshes it";
}
tick(); setInterval(tick, 1000);
const note = document.getElementById("refresh-status");
async function refresh() {
  const r = await fetch("/auth/refresh", {method: "POST", credentials: "same-origin"});
  note.textContent = r.ok ? "refreshed" : "refresh failed (HTTP " + r.status + ")";
  return r.ok;
}
document.getElementById("refresh").addEventListener("click", async () => {
  if (await refresh()) location.reload();
});
const wsStatus = document.getElementById("ws-status"), wsLog = document.getElementById("ws-log");
function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/ws");
  ws.onopen = () => { wsStatus.textContent = "connected"; };
  ws.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.session) { exp = data.session.expires_at; tick(); }
    wsLog.textContent = JSON.stringify(data, null, 2);
  };
  ws.onclose = async (event) => {
    wsStatus.textContent = "closed (" + event.code + ")";
    if (event.code === CLOSE_CODE) {
      wsStatus.textContent += ": the session expired; refreshing over HTTP and reconnecting";
      if (await refresh()) connect();
    }
  };
}
connect();
"""


def home_page(request: Request, session: Session | None, edge: EdgeState) -> Response:
    config = edge.config
    if session is None:
        if edge.login.enabled:
            sign_in = f"<p><a href='{_e(login_link(config, '/'))}'>Sign in</a></p>"
        else:
            sign_in = (
                "<p class=muted>Sign-in is not configured: the issuer has no authorization "
                "endpoint or auth.client_id is unset.</p>"
            )
        body = f"<h1>jwtedge</h1><p>You are not signed in.</p>{sign_in}"
        return page(request, "jwtedge", body)
    user = session.user
    email = ""
    if user.email:
        verified = "verified" if user.email_verified else "not verified"
        email = f"<p>{_e(user.email)} <span class=muted>({verified})</span></p>"
    body = (
        f"<h1>Signed in as {_e(user.display_name)}</h1>{email}"
        f"<h2>Organizations</h2>{_orgs_table(session)}"
        f"<h2>Projects</h2>{_projects_list(session)}"
        "<h2>Session</h2>"
        f"<p>The access token expires <time id=exp datetime='{_e(_expiry(session))}' "
        f"data-exp='{_e(session.expires_at)}'>{_e(_expiry(session))}</time> "
        "(<span id=left></span>).</p>"
        "<div><button id=refresh type=button>Refresh now</button> "
        f"<form class=inline method=post action='{_e(LOGOUT_PATH)}'>"
        "<button type=submit>Sign out</button></form> <span id=refresh-status></span></div>"
        "<p><a href='/account'>Account</a> · <a href='/api/session'>/api/session</a></p>"
        "<h2>Live (WebSocket)</h2><p id=ws-status class=muted>connecting…</p>"
        "<pre id=ws-log></pre>"
    )
    script = _HOME_SCRIPT.replace("CLOSE_CODE", str(int(config.websocket.close_code)))
    return page(request, f"jwtedge: {user.display_name}", body, script=script)


def account_page(request: Request, session: Session) -> Response:
    user = session.user
    rows = [
        ("User id", user.id),
        ("Name", user.name or ""),
        ("Email", user.email or ""),
        ("Email verified", "yes" if user.email_verified else "no"),
        ("Session id", session.session_id or ""),
        ("Scopes", " ".join(session.token_scopes)),
        ("Organizations", ", ".join(org.name or org.label for org in session.organizations)),
        ("Access token expires", _expiry(session)),
    ]
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    body = f"<h1>Account</h1><table>{table}</table><p><a href='/'>Back</a></p>"
    return page(request, "Account", body)
