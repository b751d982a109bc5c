"""``jwtedge bake`` and ``jwtedge check``: fetch the issuer's keys, then write or compare them.

``bake`` reads only the issuer (and its own options), never the whole
config, so a broken bake can be repaired, and fails closed: nothing is
written unless the whole bake succeeds. ``check`` compares the baked keys
with the live ones by kid and RFC 7638 thumbprint. Both skip a loopback
issuer unless told otherwise, so a dev issuer's keys never reach a release.
The bake and drift logic itself lives in :mod:`deploy.bake`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from verifier.config import STYTCH_ISSUER, parse_duration
from verifier.errors import JWKSFetchFailed, JWKSInvalid
from verifier.fetch import is_loopback_url
from verifier.jwks import JWKSet

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
    write_env_file,
    write_json_file,
)
from .bake import bake as run_bake
from .console import (
    FAILED,
    ISSUER,
    OK,
    OUTPUT,
    USAGE,
    exit_with,
    human_duration,
    json_printable,
    name_skipped,
    printable,
    say,
    warn,
)
from .detect import PROFILE_VAR, describe, detect
from .report import bake_summary
from .seams import Seams, make_fetcher, seams_of

__all__ = ["bake", "check"]


def _http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _check_timing(timeout: float, deadline: float) -> None:
    if not timeout > 0 or not deadline > 0:
        exit_with(USAGE, "--timeout and --deadline must be positive numbers of seconds")


def _skip_loopback(urls: Sequence[str | None], allow: bool, outcome: str) -> None:
    # A release build that can reach a loopback issuer is almost always baking a
    # dev issuer's keys by mistake; skipping (exit 0) keeps local builds working.
    loopback = next((url for url in urls if url and is_loopback_url(url)), None)
    if loopback is not None and not allow:
        warn(
            f"{loopback} is a loopback address: {outcome} "
            "(pass --allow-loopback to use a local issuer)"
        )
        raise typer.Exit(OK)


def _key_failure(exc: JWKSFetchFailed | JWKSInvalid, source: str, doing: str) -> str:
    """One line naming the URL and the cause (fetch errors name their URL)."""
    if isinstance(exc, JWKSFetchFailed):
        return f"{doing}: {exc.message}"
    return f"{doing}: the key set from {source} is refused: {exc.message}"


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
    seams = seams_of(ctx)
    _check_timing(timeout, deadline)
    github_path = None
    if github_env:
        github_path = os.environ.get("GITHUB_ENV")
        if not github_path:
            exit_with(USAGE, "--github-env needs $GITHUB_ENV, which GitHub Actions sets")
    if not issuer and env_file is not None:
        issuer = env_file_value(env_file, ISSUER_VAR)
    if not issuer:
        exit_with(USAGE, f"no issuer: pass --issuer URL or set {ISSUER_VAR}")
    for name, url in (("issuer", issuer), ("--jwks-url", jwks_url)):
        if url is None or _http_url(url):
            continue
        if name != "issuer" or not _stytch_with_keys(url, jwks_url):
            exit_with(USAGE, f"the {name} is not an http(s) URL: {url}")
    _skip_loopback((issuer, jwks_url), allow_loopback, "bake skipped, nothing written")

    source = jwks_url or issuer
    try:
        result = asyncio.run(_fetch_bake(seams, issuer, jwks_url, timeout, deadline))
    except JWKSFetchFailed as exc:
        if fallback:
            warn(
                f"cannot bake keys ({exc.message}); --fallback: outputs untouched, "
                "the app will fetch keys at run time"
            )
            raise typer.Exit(OK) from None
        if jwks_url is None:
            _suggest_jwks_url(issuer)
        exit_with(ISSUER, _key_failure(exc, source, "cannot bake keys"))
    except JWKSInvalid as exc:
        say(f"jwtedge: {_key_failure(exc, source, 'cannot bake keys')}", "bold red")
        name_skipped(exc.context.get("skipped", ()), "skipped")
        raise typer.Exit(ISSUER) from None

    if result.jwks.skipped:
        warn(f"{len(result.jwks.skipped)} key(s) not baked:")
        name_skipped(result.jwks.skipped, "skipped")
    for warning in rsa_alg_warnings(result.jwks):
        warn(warning)
    bake_summary(result)
    result = _recognise(result, issuer, write_profile)

    try:
        if env_file is not None:
            write_env_file(env_file, result)
            say(f"wrote {env_file}", "dim")
        if json_file is not None:
            write_json_file(json_file, result)
            say(f"wrote {json_file}", "dim")
        if github_path is not None:
            append_github_env(Path(github_path), result)
            say("appended to $GITHUB_ENV", "dim")
    except OutputNotWritable as exc:
        exit_with(OUTPUT, f"cannot write {exc.path}: {exc.reason}")
    if env_file is None and json_file is None and github_path is None:
        for line in env_lines(result):
            typer.echo(json_printable(line))


def _stytch_with_keys(issuer: str, jwks_url: str | None) -> bool:
    """Stytch's ``stytch.com/<project>`` issuer: usable with a key URL, which it needs."""
    if not STYTCH_ISSUER.match(issuer):
        return False
    if jwks_url is None:
        _suggest_jwks_url(issuer)
        exit_with(USAGE, f"{issuer} is not a URL and serves no discovery: pass --jwks-url")
    return True


def _suggest_jwks_url(issuer: str) -> None:
    """After a failed discovery: where a recognised issuer publishes its keys, if known."""
    detection = detect(issuer)
    if detection is None:
        return
    for setting in detection.settings:
        if setting.name == "--jwks-url":
            say(f"{detection.name} publishes its keys elsewhere: try {setting.line()}", "cyan")


def _recognise(result: BakeResult, issuer: str, write_profile: bool) -> BakeResult:
    """Print the detected profile and its settings; set it on the result when asked."""
    metadata = result.metadata
    detection = detect(issuer, metadata.document, jwks_uri=metadata.jwks_uri)
    for line in describe(detection):
        say(line, "cyan")
    if detection is None:
        if write_profile:
            warn(f"--write-profile: no issuer recognised, {PROFILE_VAR} not written")
        return result
    if not write_profile:
        # Never by default: a team whose issuer already emits jwtedge's own claim
        # shape would lose its organizations to a profile it did not ask for.
        say(f"{PROFILE_VAR} not written: pass --write-profile to write it", "dim")
        return result
    return replace(result, profile=detection.profile)


# -- check --------------------------------------------------------------------


async def _fetch_live(
    seams: Seams, issuer: str, jwks_url: str | None, timeout: float, deadline: float
) -> JWKSet:
    async with make_fetcher(seams, timeout=timeout, deadline=deadline) as fetcher:
        return (await fetcher.fetch(issuer, jwks_url=jwks_url)).jwks


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
    seams = seams_of(ctx)
    _check_timing(timeout, deadline)
    limit = None
    if max_age is not None:
        try:
            limit = parse_duration(max_age)
        except ValueError as exc:
            exit_with(USAGE, f"--max-age: {exc}")
    try:
        current = read_current_bake(env_file, os.environ)
    except BakeNotFound as exc:
        exit_with(USAGE, str(exc))
    meta = current.meta
    issuer = issuer or current.issuer or (meta.issuer if meta else None)
    if not issuer:
        exit_with(USAGE, f"no issuer: pass --issuer URL or set {ISSUER_VAR}")
    if STYTCH_ISSUER.match(issuer) and jwks_url is None and meta is not None:
        jwks_url = meta.jwks_uri  # Stytch's issuer has no discovery: where the bake fetched
    if not _http_url(issuer) and not _stytch_with_keys(issuer, jwks_url):
        exit_with(USAGE, f"the issuer is not an http(s) URL: {issuer}")
    _skip_loopback((issuer, jwks_url), allow_loopback, "check skipped")
    if meta is not None and meta.issuer != issuer:
        warn(f"the bake in {current.source} was made for {meta.issuer}, not {issuer}")
    if meta is not None and meta.sha256 and meta.sha256 != current.jwks.sha256:
        warn(f"the baked key set in {current.source} does not match its recorded sha256")

    source = jwks_url or issuer
    try:
        live = asyncio.run(_fetch_live(seams, issuer, jwks_url, timeout, deadline))
    except (JWKSFetchFailed, JWKSInvalid) as exc:
        say(f"jwtedge: {_key_failure(exc, source, 'cannot check keys')}", "bold red")
        if isinstance(exc, JWKSInvalid):
            name_skipped(exc.context.get("skipped", ()), "skipped")
        raise typer.Exit(ISSUER) from None
    if live.skipped:
        warn(f"{len(live.skipped)} live key(s) not usable, not compared:")
        name_skipped(live.skipped, "skipped")

    drift = compare(current.jwks, live)
    lines = drift.lines()
    age = bake_age(meta, seams.now())
    if limit is not None:
        if age is None:
            lines.append("stale: the bake does not record baked_at")
        elif age > limit:
            lines.append(
                f"stale: baked {human_duration(age)} ago, more than --max-age "
                f"{human_duration(limit)}"
            )
    for line in lines:
        typer.echo(printable(line))
    if lines:
        say(f"jwtedge: drift between {current.source} and {source}", "bold yellow")
        raise typer.Exit(FAILED)
    baked = f", baked {human_duration(age)} ago" if age is not None else ""
    say(f"in sync: {len(live)} key(s) match {source}{baked}", "green")
