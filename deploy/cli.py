"""The ``jwtedge`` command line: bake, check, inspect, serve and demo.

Data goes to stdout, diagnostics to a rich console on stderr. Exit codes are
the contract of DESIGN.md::

    0   ok
    1   drift (check) or an invalid token (inspect)
    2   usage or configuration error
    3   the issuer could not be reached or returned unusable keys
    4   an output could not be written
    70  an unexpected error

An unexpected exception is reported as one line naming its type only: its
message and the traceback's locals may hold a token or a secret, so neither
is ever printed.

I/O is injected through the Typer context ``obj`` (a :class:`Seams`, or a
dict of its fields), so tests pass ``httpx2.MockTransport``, a fake clock and
a sleep that does not wait, without monkeypatching.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit

import httpx2
import orjson
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup
from typer.exceptions import TyperException

from verifier.config import STYTCH_ISSUER, AppConfig, parse_duration
from verifier.errors import ConfigInvalid, JWKSFetchFailed, JWKSInvalid, VerifierError
from verifier.fetch import Fetcher, is_loopback_url
from verifier.jwks import JWKSet, SkippedKey, b64url_decode_lenient
from verifier.profiles import get_profile
from verifier.session import Session
from verifier.tokens import TokenVerifier, check_size

from .bake import (
    ISSUER_VAR,
    BakeNotFound,
    BakeResult,
    OutputNotWritable,
    append_github_env,
    bake_age,
    compare,
    env_file_value,
    env_lines,
    read_current_bake,
    rsa_alg_warnings,
    utc_now,
    write_env_file,
    write_json_file,
)
from .bake import bake as run_bake
from .detect import PROFILE_VAR, describe, detect

__all__ = ["EXIT_CODES", "Seams", "app", "main", "make_fetcher", "printable"]

OK, FAILED, USAGE, ISSUER, OUTPUT, UNEXPECTED = 0, 1, 2, 3, 4, 70
EXIT_CODES = {
    OK: "ok",
    FAILED: "drift (check) or an invalid token (inspect)",
    USAGE: "usage or configuration error",
    ISSUER: "the issuer could not be reached or returned unusable keys",
    OUTPUT: "an output could not be written",
    UNEXPECTED: "unexpected error",
}
#: More than any token an edge would accept; stdin is not read past this.
_MAX_STDIN = 1024 * 1024


# -- seams --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seams:
    """The I/O every command uses; tests replace it through ``ctx.obj``."""

    transport: httpx2.AsyncBaseTransport | None = None
    #: Monotonic clock, sleep and jitter for the fetcher's timeouts and retries.
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    jitter: Callable[[], float] = random.random
    #: Wall clock: ``baked_at``, the bake's age, token expiry.
    now: Callable[[], datetime] = utc_now
    #: ``serve`` calls this instead of ``uvicorn.run(app, **options)`` when set.
    run_server: Callable[..., None] | None = None


def _seams(ctx: typer.Context) -> Seams:
    obj = ctx.find_root().obj
    if obj is None:
        return Seams()
    if isinstance(obj, Seams):
        return obj
    if isinstance(obj, Mapping):
        return Seams(**obj)
    raise TypeError("ctx.obj must be a Seams or a mapping of its fields")


def make_fetcher(seams: Seams, *, timeout: float, deadline: float) -> Fetcher:
    """The fetcher for one command, over the injected transport and clocks."""
    return Fetcher(
        transport=seams.transport,
        timeout=timeout,
        deadline=deadline,
        clock=seams.clock,
        sleep=seams.sleep,
        jitter=seams.jitter,
    )


# -- the app ------------------------------------------------------------------


class _Guarded(TyperGroup):
    """Turns any unexpected exception into one line and exit 70.

    It sits on the group, so every command (present and future) is covered.
    Typer's own exits and usage errors pass through untouched.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        # The top of the program is the one place a blanket catch is right: the
        # message could quote a token, so only the type is reported.
        except Exception as exc:  # noqa: BLE001
            _console().print(
                f"jwtedge: unexpected error ({type(exc).__name__}); please report it",
                style="bold red",
                markup=False,
            )
            raise typer.Exit(UNEXPECTED) from None


app = typer.Typer(
    name="jwtedge",
    help="Bake an issuer's public keys into config, check them for drift, inspect tokens, "
    "serve the edge app, or run the demo.",
    epilog="Exit codes: 0 ok; 1 drift or an invalid token; 2 usage or configuration error; "
    "3 issuer unreachable or unusable keys; 4 output not writable; 70 unexpected error.",
    cls=_Guarded,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def main() -> None:
    """Console-script entry point (``jwtedge``)."""
    app(prog_name="jwtedge")


# -- output helpers -----------------------------------------------------------


def _console() -> Console:
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


def _json_printable(text: str) -> str:
    """JSON text (or a dotenv line quoting it) with what ``printable`` escapes as ``\\uXXXX``.

    JSON encoders escape C0 controls already, so what is left (DEL, C1,
    separators, bidi overrides) can only sit inside strings, where the JSON
    escape means the same character: the value reads back unchanged.
    """
    return _UNPRINTABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _say(message: str, style: str | None = None) -> None:
    _console().print(printable(message), style=style, markup=False)


def _warn(message: str) -> None:
    _say(f"jwtedge: warning: {message}", "yellow")


def _exit(code: int, message: str) -> NoReturn:
    _say(f"jwtedge: {message}", "bold red")
    raise typer.Exit(code)


def _name_skipped(skipped: Sequence[SkippedKey], what: str) -> None:
    for key in skipped:
        _say(f"  {what} {key.describe()}", "yellow")


def _human_duration(seconds: float) -> str:
    seconds = int(abs(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def _http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _check_timing(timeout: float, deadline: float) -> None:
    if not timeout > 0 or not deadline > 0:
        _exit(USAGE, "--timeout and --deadline must be positive numbers of seconds")


def _skip_loopback(urls: Sequence[str | None], allow: bool, outcome: str) -> None:
    # A release build that can reach a loopback issuer is almost always baking a
    # dev issuer's keys by mistake; skipping (exit 0) keeps local builds working.
    loopback = next((url for url in urls if url and is_loopback_url(url)), None)
    if loopback is not None and not allow:
        _warn(
            f"{loopback} is a loopback address: {outcome} "
            "(pass --allow-loopback to use a local issuer)"
        )
        raise typer.Exit(OK)


def _key_failure(exc: JWKSFetchFailed | JWKSInvalid, source: str, doing: str) -> str:
    """One line naming the URL and the cause (fetch errors name their URL)."""
    if isinstance(exc, JWKSFetchFailed):
        return f"{doing}: {exc.message}"
    return f"{doing}: the key set from {source} is refused: {exc.message}"


def _summary(result: BakeResult) -> None:
    console = _console()
    console.print(
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
    console.print(table)
    console.print(Text(printable(f"sha256 {result.meta['sha256']}"), style="dim"))


# -- bake ---------------------------------------------------------------------

IssuerOption = Annotated[
    str | None,
    typer.Option(
        "--issuer",
        envvar=ISSUER_VAR,
        help="Issuer URL; its discovery document must name exactly this issuer.",
        show_default=False,
    ),
]
JwksUrlOption = Annotated[
    str | None,
    typer.Option(
        "--jwks-url",
        help="Fetch the key set from this URL and skip discovery.",
        show_default=False,
    ),
]
AllowLoopbackOption = Annotated[
    bool,
    typer.Option(
        "--allow-loopback",
        help="Use an issuer on 127.0.0.1 / localhost (skipped by default, so a dev "
        "issuer is never baked into a release).",
    ),
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="Seconds allowed for each HTTP attempt.")
]
DeadlineOption = Annotated[
    float,
    typer.Option("--deadline", help="Seconds allowed for the whole fetch, retries included."),
]


async def _fetch_bake(
    seams: Seams, issuer: str, jwks_url: str | None, timeout: float, deadline: float
) -> BakeResult:
    async with make_fetcher(seams, timeout=timeout, deadline=deadline) as fetcher:
        return await run_bake(issuer, jwks_url=jwks_url, fetcher=fetcher, now=seams.now)


@app.command()
def bake(
    ctx: typer.Context,
    issuer: IssuerOption = None,
    jwks_url: JwksUrlOption = None,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            help="Dotenv file to update in place (other lines kept; created with mode 0600).",
            show_default=False,
        ),
    ] = None,
    json_file: Annotated[
        Path | None,
        typer.Option(
            "--json-file",
            help='Write {"jwks": ..., "jwks_meta": ...} to this file.',
            show_default=False,
        ),
    ] = None,
    github_env: Annotated[
        bool,
        typer.Option("--github-env", help="Append both settings to $GITHUB_ENV (GitHub Actions)."),
    ] = False,
    fallback: Annotated[
        bool,
        typer.Option(
            "--fallback",
            help="When the issuer cannot be reached, warn and exit 0 with outputs untouched, "
            "so the app fetches keys at run time.",
        ),
    ] = False,
    allow_loopback: AllowLoopbackOption = False,
    write_profile: Annotated[
        bool,
        typer.Option(
            "--write-profile",
            help=f"Also write {PROFILE_VAR}, the claims profile of the issuer the bake "
            "recognised (never written without this option).",
        ),
    ] = False,
    timeout: TimeoutOption = 5.0,
    deadline: DeadlineOption = 30.0,
) -> None:
    """Fetch the issuer's public keys and bake them into the app's config.

    Writes APP_CONFIG_AUTH__JWKS (the canonical key set: the same bytes for
    the same keys) and APP_CONFIG_AUTH__JWKS_META (issuer, endpoints,
    baked_at, sha256, kids) to the chosen outputs, or prints both lines on
    stdout when none is chosen. Only the issuer is read from the environment
    (or from the env file), never the whole config, so a broken bake can be
    repaired. Fails closed: nothing is written unless the whole bake succeeds.

    The bake also recognises the issuer (Clerk, Keycloak, Entra, ...) from its
    URL and discovery document and prints the claims profile and the settings
    it needs; --write-profile writes the profile with the keys.
    """
    seams = _seams(ctx)
    _check_timing(timeout, deadline)
    github_path = None
    if github_env:
        github_path = os.environ.get("GITHUB_ENV")
        if not github_path:
            _exit(USAGE, "--github-env needs $GITHUB_ENV, which GitHub Actions sets")
    if not issuer and env_file is not None:
        issuer = env_file_value(env_file, ISSUER_VAR)
    if not issuer:
        _exit(USAGE, f"no issuer: pass --issuer URL or set {ISSUER_VAR}")
    for name, url in (("issuer", issuer), ("--jwks-url", jwks_url)):
        if url is None or _http_url(url):
            continue
        if name != "issuer" or not _stytch_with_keys(url, jwks_url):
            _exit(USAGE, f"the {name} is not an http(s) URL: {url}")
    _skip_loopback((issuer, jwks_url), allow_loopback, "bake skipped, nothing written")

    source = jwks_url or issuer
    try:
        result = asyncio.run(_fetch_bake(seams, issuer, jwks_url, timeout, deadline))
    except JWKSFetchFailed as exc:
        if fallback:
            _warn(
                f"cannot bake keys ({exc.message}); --fallback: outputs untouched, "
                "the app will fetch keys at run time"
            )
            raise typer.Exit(OK) from None
        if jwks_url is None:
            _suggest_jwks_url(issuer)
        _exit(ISSUER, _key_failure(exc, source, "cannot bake keys"))
    except JWKSInvalid as exc:
        _say(f"jwtedge: {_key_failure(exc, source, 'cannot bake keys')}", "bold red")
        _name_skipped(exc.context.get("skipped", ()), "skipped")
        raise typer.Exit(ISSUER) from None

    if result.jwks.skipped:
        _warn(f"{len(result.jwks.skipped)} key(s) not baked:")
        _name_skipped(result.jwks.skipped, "skipped")
    for warning in rsa_alg_warnings(result.jwks):
        _warn(warning)
    _summary(result)
    result = _recognise(result, issuer, write_profile)

    try:
        if env_file is not None:
            write_env_file(env_file, result)
            _say(f"wrote {env_file}", "dim")
        if json_file is not None:
            write_json_file(json_file, result)
            _say(f"wrote {json_file}", "dim")
        if github_path is not None:
            append_github_env(Path(github_path), result)
            _say("appended to $GITHUB_ENV", "dim")
    except OutputNotWritable as exc:
        _exit(OUTPUT, f"cannot write {exc.path}: {exc.reason}")
    if env_file is None and json_file is None and github_path is None:
        for line in env_lines(result):
            typer.echo(_json_printable(line))


def _stytch_with_keys(issuer: str, jwks_url: str | None) -> bool:
    """Stytch's ``stytch.com/<project>`` issuer: usable with a key URL, which it needs."""
    if not STYTCH_ISSUER.match(issuer):
        return False
    if jwks_url is None:
        _suggest_jwks_url(issuer)
        _exit(USAGE, f"{issuer} is not a URL and serves no discovery: pass --jwks-url")
    return True


def _suggest_jwks_url(issuer: str) -> None:
    """After a failed discovery: where a recognised issuer publishes its keys, if known."""
    detection = detect(issuer)
    if detection is None:
        return
    for setting in detection.settings:
        if setting.name == "--jwks-url":
            _say(f"{detection.name} publishes its keys elsewhere: try {setting.line()}", "cyan")


def _recognise(result: BakeResult, issuer: str, write_profile: bool) -> BakeResult:
    """Print the detected profile and its settings; set it on the result when asked."""
    metadata = result.metadata
    detection = detect(issuer, metadata.document, jwks_uri=metadata.jwks_uri)
    for line in describe(detection):
        _say(line, "cyan")
    if detection is None:
        if write_profile:
            _warn(f"--write-profile: no issuer recognised, {PROFILE_VAR} not written")
        return result
    if not write_profile:
        # Never by default: a team whose issuer already emits jwtedge's own claim
        # shape would lose its organizations to a profile it did not ask for.
        _say(f"{PROFILE_VAR} not written: pass --write-profile to write it", "dim")
        return result
    return replace(result, profile=detection.profile)


# -- check --------------------------------------------------------------------


async def _fetch_live(
    seams: Seams, issuer: str, jwks_url: str | None, timeout: float, deadline: float
) -> JWKSet:
    async with make_fetcher(seams, timeout=timeout, deadline=deadline) as fetcher:
        return (await fetcher.fetch(issuer, jwks_url=jwks_url)).jwks


@app.command()
def check(
    ctx: typer.Context,
    issuer: Annotated[
        str | None,
        typer.Option(
            "--issuer",
            help="Issuer URL (default: APP_CONFIG_AUTH__ISSUER next to the bake, then "
            "the issuer recorded in the bake).",
            show_default=False,
        ),
    ] = None,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            help="Read the bake from this dotenv file only (default: the environment, then "
            "$APP_CONFIG_ENV_FILE or .env, as the app does).",
            show_default=False,
        ),
    ] = None,
    jwks_url: JwksUrlOption = None,
    allow_loopback: AllowLoopbackOption = False,
    max_age: Annotated[
        str | None,
        typer.Option(
            "--max-age",
            help="Also drift when the bake is older than this (7d, 12h, 3600).",
            show_default=False,
        ),
    ] = None,
    timeout: TimeoutOption = 5.0,
    deadline: DeadlineOption = 30.0,
) -> None:
    """Compare the baked keys with the issuer's live keys.

    Usable signing keys are compared by kid and RFC 7638 thumbprint: a key
    the issuer added, a key it dropped, or a new key under an old kid is
    drift. Exit 0 in sync, 1 drift (each difference on stdout), 2 no bake
    found, 3 the issuer could not be reached or its keys are unusable.
    """
    seams = _seams(ctx)
    _check_timing(timeout, deadline)
    limit = None
    if max_age is not None:
        try:
            limit = parse_duration(max_age)
        except ValueError as exc:
            _exit(USAGE, f"--max-age: {exc}")
    try:
        current = read_current_bake(env_file, os.environ)
    except BakeNotFound as exc:
        _exit(USAGE, str(exc))
    meta = current.meta
    issuer = issuer or current.issuer or (meta.issuer if meta else None)
    if not issuer:
        _exit(USAGE, f"no issuer: pass --issuer URL or set {ISSUER_VAR}")
    if STYTCH_ISSUER.match(issuer) and jwks_url is None and meta is not None:
        jwks_url = meta.jwks_uri  # Stytch's issuer has no discovery: where the bake fetched
    if not _http_url(issuer) and not _stytch_with_keys(issuer, jwks_url):
        _exit(USAGE, f"the issuer is not an http(s) URL: {issuer}")
    _skip_loopback((issuer, jwks_url), allow_loopback, "check skipped")
    if meta is not None and meta.issuer != issuer:
        _warn(f"the bake in {current.source} was made for {meta.issuer}, not {issuer}")
    if meta is not None and meta.sha256 and meta.sha256 != current.jwks.sha256:
        _warn(f"the baked key set in {current.source} does not match its recorded sha256")

    source = jwks_url or issuer
    try:
        live = asyncio.run(_fetch_live(seams, issuer, jwks_url, timeout, deadline))
    except (JWKSFetchFailed, JWKSInvalid) as exc:
        _say(f"jwtedge: {_key_failure(exc, source, 'cannot check keys')}", "bold red")
        if isinstance(exc, JWKSInvalid):
            _name_skipped(exc.context.get("skipped", ()), "skipped")
        raise typer.Exit(ISSUER) from None
    if live.skipped:
        _warn(f"{len(live.skipped)} live key(s) not usable, not compared:")
        _name_skipped(live.skipped, "skipped")

    drift = compare(current.jwks, live)
    lines = drift.lines()
    age = bake_age(meta, seams.now())
    if limit is not None:
        if age is None:
            lines.append("stale: the bake does not record baked_at")
        elif age > limit:
            lines.append(
                f"stale: baked {_human_duration(age)} ago, more than --max-age "
                f"{_human_duration(limit)}"
            )
    for line in lines:
        typer.echo(printable(line))
    if lines:
        _say(f"jwtedge: drift between {current.source} and {source}", "bold yellow")
        raise typer.Exit(FAILED)
    baked = f", baked {_human_duration(age)} ago" if age is not None else ""
    _say(f"in sync: {len(live)} key(s) match {source}{baked}", "green")


# -- inspect ------------------------------------------------------------------


def _unverified(token: str, max_bytes: int) -> dict[str, Any]:
    """Header and claims decoded without any check, for display only.

    Nothing is decoded from a token over ``auth.max_token_bytes``.
    """
    decoded: dict[str, Any] = {"header": None, "claims": None}
    if len(token) > max_bytes:
        return decoded
    parts = token.split(".")
    if len(parts) != 3:
        return decoded
    for name, segment in (("header", parts[0]), ("claims", parts[1])):
        try:
            value = orjson.loads(b64url_decode_lenient(segment))
        except (ValueError, orjson.JSONDecodeError):
            continue
        decoded[name] = value if isinstance(value, dict) else None
    return decoded


def _read_tokens(token: str, id_token: str | None) -> tuple[str, str | None]:
    """The access and ID tokens; ``-`` reads stdin (the access token first)."""
    wanted = [token] if id_token is None else [token, id_token]
    expected = wanted.count("-")
    piped: list[str] = []
    if expected:
        if sys.stdin.isatty():
            _say("reading the token from stdin (end with Ctrl-D)", "dim")
        text = sys.stdin.read(_MAX_STDIN + 1)
        if len(text) > _MAX_STDIN:
            _exit(USAGE, "the input on stdin is too large to be a token")
        # A pasted "Bearer <token>" header value works too.
        piped = [part for part in text.split() if part.lower() != "bearer"]
        if len(piped) != expected:
            _exit(
                USAGE,
                f"expected {expected} token(s) on stdin, found {len(piped)} (tokens are not shown)",
            )
    supply = iter(piped)
    resolved = [next(supply) if value == "-" else value for value in wanted]
    return resolved[0], resolved[1] if len(resolved) > 1 else None


def _session_lines(session: Session, now: datetime) -> list[str]:
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
    when = f"in {_human_duration(left)}" if left >= 0 else f"{_human_duration(left)} ago"
    lines.append(f"expires: {expires.isoformat().replace('+00:00', 'Z')} ({when})")
    return lines


def _with_profile(config: AppConfig, name: str) -> AppConfig:
    """``config`` with ``claims.profile`` replaced; a usage error naming the known ones."""
    try:
        get_profile(name)
    except KeyError as exc:
        _exit(USAGE, f"--profile: {exc.args[0]}")
    claims = config.claims.model_copy(update={"profile": name})
    return config.model_copy(update={"claims": claims})


def _mapping_preview(
    verifier: TokenVerifier, claims: Mapping[str, Any], id_claims: Mapping[str, Any] | None
) -> Session | VerifierError:
    """How the profile reads claims that did not verify: for display only, labelled so."""
    try:
        verifier.subject(claims)  # claims_invalid when the profile's subject is missing
        exp = claims.get("exp")
        dated = claims if type(exp) in (int, float) else {**claims, "exp": 0}
        return verifier._build_session(dated, id_claims)
    except VerifierError as exc:
        return exc


def _json_text(value: object) -> str:
    """Indented JSON for text output: readable non-ASCII, every control escaped (valid JSON).

    orjson escapes C0 controls inside strings, so every raw newline is the
    indentation's own.
    """
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode("utf-8")
    return "\n".join(_json_printable(line) for line in text.split("\n"))


def _json_document(value: object) -> str:
    """``--json`` output: plain JSON, every non-ASCII and control character escaped once."""
    return json.dumps(value, indent=2, ensure_ascii=True, allow_nan=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def inspect(
    ctx: typer.Context,
    token: Annotated[
        str,
        typer.Argument(
            metavar="TOKEN|-",
            help="The access token, or - (the default) to read it from stdin, which keeps "
            "tokens out of shell history.",
            show_default=False,
        ),
    ] = "-",  # noqa: S107 - "-" means stdin, not a password
    id_token: Annotated[
        str | None,
        typer.Option(
            "--id-token",
            metavar="TOKEN|-",
            help="Also verify this ID token with the access token; - reads it from stdin "
            "after the access token.",
            show_default=False,
        ),
    ] = None,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            help="Read the config from this dotenv file (default: $APP_CONFIG_ENV_FILE or .env).",
            show_default=False,
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON document for machines.")
    ] = False,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            metavar="NAME",
            help="Map the claims with this issuer profile instead of APP_CONFIG_CLAIMS__PROFILE "
            "(clerk, keycloak, entra...); a token that does not verify is still mapped, "
            "labelled unverified.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Decode a token, verify it against the bake and show the session.

    The header and claims are shown as decoded, unverified; the verdict says
    whether the token verifies against the baked keys and the app's config
    (issuer, audience, expiry...). The token itself and its signature are
    never printed. Exit 0 valid, 1 invalid, 2 usage or configuration error.
    With --profile NAME the claims are mapped by that issuer profile, so you
    can see how a token reads before switching.
    """
    if ctx.args:
        # Never echo them: a stray argument may be a token.
        _exit(USAGE, f"{len(ctx.args)} unexpected argument(s) (not shown: they may hold a token)")
    seams = _seams(ctx)
    access, id_tok = _read_tokens(token, id_token)
    if not access:
        _exit(USAGE, "no token given")
    try:
        config = AppConfig() if env_file is None else AppConfig(_env_file=env_file)
    except ConfigInvalid as exc:
        _exit(USAGE, exc.message)
    if config.auth.jwks is None:
        _exit(USAGE, "no baked keys in the config (APP_CONFIG_AUTH__JWKS): run jwtedge bake")
    now = seams.now()
    if profile is not None:
        config = _with_profile(config, profile)
    try:
        verifier = TokenVerifier.from_config(config, now=lambda: seams.now().timestamp())
    except ValueError as exc:
        # Only a --profile the rest of the config does not suit gets here.
        _exit(USAGE, f"--profile {profile}: {exc}")

    error: VerifierError | None = None
    session: Session | None = None
    max_bytes = config.auth.max_token_bytes
    try:
        # The size cap before anything decodes them, the display included.
        check_size(access, max_bytes)
        check_size(id_tok or "", max_bytes)
        session = verifier.session(access, id_tok)
    except VerifierError as exc:
        error = exc

    decoded = {"access_token": _unverified(access, max_bytes), "id_token": None}
    if id_tok is not None:
        decoded["id_token"] = _unverified(id_tok, max_bytes)
    preview: Session | VerifierError | None = None
    access_claims = decoded["access_token"]["claims"] if decoded["access_token"] else None
    if profile is not None and error is not None and access_claims:
        id_parts = decoded["id_token"]
        preview = _mapping_preview(
            verifier, access_claims, id_parts["claims"] if id_parts else None
        )
    if json_output:
        document = {
            "valid": error is None,
            "verdict": "valid" if error is None else "invalid",
            "error": None if error is None else {"code": error.code, "message": error.message},
            "profile": verifier.profile.name,
            "session": session.to_dict() if session is not None else None,
            **{
                name: None
                if parts is None
                else {"unverified_header": parts["header"], "unverified_claims": parts["claims"]}
                for name, parts in decoded.items()
            },
        }
        if preview is not None:
            document["unverified_session"] = (
                preview.to_dict()
                if isinstance(preview, Session)
                else {"error": {"code": preview.code, "message": preview.message}}
            )
        typer.echo(_json_document(document))
    else:
        for name, parts in decoded.items():
            if parts is None:
                continue
            label = name.replace("_", " ")
            for part in ("header", "claims"):
                value = parts[part]
                shown = _json_text(value) if value is not None else "(not decodable)"
                typer.echo(f"{label} {part} (unverified): {shown}")
        if error is None:
            typer.echo("verdict: valid")
        else:
            typer.echo(f"verdict: invalid ({error.code}): {printable(error.message)}")
        typer.echo(f"profile: {printable(verifier.profile.name)}")
        if session is not None:
            for line in _session_lines(session, now):
                typer.echo(printable(line))
        elif isinstance(preview, Session):
            typer.echo("mapped from the unverified claims (the token did not verify):")
            for line in _session_lines(preview, now):
                typer.echo(f"  {printable(line)}")
        elif preview is not None:
            typer.echo(
                f"the unverified claims do not map ({preview.code}): {printable(preview.message)}"
            )
    if error is not None:
        raise typer.Exit(FAILED)


# serve and demo live in deploy/run.py (this module is long enough); importing
# it registers them on `app`. Imported last: run.py imports from this module.
from . import run as _run  # noqa: E402, F401

if __name__ == "__main__":
    # `python -m deploy.cli`: run the package module's app, on which run.py
    # registered its commands (this __main__ copy has none of them).
    from deploy.cli import main as _main

    _main()
