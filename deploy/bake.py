"""Bake and drift logic, and the writers: no Typer, no printing.

A bake turns an issuer URL into two values the app's config reads:

- ``APP_CONFIG_AUTH__JWKS``: the canonical key set (keys sorted by kid,
  members in a fixed order, compact JSON), byte-identical for the same keys;
- ``APP_CONFIG_AUTH__JWKS_META``: the bake metadata (issuer, ``jwks_uri``, the
  endpoints, ``baked_at``, the SHA-256 of the key set and its kids), which
  changes with every bake and so lives on its own line;
- ``APP_CONFIG_CLAIMS__PROFILE``, only when asked (``--write-profile``): the
  claims profile of the issuer the bake recognised (:mod:`deploy.detect`).

Writers never leave a half-written file: they write a temporary file in the
same directory and ``os.replace`` it over the target, keeping the target's
mode. Nothing is written unless the whole bake succeeded, because the CLI
only calls a writer with a :class:`BakeResult` in hand.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from dotenv import dotenv_values
from dotenv.parser import parse_stream
from pydantic import ValidationError

from verifier.config import BakeMeta
from verifier.errors import JWKSInvalid
from verifier.fetch import Fetcher, IssuerMetadata
from verifier.jwks import JWKSet, parse_jwks

from .detect import PROFILE_VAR

__all__ = [
    "ENV_FILE_MODE",
    "ISSUER_VAR",
    "JSON_FILE_MODE",
    "JWKS_META_VAR",
    "JWKS_VAR",
    "PROFILE_VAR",
    "BakeNotFound",
    "BakeResult",
    "CurrentBake",
    "Drift",
    "OutputNotWritable",
    "append_github_env",
    "bake",
    "bake_age",
    "compare",
    "dotenv_json",
    "env_file_value",
    "env_lines",
    "github_env_block",
    "read_current_bake",
    "render_env_file",
    "rsa_alg_warnings",
    "utc_now",
    "write_env_file",
    "write_json_file",
]

ISSUER_VAR = "APP_CONFIG_AUTH__ISSUER"
JWKS_VAR = "APP_CONFIG_AUTH__JWKS"
JWKS_META_VAR = "APP_CONFIG_AUTH__JWKS_META"
ENV_FILE_VAR = "APP_CONFIG_ENV_FILE"
#: Mode of an env file the bake creates. The bake itself is public, but an env
#: file is where deployments keep their secrets too (client_secret,
#: hs_secret), so a new one starts private. An existing file keeps its mode.
ENV_FILE_MODE = 0o600
#: Mode of a JSON file the bake creates (public keys and metadata only).
JSON_FILE_MODE = 0o644

Now = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, in UTC (injectable wherever a bake is timed)."""
    return datetime.now(UTC)


# -- the bake -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BakeResult:
    """What one bake produced: the key set, its metadata, and how it went."""

    jwks: JWKSet
    #: :meth:`JWKSet.canonical_json`: the same bytes for the same keys.
    jwks_json: str
    #: A :class:`~verifier.config.BakeMeta`-compatible dict.
    meta: dict[str, Any]
    metadata: IssuerMetadata
    #: Size of the JWKS document in bytes, and seconds the fetch took.
    size: int
    elapsed: float
    #: The claims profile to write with the keys; ``None`` writes none.
    profile: str | None = None

    @property
    def meta_json(self) -> str:
        """Compact JSON of :attr:`meta`."""
        return orjson.dumps(self.meta).decode("utf-8")

    @property
    def values(self) -> dict[str, str]:
        """The settings by environment variable name: the key set and its metadata as
        raw JSON text, and the claims profile when :attr:`profile` is set."""
        values = {JWKS_VAR: self.jwks_json, JWKS_META_VAR: self.meta_json}
        if self.profile is not None:
            values[PROFILE_VAR] = self.profile
        return values


def rsa_alg_warnings(jwks: JWKSet) -> list[str]:
    """One line per baked RSA key without ``alg``: the app uses it with
    ``auth.rsa_alg`` only (RFC 8725 §3.1: one key, one algorithm), which
    silently refuses the tokens of an issuer that signs with another RSA
    algorithm, or with two (oidc-provider allows RS256 and PS256 on one key)."""
    return [
        f"key {key.kid or '(no kid)'} is RSA without an alg: the app verifies it with "
        "auth.rsa_alg only (APP_CONFIG_AUTH__RSA_ALG, default RS256); set that to the "
        "algorithm the issuer signs with, or give the issuer's key an alg"
        for key in jwks.keys
        if key.kty == "RSA" and key.alg is None
    ]


def _iso(moment: datetime) -> str:
    moment = moment.astimezone(UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def bake_meta(metadata: IssuerMetadata, jwks: JWKSet, baked_at: datetime) -> dict[str, Any]:
    """The metadata dict: issuer, endpoints, ``baked_at`` (UTC), sha256, kids."""
    return {
        "issuer": metadata.issuer,
        "jwks_uri": metadata.jwks_uri,
        "token_endpoint": metadata.token_endpoint,
        "authorization_endpoint": metadata.authorization_endpoint,
        "end_session_endpoint": metadata.end_session_endpoint,
        "revocation_endpoint": metadata.revocation_endpoint,
        "baked_at": _iso(baked_at),
        "sha256": jwks.sha256,
        "kids": [kid for kid in jwks.kids if kid is not None],
    }


async def bake(
    issuer: str, *, jwks_url: str | None = None, fetcher: Fetcher, now: Now = utc_now
) -> BakeResult:
    """Fetch and validate the issuer's keys and build both values.

    Raises :class:`~verifier.errors.JWKSFetchFailed` or
    :class:`~verifier.errors.JWKSInvalid`, exactly as :meth:`Fetcher.fetch`.
    """
    fetched = await fetcher.fetch(issuer, jwks_url=jwks_url)
    return BakeResult(
        jwks=fetched.jwks,
        jwks_json=fetched.jwks.canonical_json(),
        meta=bake_meta(fetched.metadata, fetched.jwks, now()),
        metadata=fetched.metadata,
        size=fetched.size,
        elapsed=fetched.elapsed,
    )


# -- dotenv encoding ----------------------------------------------------------


def dotenv_json(text: str) -> str:
    """Quote a JSON text for a dotenv file so python-dotenv reads it back exactly.

    python-dotenv expands ``${NAME}`` even inside single quotes and decodes
    ``\\\\`` and ``\\'`` there. ``$`` and ``'`` can only occur inside JSON
    strings, where ``\\u0024`` and ``\\u0027`` mean the same, so they are
    rewritten at the JSON level (never for ordinary keys, whose members are
    base64url); then backslashes are doubled for the dotenv layer. The result
    is deterministic, so the same keys still give the same line.
    """
    text = text.replace("$", "\\u0024").replace("'", "\\u0027")
    return "'" + text.replace("\\", "\\\\") + "'"


def env_lines(result: BakeResult) -> list[str]:
    """``NAME='<value>'`` lines for every setting, JWKS first."""
    return [f"{name}={dotenv_json(value)}" for name, value in result.values.items()]


# -- errors -------------------------------------------------------------------


class OutputNotWritable(Exception):
    """An output could not be written; ``reason`` never holds file content."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _reason(exc: OSError | UnicodeError) -> str:
    if isinstance(exc, UnicodeError):
        return "the file is not UTF-8 text"
    return exc.strerror or type(exc).__name__


# -- the env file writer ------------------------------------------------------


_EXPORT = re.compile(r"[ \t]*export[ \t]+")


def _name_pattern(name: str) -> re.Pattern[str]:
    # pydantic-settings matches names case-insensitively.
    return re.compile(rf"^{re.escape(name)}$", re.IGNORECASE)


def render_env_file(existing: str | None, assignments: Mapping[str, str]) -> str:
    """The env file with ``assignments`` (``NAME -> line``) set, everything else kept.

    Each setting replaces its first binding in place (however it was quoted,
    multi-line values included); later duplicates are dropped, since dotenv
    reads the last one. Settings not found are appended. Comments, blank lines
    and every other binding are kept byte for byte.
    """
    text = existing or ""
    newline = "\r\n" if "\r\n" in text else "\n"
    patterns = {name: _name_pattern(name) for name in assignments}
    done: set[str] = set()
    out: list[str] = []
    for binding in parse_stream(io.StringIO(text)):
        original = binding.original.string
        name = next(
            (n for n, p in patterns.items() if binding.key is not None and p.match(binding.key)),
            None,
        )
        if name is None:
            out.append(original)
            continue
        # The parser attaches blank lines before a binding to it; keep them.
        stripped = original.lstrip("\r\n")
        lead = original[: len(original) - len(stripped)]
        if name in done:
            out.append(lead)
            continue
        done.add(name)
        ending = stripped[len(stripped.rstrip("\r\n")) :] or newline
        export = _EXPORT.match(stripped)
        out.append(lead + (export.group(0) if export else "") + assignments[name] + ending)
    rendered = "".join(out)
    missing = [name for name in assignments if name not in done]
    if missing and rendered and not rendered.endswith(("\n", "\r")):
        rendered += newline
    for name in missing:
        rendered += assignments[name] + newline
    return rendered


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeError) as exc:
        raise OutputNotWritable(path, _reason(exc)) from exc


def _target(path: Path) -> Path:
    # Write through a symlink (a mounted secret, a shared .env) rather than
    # replacing the link with a regular file.
    return Path(os.path.realpath(path))


def atomic_write_text(path: Path, text: str, *, new_mode: int) -> None:
    """Replace ``path`` with ``text`` atomically, keeping its mode (and owner as root).

    A new file gets ``new_mode``. Raises :class:`OutputNotWritable`.
    """
    target = _target(path)
    try:
        current: os.stat_result | None = target.stat()
    except FileNotFoundError:
        current = None
    except OSError as exc:
        raise OutputNotWritable(path, _reason(exc)) from exc
    if current is not None and not stat.S_ISREG(current.st_mode):
        raise OutputNotWritable(path, "not a regular file")
    tmp_name: str | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        if current is None:
            os.chmod(tmp_name, new_mode)
        else:
            os.chmod(tmp_name, stat.S_IMODE(current.st_mode))
            if os.geteuid() == 0:
                os.chown(tmp_name, current.st_uid, current.st_gid)
        os.replace(tmp_name, target)
        tmp_name = None
    except OSError as exc:
        raise OutputNotWritable(path, _reason(exc)) from exc
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def write_env_file(path: Path, result: BakeResult) -> None:
    """Set the bake's settings in the dotenv file at ``path`` (created with mode 0600)."""
    assignments = dict(zip(result.values, env_lines(result), strict=True))
    rendered = render_env_file(_read_text(path), assignments)
    atomic_write_text(path, rendered, new_mode=ENV_FILE_MODE)


def write_json_file(path: Path, result: BakeResult) -> None:
    """Write ``{"jwks": {...}, "jwks_meta": {...}}`` to ``path`` atomically.

    With a profile, ``"claims": {"profile": ...}`` too (the config section's shape).
    """
    document: dict[str, Any] = {"jwks": orjson.loads(result.jwks_json), "jwks_meta": result.meta}
    if result.profile is not None:
        document["claims"] = {"profile": result.profile}
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    atomic_write_text(path, text.decode("utf-8"), new_mode=JSON_FILE_MODE)


# -- $GITHUB_ENV --------------------------------------------------------------


def github_env_block(values: Mapping[str, str], *, delimiter: str | None = None) -> str:
    """``NAME<<DELIM`` / value / ``DELIM`` blocks, the multi-line-safe form.

    The delimiter is random per call (as ``@actions/core`` does), so no value
    can end the block early.
    """
    delimiter = delimiter or f"ghadelimiter_{secrets.token_hex(16)}"
    blocks = []
    for name, value in values.items():
        if delimiter in value or delimiter in name:
            raise ValueError("the heredoc delimiter occurs in the value")
        blocks.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
    return "".join(blocks)


def append_github_env(path: Path, result: BakeResult) -> None:
    """Append every setting to the ``$GITHUB_ENV`` file (raw values, no quoting)."""
    block = github_env_block(result.values)
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(block)
    except OSError as exc:
        raise OutputNotWritable(path, _reason(exc)) from exc


# -- reading the current bake -------------------------------------------------


class BakeNotFound(Exception):
    """No usable bake where one was expected (a usage error, exit 2)."""


@dataclass(frozen=True, slots=True)
class CurrentBake:
    """The bake an app would load, read without building the whole AppConfig."""

    jwks: JWKSet
    meta: BakeMeta | None
    #: ``APP_CONFIG_AUTH__ISSUER`` from the same source, if set.
    issuer: str | None
    #: Where it was read: the env file path or ``"environment"``.
    source: str


def _lookup(values: Mapping[str, str | None], name: str) -> str | None:
    pattern = _name_pattern(name)
    found = None
    for key, value in values.items():
        if pattern.match(key) and value:
            found = value  # last one wins, as in dotenv and pydantic-settings
    return found


def read_current_bake(env_file: Path | None, environ: Mapping[str, str]) -> CurrentBake:
    """Read ``APP_CONFIG_AUTH__JWKS`` and ``…__JWKS_META``.

    With ``env_file`` only that file is read (it is what a bake wrote). Without
    it, as the app would: the environment first, then ``APP_CONFIG_ENV_FILE``
    (default ``.env``). Raises :class:`BakeNotFound` when nothing is baked or
    the baked values do not parse.
    """
    sources: list[tuple[str, Mapping[str, str | None]]] = []
    if env_file is not None:
        if not env_file.is_file():
            raise BakeNotFound(f"{env_file}: no such file")
        sources.append((str(env_file), _dotenv(env_file)))
    else:
        sources.append(("environment", environ))
        default = Path(_lookup(environ, ENV_FILE_VAR) or ".env")
        if default.is_file():
            sources.append((str(default), _dotenv(default)))
    for source, values in sources:
        raw = _lookup(values, JWKS_VAR)
        if raw is None:
            continue
        try:
            jwks = parse_jwks(raw)
        except JWKSInvalid as exc:
            # The message names the problem, never key material.
            raise BakeNotFound(f"{JWKS_VAR} in {source} is refused: {exc.message}") from exc
        raw_meta = _lookup(values, JWKS_META_VAR)
        meta = None
        if raw_meta is not None:
            try:
                meta = BakeMeta.model_validate_json(raw_meta)
            except ValidationError as exc:
                raise BakeNotFound(f"{JWKS_META_VAR} in {source} is not bake metadata") from exc
        return CurrentBake(jwks, meta, _lookup(values, ISSUER_VAR), source)
    where = " or ".join(source for source, _ in sources)
    raise BakeNotFound(f"no {JWKS_VAR} in {where}: run jwtedge bake first")


def env_file_value(path: Path, name: str) -> str | None:
    """One setting from a dotenv file, as python-dotenv reads it; ``None`` if absent.

    An unreadable or missing file counts as absent: callers fall back to
    asking for the value explicitly.
    """
    try:
        return _lookup(_dotenv(path), name)
    except BakeNotFound:
        return None


def _dotenv(path: Path) -> Mapping[str, str | None]:
    try:
        return dotenv_values(path, encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise BakeNotFound(f"{path}: {_reason(exc)}") from exc


# -- drift --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Drift:
    """How a bake differs from the live issuer's usable signing keys.

    Keys are matched by kid; a kid whose RFC 7638 thumbprint (or published
    ``alg``) differs is *changed*: a new key under an old kid. Keys without a
    kid are matched by thumbprint and named ``thumbprint:<value>``.
    """

    added_kids: tuple[str, ...] = ()
    dropped_kids: tuple[str, ...] = ()
    changed_kids: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added_kids or self.dropped_kids or self.changed_kids)

    def lines(self) -> list[str]:
        """One ``added|dropped|changed: <kid>`` line per difference."""
        return [
            f"{label}: {kid}"
            for label, kids in (
                ("added", self.added_kids),
                ("dropped", self.dropped_kids),
                ("changed", self.changed_kids),
            )
            for kid in kids
        ]


def _identities(jwks: JWKSet) -> dict[str, tuple[str, str | None]]:
    return {
        key.kid if key.kid is not None else f"thumbprint:{key.thumbprint}": (
            key.thumbprint,
            key.alg,
        )
        for key in jwks.keys
    }


def compare(baked: JWKSet, live: JWKSet) -> Drift:
    """Compare the usable signing keys of a bake with the live set."""
    old, new = _identities(baked), _identities(live)
    return Drift(
        added_kids=tuple(sorted(new.keys() - old.keys())),
        dropped_kids=tuple(sorted(old.keys() - new.keys())),
        changed_kids=tuple(sorted(kid for kid in old.keys() & new.keys() if old[kid] != new[kid])),
    )


def bake_age(meta: BakeMeta | None, now: datetime) -> float | None:
    """Seconds since ``meta.baked_at``; ``None`` when the bake does not say."""
    if meta is None or meta.baked_at is None:
        return None
    baked_at = meta.baked_at
    if baked_at.tzinfo is None:
        baked_at = baked_at.replace(tzinfo=UTC)
    return (now - baked_at).total_seconds()
