"""Where the CLI's words go: exit codes, the stderr console, text made safe to print.

Data goes to stdout (``typer.echo``), diagnostics to a rich console on
stderr. Every string that came from the network or a token passes through
:func:`printable` first, so it stays on its line and cannot drive the
terminal or a CI log.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NoReturn

import typer
from rich.console import Console

from verifier.jwks import SkippedKey

__all__ = [
    "EXIT_CODES",
    "FAILED",
    "ISSUER",
    "OK",
    "OUTPUT",
    "UNEXPECTED",
    "USAGE",
    "console",
    "exit_with",
    "human_duration",
    "json_printable",
    "name_skipped",
    "printable",
    "say",
    "warn",
]

OK, FAILED, USAGE, ISSUER, OUTPUT, UNEXPECTED = 0, 1, 2, 3, 4, 70
EXIT_CODES = {
    OK: "ok",
    FAILED: "drift (check) or an invalid token (inspect)",
    USAGE: "usage or configuration error",
    ISSUER: "the issuer could not be reached or returned unusable keys",
    OUTPUT: "an output could not be written",
    UNEXPECTED: "unexpected error",
}


def console() -> Console:
    """The diagnostics console (stderr)."""
    # soft_wrap: a diagnostic stays one line however long its URL is; no emoji
    # codes either (a kid ":x:" is shown as written).
    return Console(stderr=True, soft_wrap=True, highlight=False, emoji=False)


#: C0 and C1 controls, DEL, line and paragraph separators and bidirectional
#: overrides: what can start a new line (a GitHub Actions ``::command``), move
#: the cursor, recolour the terminal or reorder what is shown.
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes (``\\n``, ``\\x1b``, ``\\u202e``).

    Every string that came from the network or a token (kids, issuer
    metadata, claims, error messages quoting them) goes through this before
    it is printed as text, so it stays on its line and cannot drive the
    terminal or a CI log.
    """
    return _UNPRINTABLE.sub(_escape_char, text)


def json_printable(text: str) -> str:
    """JSON text (or a dotenv line quoting it) with what ``printable`` escapes as ``\\uXXXX``.

    JSON encoders escape C0 controls already, so what is left (DEL, C1,
    separators, bidi overrides) can only sit inside strings, where the JSON
    escape means the same character: the value reads back unchanged.
    """
    return _UNPRINTABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def say(message: str, style: str | None = None) -> None:
    """One diagnostic line on stderr, escaped."""
    console().print(printable(message), style=style, markup=False)


def warn(message: str) -> None:
    """A ``jwtedge: warning:`` line on stderr."""
    say(f"jwtedge: warning: {message}", "yellow")


def exit_with(code: int, message: str) -> NoReturn:
    """Say ``jwtedge: <message>`` on stderr and exit with ``code``."""
    say(f"jwtedge: {message}", "bold red")
    raise typer.Exit(code)


def name_skipped(skipped: Sequence[SkippedKey], what: str) -> None:
    """One line per key the bake (or the check) left out, and why."""
    for key in skipped:
        say(f"  {what} {key.describe()}", "yellow")


def human_duration(seconds: float) -> str:
    """``90061`` -> ``1d 1h``: the two largest units, for ages and expiries."""
    seconds = int(abs(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])
