"""How results read: the bake's key table, a session's lines, JSON for people and machines.

Pure formatting: these functions print what they are given (the bake
summary to the stderr console) or return text; the commands decide what
to show. Anything that came from the network or a token is escaped with
:func:`~deploy.console.printable` or :func:`~deploy.console.json_printable`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import orjson
from rich.table import Table
from rich.text import Text

from verifier.session import Session

from .bake import BakeResult
from .console import console, human_duration, json_printable, printable

__all__ = ["bake_summary", "json_document", "json_text", "session_lines"]


def bake_summary(result: BakeResult) -> None:
    """What the bake fetched, on stderr: the count, a table of keys, the set's sha256."""
    out = console()
    out.print(
        Text.assemble(
            ("fetched ", "green"),
            f"{len(result.jwks)} usable key(s) from {printable(result.meta['issuer'])} ",
            (f"in {result.elapsed:.2f} s, {result.size} bytes", "dim"),
        )
    )
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("kid", "type", "alg", "bits"):
        table.add_column(column)
    for key in result.jwks.keys:
        table.add_row(
            Text(printable(key.kid or "(none)")),
            Text(key.kty + (f" {key.crv}" if key.crv else "")),
            Text(printable(key.alg or "(by key type)")),
            str(key.key_size),
        )
    out.print(table)
    out.print(Text(printable(f"sha256 {result.meta['sha256']}"), style="dim"))


def session_lines(session: Session, now: datetime) -> list[str]:
    """The session as ``inspect`` shows it: user, organizations, projects, scopes, expiry."""
    user = session.user
    who = " ".join(part for part in (user.name, user.email and f"<{user.email}>") if part)
    about = ", ".join(
        part for part in (who, "email verified" if user.email_verified else "") if part
    )
    lines = [f"user: {user.id}" + (f" ({about})" if about else "")]
    lines.append("organizations:" + ("" if session.organizations else " none"))
    for org in session.organizations:
        role = ", ".join(org.roles) or org.role or "no role"
        active = " [active]" if org == session.active_organization else ""
        lines.append(f"  - {org.name or org.label} ({org.label}, id {org.id}): {role}{active}")
        if org.permissions:
            lines.append("    permissions: " + " ".join(org.permissions))
    lines.append("projects:" + ("" if session.projects else " none"))
    for project in session.projects:
        where = f", organization {project.organization_id}" if project.organization_id else ""
        lines.append(f"  - {project.slug or project.id} (id {project.id}{where})")
    lines.append("scopes: " + (" ".join(session.token_scopes) or "none"))
    lines.append("roles: " + (" ".join(session.roles) or "none"))
    lines.append("permissions: " + (" ".join(session.permissions) or "none"))
    if session.session_id:
        lines.append(f"session id: {session.session_id}")
    expires = datetime.fromtimestamp(session.expires_at, UTC)
    left = session.expires_at - now.timestamp()
    when = f"in {human_duration(left)}" if left >= 0 else f"{human_duration(left)} ago"
    lines.append(f"expires: {expires.isoformat().replace('+00:00', 'Z')} ({when})")
    return lines


def json_text(value: object) -> str:
    """Indented JSON for text output: readable non-ASCII, every control escaped (valid JSON).

    orjson escapes C0 controls inside strings, so every raw newline is the
    indentation's own.
    """
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode("utf-8")
    return "\n".join(json_printable(line) for line in text.split("\n"))


def json_document(value: object) -> str:
    """``--json`` output: plain JSON, every non-ASCII and control character escaped once."""
    return json.dumps(value, indent=2, ensure_ascii=True, allow_nan=False)
