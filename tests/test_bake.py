"""deploy.bake: the bake, its two values, the writers and drift (no Typer, no network)."""

from __future__ import annotations

import io
import json
import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from dotenv import dotenv_values
from hypothesis import given
from hypothesis import strategies as st

from deploy.bake import (
    ENV_FILE_MODE,
    JSON_FILE_MODE,
    JWKS_META_VAR,
    JWKS_VAR,
    BakeNotFound,
    BakeResult,
    Drift,
    OutputNotWritable,
    append_github_env,
    bake,
    bake_age,
    compare,
    dotenv_json,
    env_file_value,
    env_lines,
    github_env_block,
    read_current_bake,
    render_env_file,
    write_env_file,
    write_json_file,
)
from verifier.config import AppConfig, BakeMeta
from verifier.fetch import Fetcher
from verifier.jwks import JWKSet, parse_jwks
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISSUER = "https://auth.example.com"
NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest.fixture(scope="module")
def dev() -> DevIssuer:
    return DevIssuer(issuer=ISSUER, audience="api", client_id="web")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("APP_CONFIG_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def transport_for(jwks: dict[str, Any], discovery: dict[str, Any]) -> httpx2.MockTransport:
    def handler(request: httpx2.Request) -> httpx2.Response:
        body = discovery if request.url.path.endswith("openid-configuration") else jwks
        return httpx2.Response(200, json=body)

    return httpx2.MockTransport(handler)


async def bake_from(
    dev: DevIssuer, *, jwks: dict[str, Any] | None = None, now: datetime = NOW
) -> BakeResult:
    transport = transport_for(jwks or dev.jwks(), dev.discovery())
    async with Fetcher(transport=transport) as fetcher:
        return await bake(ISSUER, fetcher=fetcher, now=lambda: now)


def result_for(jwks: JWKSet, meta: dict[str, Any] | None = None) -> BakeResult:
    """A BakeResult without any fetch, for writer tests with hand-made keys."""
    from verifier.fetch import IssuerMetadata

    metadata = IssuerMetadata(issuer=ISSUER, jwks_uri=f"{ISSUER}/jwks")
    return BakeResult(
        jwks=jwks,
        jwks_json=jwks.canonical_json(),
        meta=meta or {"issuer": ISSUER, "baked_at": "2026-01-02T03:04:05Z", "kids": []},
        metadata=metadata,
        size=0,
        elapsed=0.0,
    )


# -- the bake -------------------------------------------------------------------


async def test_bake_returns_canonical_set_and_bake_meta(dev: DevIssuer) -> None:
    result = await bake_from(dev)

    assert result.jwks_json == parse_jwks(dev.jwks()).canonical_json()
    meta = BakeMeta.model_validate(result.meta)
    assert meta.issuer == ISSUER
    assert meta.jwks_uri == f"{ISSUER}/jwks"
    assert meta.token_endpoint == f"{ISSUER}/token"
    assert meta.authorization_endpoint == f"{ISSUER}/authorize"
    assert meta.end_session_endpoint == f"{ISSUER}/logout"
    assert meta.revocation_endpoint == f"{ISSUER}/revoke"
    assert result.meta["baked_at"] == "2026-01-02T03:04:05Z"
    assert meta.baked_at == NOW.replace(microsecond=0)
    assert meta.sha256 == result.jwks.sha256
    assert meta.kids == sorted(dev.kids())
    assert result.values == {JWKS_VAR: result.jwks_json, JWKS_META_VAR: result.meta_json}


async def test_jwks_line_is_byte_identical_across_bakes_of_the_same_keys(dev: DevIssuer) -> None:
    shuffled = {"keys": list(reversed(dev.jwks()["keys"]))}
    first = await bake_from(dev, now=NOW)
    second = await bake_from(dev, jwks=shuffled, now=NOW + timedelta(hours=1))

    assert env_lines(first)[0] == env_lines(second)[0]
    assert env_lines(first)[1] != env_lines(second)[1]  # baked_at moved
    assert env_lines(first)[0].startswith(f"{JWKS_VAR}='{{")


# -- dotenv encoding --------------------------------------------------------------


@given(st.text(max_size=40))
def test_dotenv_json_reads_back_exactly_through_python_dotenv(kid: str) -> None:
    text = orjson.dumps({"keys": [{"kid": kid}]}).decode()
    line = f"NAME={dotenv_json(text)}\n"

    value = dotenv_values(stream=io.StringIO(line))["NAME"]

    assert value is not None
    assert orjson.loads(value) == {"keys": [{"kid": kid}]}


def test_dotenv_json_is_the_plain_json_for_ordinary_keys() -> None:
    text = '{"keys":[{"kty":"OKP","kid":"k-1","x":"abc_-"}]}'
    assert dotenv_json(text) == f"'{text}'"


def test_env_file_with_hostile_kid_loads_into_app_config(dev: DevIssuer, tmp_path: Path) -> None:
    kid = 'we\'ird $HOME ${HOME} "q" \\ # x'
    jwk = {**dev.jwks()["keys"][0], "kid": kid}
    jwks = parse_jwks({"keys": [jwk]})
    env = tmp_path / "app.env"
    env.write_text(f"APP_CONFIG_AUTH__ISSUER={ISSUER}\nAPP_CONFIG_AUTH__AUDIENCE=api\n")

    write_env_file(env, result_for(jwks))
    config = AppConfig(_env_file=env)

    assert config.auth.jwks is not None
    assert config.auth.jwks.kids == (kid,)
    assert config.auth.jwks.canonical_json() == jwks.canonical_json()


async def test_env_file_written_by_bake_verifies_the_issuers_tokens(
    dev: DevIssuer, tmp_path: Path
) -> None:
    env = tmp_path / ".env"
    env.write_text(f"APP_CONFIG_AUTH__ISSUER={ISSUER}\nAPP_CONFIG_AUTH__AUDIENCE=api\n")
    write_env_file(env, await bake_from(dev))

    config = AppConfig(_env_file=env)
    claims = TokenVerifier.from_config(config).verify_access(dev.access_token(sub="u7"))

    assert claims["sub"] == "u7"
    assert config.auth.jwks_meta is not None
    assert config.endpoint("token") == f"{ISSUER}/token"


# -- the env file -------------------------------------------------------------------

LINES = {JWKS_VAR: f"{JWKS_VAR}='new'", JWKS_META_VAR: f"{JWKS_META_VAR}='meta'"}


def test_env_file_keeps_other_lines_and_comments_and_replaces_in_place() -> None:
    before = (
        "# the app\n"
        "APP_CONFIG_AUTH__ISSUER=https://auth.example.com  # prod\n"
        "\n"
        f"{JWKS_VAR}='old'\n"
        'export FOO="bar baz"\n'
        f'{JWKS_META_VAR}="{{\\"old\\": 1}}"\n'
        "LAST=1"
    )
    after = render_env_file(before, LINES)

    assert after == (
        "# the app\n"
        "APP_CONFIG_AUTH__ISSUER=https://auth.example.com  # prod\n"
        "\n"
        f"{JWKS_VAR}='new'\n"
        'export FOO="bar baz"\n'
        f"{JWKS_META_VAR}='meta'\n"
        "LAST=1"
    )


def test_env_file_appends_missing_values_after_a_final_line_without_newline() -> None:
    assert render_env_file("A=1", LINES) == f"A=1\n{LINES[JWKS_VAR]}\n{LINES[JWKS_META_VAR]}\n"
    assert render_env_file(None, LINES) == f"{LINES[JWKS_VAR]}\n{LINES[JWKS_META_VAR]}\n"


def test_env_file_replaces_a_multiline_value_and_drops_later_duplicates() -> None:
    before = (
        f'{JWKS_VAR}="{{\n  \\"keys\\": []\n}}"\n'
        "A=1\n"
        f"export {JWKS_VAR}='second'\n"
        f"{JWKS_VAR.lower()}='third'\n"
        "B=2\n"
    )
    after = render_env_file(before, {JWKS_VAR: LINES[JWKS_VAR]})

    assert after == f"{LINES[JWKS_VAR]}\nA=1\nB=2\n"
    assert dotenv_values(stream=io.StringIO(after)) == {JWKS_VAR: "new", "A": "1", "B": "2"}


def test_env_file_keeps_export_prefix_and_crlf_line_endings() -> None:
    before = f"A=1\r\nexport {JWKS_VAR}='old'\r\n"
    after = render_env_file(before, LINES)

    assert after == f"A=1\r\nexport {LINES[JWKS_VAR]}\r\n{LINES[JWKS_META_VAR]}\r\n"


def test_new_env_file_is_private_and_existing_file_keeps_its_mode(
    dev: DevIssuer, tmp_path: Path
) -> None:
    result = result_for(parse_jwks(dev.jwks()))
    new, existing = tmp_path / "new.env", tmp_path / "existing.env"
    existing.write_text("A=1\n")
    existing.chmod(0o640)

    write_env_file(new, result)
    write_env_file(existing, result)

    assert stat.S_IMODE(new.stat().st_mode) == ENV_FILE_MODE == 0o600
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.env", "new.env"]


def test_env_file_behind_a_symlink_is_written_through_it(dev: DevIssuer, tmp_path: Path) -> None:
    target = tmp_path / "real.env"
    target.write_text("A=1\n")
    link = tmp_path / ".env"
    link.symlink_to(target)

    write_env_file(link, result_for(parse_jwks(dev.jwks())))

    assert link.is_symlink()
    assert JWKS_VAR in target.read_text()


def test_env_file_under_a_regular_file_is_not_writable(dev: DevIssuer, tmp_path: Path) -> None:
    parent = tmp_path / "file"
    parent.write_text("")
    with pytest.raises(OutputNotWritable) as caught:
        write_env_file(parent / ".env", result_for(parse_jwks(dev.jwks())))
    assert caught.value.path == str(parent / ".env")


def test_a_directory_is_not_a_writable_output(dev: DevIssuer, tmp_path: Path) -> None:
    result = result_for(parse_jwks(dev.jwks()))
    with pytest.raises(OutputNotWritable, match="directory"):
        write_env_file(tmp_path, result)
    with pytest.raises(OutputNotWritable, match="not a regular file"):
        write_json_file(tmp_path, result)


def test_env_file_that_is_not_utf8_is_not_writable(dev: DevIssuer, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"A=\xff\n")
    with pytest.raises(OutputNotWritable, match="UTF-8"):
        write_env_file(env, result_for(parse_jwks(dev.jwks())))
    assert env.read_bytes() == b"A=\xff\n"


# -- JSON and $GITHUB_ENV -----------------------------------------------------------


async def test_json_file_holds_jwks_and_meta_objects(dev: DevIssuer, tmp_path: Path) -> None:
    result = await bake_from(dev)
    path = tmp_path / "bake.json"

    write_json_file(path, result)
    document = json.loads(path.read_text())

    assert set(document) == {"jwks", "jwks_meta"}
    assert parse_jwks(document["jwks"]).canonical_json() == result.jwks_json
    assert BakeMeta.model_validate(document["jwks_meta"]).sha256 == result.jwks.sha256
    assert stat.S_IMODE(path.stat().st_mode) == JSON_FILE_MODE


def test_github_env_block_uses_the_heredoc_form() -> None:
    block = github_env_block({"A": '{"x":1}', "B": "two"}, delimiter="EOF_1")
    assert block == 'A<<EOF_1\n{"x":1}\nEOF_1\nB<<EOF_1\ntwo\nEOF_1\n'


def test_github_env_delimiter_is_random_and_never_in_the_value() -> None:
    first = github_env_block({"A": "1"}).splitlines()[0]
    second = github_env_block({"A": "1"}).splitlines()[0]
    assert first != second
    assert re.fullmatch(r"A<<ghadelimiter_[0-9a-f]{32}", first)
    with pytest.raises(ValueError, match="delimiter"):
        github_env_block({"A": "x EOF y"}, delimiter="EOF")


async def test_github_env_is_appended_not_replaced(dev: DevIssuer, tmp_path: Path) -> None:
    path = tmp_path / "github_env"
    path.write_text("EARLIER=1\n")
    result = await bake_from(dev)

    append_github_env(path, result)

    text = path.read_text()
    assert text.startswith("EARLIER=1\n")
    match = re.search(rf"{JWKS_VAR}<<(\S+)\n(.*)\n\1\n", text)
    assert match is not None
    assert match.group(2) == result.jwks_json


# -- reading the current bake ----------------------------------------------------------


def baked_env(dev: DevIssuer, path: Path, **extra: str) -> JWKSet:
    jwks = parse_jwks(dev.jwks())
    meta = {"issuer": ISSUER, "baked_at": "2026-01-01T00:00:00Z", "sha256": jwks.sha256}
    lines = [f"{name}={value}" for name, value in extra.items()]
    lines += [
        f"{JWKS_VAR}={dotenv_json(jwks.canonical_json())}",
        f"{JWKS_META_VAR}={dotenv_json(json.dumps(meta))}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return jwks


def test_current_bake_is_read_from_the_env_file(dev: DevIssuer, tmp_path: Path) -> None:
    env = tmp_path / "prod.env"
    jwks = baked_env(dev, env, APP_CONFIG_AUTH__ISSUER=ISSUER)

    current = read_current_bake(env, {JWKS_VAR: "ignored: --env-file wins"})

    assert current.jwks.canonical_json() == jwks.canonical_json()
    assert current.meta is not None
    assert current.meta.issuer == ISSUER
    assert current.issuer == ISSUER
    assert current.source == str(env)


def test_current_bake_prefers_the_environment_then_the_default_env_file(
    dev: DevIssuer, tmp_path: Path
) -> None:
    jwks = baked_env(dev, tmp_path / "other.env")
    environ = {"APP_CONFIG_ENV_FILE": str(tmp_path / "other.env")}
    assert read_current_bake(None, environ).jwks.kids == jwks.kids

    environ[JWKS_VAR] = json.dumps({"keys": [dev.jwks()["keys"][0]]})
    current = read_current_bake(None, environ)
    assert current.source == "environment"
    assert len(current.jwks) == 1


def test_missing_or_broken_bake_is_reported(dev: DevIssuer, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    with pytest.raises(BakeNotFound, match="no such file"):
        read_current_bake(env, {})
    env.write_text("A=1\n")
    with pytest.raises(BakeNotFound, match="run jwtedge bake"):
        read_current_bake(env, {})
    env.write_text(f"{JWKS_VAR}='{{\"keys\": []}}'\n")
    with pytest.raises(BakeNotFound, match="no usable signing key"):
        read_current_bake(env, {})
    baked_env(dev, env)
    env.write_text(env.read_text() + f"{JWKS_META_VAR}='[1]'\n")
    with pytest.raises(BakeNotFound, match="not bake metadata"):
        read_current_bake(env, {})


def test_env_file_value_reads_one_setting(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# c\nexport app_config_auth__issuer='https://a.example'\n")
    assert env_file_value(env, "APP_CONFIG_AUTH__ISSUER") == "https://a.example"
    assert env_file_value(tmp_path / "missing", "APP_CONFIG_AUTH__ISSUER") is None


# -- drift ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other() -> DevIssuer:
    return DevIssuer(issuer=ISSUER)


def keyset(*keys: dict[str, Any]) -> JWKSet:
    return parse_jwks({"keys": list(keys)})


def test_same_keys_are_no_drift(dev: DevIssuer) -> None:
    drift = compare(parse_jwks(dev.jwks()), parse_jwks(dev.jwks()))
    assert not drift
    assert drift == Drift()
    assert drift.lines() == []


def test_added_and_dropped_kids_are_drift(dev: DevIssuer, other: DevIssuer) -> None:
    mine, theirs = dev.jwks()["keys"], other.jwks()["keys"]
    drift = compare(keyset(mine[0], mine[1]), keyset(mine[1], theirs[0]))

    assert drift.added_kids == (theirs[0]["kid"],)
    assert drift.dropped_kids == (mine[0]["kid"],)
    assert drift.changed_kids == ()
    assert drift.lines() == [f"added: {theirs[0]['kid']}", f"dropped: {mine[0]['kid']}"]


def test_a_new_key_under_an_old_kid_is_changed(dev: DevIssuer, other: DevIssuer) -> None:
    mine, theirs = dev.jwks()["keys"][0], other.jwks()["keys"][0]
    impostor = {**theirs, "kid": mine["kid"]}

    drift = compare(keyset(mine), keyset(impostor))

    assert drift.changed_kids == (mine["kid"],)
    assert not drift.added_kids
    assert not drift.dropped_kids


def test_a_changed_alg_under_the_same_key_is_changed(dev: DevIssuer) -> None:
    rsa = next(k for k in dev.jwks()["keys"] if k["kty"] == "RSA")
    assert compare(keyset(rsa), keyset({**rsa, "alg": "PS256"})).changed_kids == (rsa["kid"],)


def test_keys_without_kid_are_matched_by_thumbprint(dev: DevIssuer, other: DevIssuer) -> None:
    def bare(jwk: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in jwk.items() if k != "kid"}

    mine, theirs = bare(dev.jwks()["keys"][0]), bare(other.jwks()["keys"][0])
    assert not compare(keyset(mine), keyset(mine))

    drift = compare(keyset(mine), keyset(theirs))
    assert drift.added_kids == (f"thumbprint:{keyset(theirs).keys[0].thumbprint}",)
    assert drift.dropped_kids == (f"thumbprint:{keyset(mine).keys[0].thumbprint}",)


@pytest.mark.parametrize(
    ("baked_at", "expected"),
    [
        (datetime(2026, 1, 1, tzinfo=UTC), 86400.0 + 3 * 3600 + 4 * 60 + 5.678),
        (datetime(2026, 1, 1), 86400.0 + 3 * 3600 + 4 * 60 + 5.678),  # naive means UTC
        (None, None),
    ],
)
def test_bake_age_is_measured_from_baked_at(
    baked_at: datetime | None, expected: float | None
) -> None:
    meta = BakeMeta(issuer=ISSUER, baked_at=baked_at)
    age = bake_age(meta, NOW)
    assert age == (pytest.approx(expected) if expected is not None else None)
    assert bake_age(None, NOW) is None
