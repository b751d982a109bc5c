"""``jwtedge inspect``: decode a token, verify it against the bake, show the session.

Tokens are read from stdin by default so they stay out of shell history;
the header and claims are shown as decoded (unverified), the verdict says
whether the token verifies against the baked keys and the app's config, and
neither the token nor its signature is ever printed. ``--profile`` maps the
claims with another issuer profile, labelled unverified when the token does
not verify.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from verifier.config import AppConfig
from verifier.errors import ConfigInvalid, VerifierError
from verifier.jwks import b64url_decode_lenient
from verifier.profiles import get_profile
from verifier.session import Session
from verifier.tokens import TokenVerifier, check_size

from .console import FAILED, USAGE, exit_with, printable, say
from .report import json_document, json_text, session_lines
from .seams import seams_of

__all__ = ["INSPECT_SETTINGS", "inspect"]

#: More than any token an edge would accept; stdin is not read past this.
_MAX_STDIN = 1024 * 1024
#: Extra arguments are taken, then refused without echoing them (they may be tokens).
INSPECT_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}


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
            say("reading the token from stdin (end with Ctrl-D)", "dim")
        text = sys.stdin.read(_MAX_STDIN + 1)
        if len(text) > _MAX_STDIN:
            exit_with(USAGE, "the input on stdin is too large to be a token")
        # A pasted "Bearer <token>" header value works too.
        piped = [part for part in text.split() if part.lower() != "bearer"]
        if len(piped) != expected:
            exit_with(
                USAGE,
                f"expected {expected} token(s) on stdin, found {len(piped)} (tokens are not shown)",
            )
    supply = iter(piped)
    resolved = [next(supply) if value == "-" else value for value in wanted]
    return resolved[0], resolved[1] if len(resolved) > 1 else None


def _with_profile(config: AppConfig, name: str) -> AppConfig:
    """``config`` with ``claims.profile`` replaced; a usage error naming the known ones."""
    try:
        get_profile(name)
    except KeyError as exc:
        exit_with(USAGE, f"--profile: {exc.args[0]}")
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
        exit_with(
            USAGE, f"{len(ctx.args)} unexpected argument(s) (not shown: they may hold a token)"
        )
    seams = seams_of(ctx)
    access, id_tok = _read_tokens(token, id_token)
    if not access:
        exit_with(USAGE, "no token given")
    try:
        config = AppConfig() if env_file is None else AppConfig(_env_file=env_file)
    except ConfigInvalid as exc:
        exit_with(USAGE, exc.message)
    if config.auth.jwks is None:
        exit_with(USAGE, "no baked keys in the config (APP_CONFIG_AUTH__JWKS): run jwtedge bake")
    now = seams.now()
    if profile is not None:
        config = _with_profile(config, profile)
    try:
        verifier = TokenVerifier.from_config(config, now=lambda: seams.now().timestamp())
    except ValueError as exc:
        # Only a --profile the rest of the config does not suit gets here.
        exit_with(USAGE, f"--profile {profile}: {exc}")

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
        typer.echo(json_document(document))
    else:
        for name, parts in decoded.items():
            if parts is None:
                continue
            label = name.replace("_", " ")
            for part in ("header", "claims"):
                value = parts[part]
                shown = json_text(value) if value is not None else "(not decodable)"
                typer.echo(f"{label} {part} (unverified): {shown}")
        if error is None:
            typer.echo("verdict: valid")
        else:
            typer.echo(f"verdict: invalid ({error.code}): {printable(error.message)}")
        typer.echo(f"profile: {printable(verifier.profile.name)}")
        if session is not None:
            for line in session_lines(session, now):
                typer.echo(printable(line))
        elif isinstance(preview, Session):
            typer.echo("mapped from the unverified claims (the token did not verify):")
            for line in session_lines(preview, now):
                typer.echo(f"  {printable(line)}")
        elif preview is not None:
            typer.echo(
                f"the unverified claims do not map ({preview.code}): {printable(preview.message)}"
            )
    if error is not None:
        raise typer.Exit(FAILED)
