"""The jwtedge CLI through CliRunner: bake, check and inspect.

HTTP goes through ``httpx2.MockTransport`` passed in the Typer context
``obj`` with a fake clock and a sleep that does not wait; the only real
network is 127.0.0.1 (a closed port, and DevIssuer.serve end to end).
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner, Result

from deploy.bake import JWKS_META_VAR, JWKS_VAR, dotenv_json
from deploy.cli import Seams, app
from verifier.config import AppConfig
from verifier.jwks import parse_jwks
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

ISSUER = "https://auth.example.com"
DISCOVERY = f"{ISSUER}/.well-known/openid-configuration"
JWKS_URL = f"{ISSUER}/jwks"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
CLIENT_SECRET = "client-secret-f00dfeed-0123456789"
HS_SECRET = "hs-secret-0123456789abcdef0123456789abcdef"

runner = CliRunner()

Reply = Callable[[httpx2.Request], httpx2.Response]


# -- fixtures and helpers ----------------------------------------------------------


@pytest.fixture(scope="module")
def dev() -> DevIssuer:
    return DevIssuer(issuer=ISSUER, audience="api", client_id="web")


@pytest.fixture(scope="module")
def other() -> DevIssuer:
    """Another issuer's keys, for drift and mixed sets."""
    return DevIssuer(issuer=ISSUER, audience="api", client_id="web")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("APP_CONFIG_") or name == "GITHUB_ENV":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


class FakeTime:
    """A monotonic clock the test moves, and a sleep that moves it instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def ok(body: object, content_type: str = "application/json") -> Reply:
    return lambda _: httpx2.Response(
        200, content=json.dumps(body).encode(), headers={"content-type": content_type}
    )


def status(code: int, **headers: str) -> Reply:
    return lambda _: httpx2.Response(code, headers=headers)


def raises(exc: Exception) -> Reply:
    def reply(_: httpx2.Request) -> httpx2.Response:
        raise exc

    return reply


class Issuer:
    """A MockTransport handler: discovery and a JWKS, each overridable by a reply queue.

    A queue is consumed in order and its last reply repeats.
    """

    def __init__(self, dev: DevIssuer, jwks: dict[str, Any] | None = None) -> None:
        self.replies: dict[str, list[Reply]] = {
            DISCOVERY: [ok(dev.discovery())],
            JWKS_URL: [ok(dev.jwks() if jwks is None else jwks)],
        }
        self.urls: list[str] = []

    def on(self, url: str, *replies: Reply) -> Issuer:
        self.replies[url] = list(replies)
        return self

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        url = str(request.url)
        self.urls.append(url)
        queue = self.replies.get(url)
        if not queue:
            return httpx2.Response(404)
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        return reply(request)


def seams(handler: Reply | None, fake: FakeTime | None = None, **extra: Any) -> Seams:
    fake = fake or FakeTime()
    values: dict[str, Any] = {
        "transport": httpx2.MockTransport(handler) if handler is not None else None,
        "clock": fake.clock,
        "sleep": fake.sleep,
        "jitter": lambda: 0.5,
        "now": lambda: NOW,
    }
    values.update(extra)
    return Seams(**values)


def invoke(
    args: list[str],
    handler: Reply | None = None,
    *,
    fake: FakeTime | None = None,
    input: str | None = None,
    env: dict[str, str] | None = None,
    **extra: Any,
) -> Result:
    return runner.invoke(app, args, obj=seams(handler, fake, **extra), input=input, env=env)


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def env_values(path: Path) -> dict[str, str | None]:
    from dotenv import dotenv_values

    return dotenv_values(path)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- bake: discovery and HTTP --------------------------------------------------------


def test_bake_discovers_and_prints_both_env_lines_on_stdout(dev: DevIssuer) -> None:
    issuer = Issuer(dev)
    result = invoke(["bake", "--issuer", ISSUER], issuer)

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [JWKS_VAR, JWKS_META_VAR]
    assert lines[0] == f"{JWKS_VAR}={dotenv_json(parse_jwks(dev.jwks()).canonical_json())}"
    meta = json.loads(lines[1].split("=", 1)[1].strip("'"))
    assert meta["token_endpoint"] == f"{ISSUER}/token"
    assert meta["baked_at"] == "2026-03-01T12:00:00Z"
    assert issuer.urls == [DISCOVERY, JWKS_URL]
    for kid in dev.kids():
        assert kid in result.stderr
    assert parse_jwks(dev.jwks()).sha256 in result.stderr
    assert ISSUER in result.stderr


def test_bake_uses_issuer_jwks_when_discovery_is_404(dev: DevIssuer) -> None:
    issuer = Issuer(dev).on(DISCOVERY, status(404))
    result = invoke(["bake", "--issuer", ISSUER], issuer)

    assert result.exit_code == 0, result.stderr
    meta = json.loads(result.stdout.splitlines()[1].split("=", 1)[1].strip("'"))
    assert meta["jwks_uri"] == JWKS_URL
    assert meta["token_endpoint"] is None
    assert issuer.urls == [DISCOVERY, JWKS_URL]


def test_bake_with_jwks_url_skips_discovery(dev: DevIssuer) -> None:
    issuer = Issuer(dev).on(f"{ISSUER}/keys", ok(dev.jwks()))
    result = invoke(["bake", "--issuer", ISSUER, "--jwks-url", f"{ISSUER}/keys"], issuer)

    assert result.exit_code == 0, result.stderr
    assert issuer.urls == [f"{ISSUER}/keys"]


def test_bake_refuses_discovery_naming_another_issuer(dev: DevIssuer) -> None:
    doc = {**dev.discovery(), "issuer": "https://evil.example.com"}
    result = invoke(["bake", "--issuer", ISSUER], Issuer(dev).on(DISCOVERY, ok(doc)))

    assert result.exit_code == 3
    line = one_line(result.stderr)
    assert DISCOVERY in line
    assert "https://evil.example.com" in line
    assert result.stdout == ""


def test_bake_retries_a_500_then_succeeds(dev: DevIssuer) -> None:
    fake = FakeTime()
    issuer = Issuer(dev).on(DISCOVERY, status(500), ok(dev.discovery()))
    result = invoke(["bake", "--issuer", ISSUER], issuer, fake=fake)

    assert result.exit_code == 0, result.stderr
    assert issuer.urls == [DISCOVERY, DISCOVERY, JWKS_URL]
    assert len(fake.sleeps) == 1


def test_bake_waits_for_retry_after_on_429_without_real_waiting(dev: DevIssuer) -> None:
    fake = FakeTime()
    issuer = Issuer(dev).on(JWKS_URL, status(429, **{"retry-after": "7"}), ok(dev.jwks()))
    result = invoke(["bake", "--issuer", ISSUER], issuer, fake=fake)

    assert result.exit_code == 0, result.stderr
    assert fake.sleeps == [7.0]


def test_bake_gives_up_when_timeouts_reach_the_deadline(dev: DevIssuer) -> None:
    fake = FakeTime()

    def slow(request: httpx2.Request) -> httpx2.Response:
        fake.now += 5.0
        raise httpx2.ReadTimeout("timed out", request=request)

    result = invoke(
        ["bake", "--issuer", ISSUER, "--timeout", "5", "--deadline", "12"],
        Issuer(dev).on(DISCOVERY, slow),
        fake=fake,
    )

    assert result.exit_code == 3
    line = one_line(result.stderr)
    assert DISCOVERY in line
    assert "deadline" in line
    assert fake.now - 1000.0 <= 12.0 + 5.0


@pytest.fixture
def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_bake_reports_connection_refused(closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    fake = FakeTime()
    result = invoke(["bake", "--issuer", url, "--allow-loopback"], None, fake=fake)

    assert result.exit_code == 3
    line = one_line(result.stderr)
    assert url in line
    assert "connection refused" in line
    assert len(fake.sleeps) == 3  # retried, without waiting


def test_bake_refuses_a_redirect_to_another_host(dev: DevIssuer) -> None:
    moved = status(302, location="https://elsewhere.example.net/jwks")
    result = invoke(["bake", "--issuer", ISSUER], Issuer(dev).on(JWKS_URL, moved))

    assert result.exit_code == 3
    line = one_line(result.stderr)
    assert JWKS_URL in line
    assert "elsewhere.example.net" in line


def test_bake_refuses_an_html_body(dev: DevIssuer) -> None:
    html = lambda _: httpx2.Response(  # noqa: E731
        200, content=b"<html>login</html>", headers={"content-type": "text/html"}
    )
    result = invoke(["bake", "--issuer", ISSUER], Issuer(dev).on(JWKS_URL, html))

    assert result.exit_code == 3
    assert "not JSON" in one_line(result.stderr)


def test_bake_refuses_a_5_mb_body(dev: DevIssuer) -> None:
    huge = {"keys": dev.jwks()["keys"], "padding": "x" * (5 * 1024 * 1024)}
    result = invoke(["bake", "--issuer", ISSUER], Issuer(dev).on(JWKS_URL, ok(huge)))

    assert result.exit_code == 3
    assert "larger than 1 MiB" in one_line(result.stderr)


# -- bake: key sets --------------------------------------------------------------------


def rsa_1024() -> dict[str, Any]:
    # Deliberately weak: the bake must skip it.
    numbers = rsa.generate_private_key(65537, 1024).public_key().public_numbers()  # noqa: S505
    n, e = numbers.n, numbers.e
    return {
        "kty": "RSA",
        "kid": "weak-rsa",
        "n": b64(n.to_bytes((n.bit_length() + 7) // 8, "big")),
        "e": b64(e.to_bytes(3, "big")),
    }


def es256(dev: DevIssuer) -> dict[str, Any]:
    return next(k for k in dev.jwks()["keys"] if k["alg"] == "ES256")


UNUSABLE: dict[str, tuple[Callable[[DevIssuer], dict[str, Any]], str]] = {
    "rsa-1024": (lambda dev: rsa_1024(), "1024 bits"),
    "use-enc": (lambda dev: {**es256(dev), "kid": "enc-key", "use": "enc"}, "use is 'enc'"),
    "x25519": (
        lambda dev: {"kty": "OKP", "crv": "X25519", "kid": "x-key", "x": b64(b"\x09" * 32)},
        "X25519",
    ),
    "alg-none": (lambda dev: {**es256(dev), "kid": "none-key", "alg": "none"}, "'none'"),
}


@pytest.mark.parametrize("case", sorted(UNUSABLE))
def test_bake_refuses_a_set_whose_only_key_is_unusable(
    dev: DevIssuer, tmp_path: Path, case: str
) -> None:
    make, reason = UNUSABLE[case]
    jwk = make(dev)
    env = tmp_path / ".env"
    result = invoke(
        ["bake", "--issuer", ISSUER, "--env-file", str(env)], Issuer(dev, {"keys": [jwk]})
    )

    assert result.exit_code == 3
    first, *skipped = result.stderr.splitlines()
    assert ISSUER in first
    assert "no usable signing key" in first
    assert len(skipped) == 1
    assert jwk["kid"] in skipped[0]
    assert reason in skipped[0]
    assert not env.exists()


def test_bake_refuses_an_empty_set(dev: DevIssuer) -> None:
    result = invoke(["bake", "--issuer", ISSUER], Issuer(dev, {"keys": []}))

    assert result.exit_code == 3
    assert "no usable signing key" in one_line(result.stderr)


@pytest.mark.parametrize(
    ("leak", "reason"),
    [("private", "private members"), ("oct", "symmetric (oct) key")],
)
def test_bake_refuses_a_set_with_a_private_or_symmetric_key_whole(
    dev: DevIssuer, tmp_path: Path, leak: str, reason: str
) -> None:
    bad = (
        dev.private_jwk(dev.kid)
        if leak == "private"
        else {"kty": "oct", "kid": "hmac", "k": b64(b"k" * 32)}
    )
    env = tmp_path / ".env"
    env.write_text("KEEP=1\n")
    result = invoke(
        ["bake", "--issuer", ISSUER, "--env-file", str(env)],
        Issuer(dev, {"keys": [*dev.jwks()["keys"], bad]}),
    )

    assert result.exit_code == 3
    assert reason in one_line(result.stderr)
    assert env.read_text() == "KEEP=1\n"
    # Secret material never reaches the output.
    for name in ("d", "p", "q", "k"):
        if name in bad:
            assert bad[name] not in result.stderr + result.stdout


def test_bake_keeps_usable_keys_of_a_mixed_set_and_names_the_rest(dev: DevIssuer) -> None:
    unusable = [make(dev) for make, _ in UNUSABLE.values()]
    result = invoke(
        ["bake", "--issuer", ISSUER],
        Issuer(dev, {"keys": [*unusable, *dev.jwks()["keys"]]}),
    )

    assert result.exit_code == 0, result.stderr
    baked = parse_jwks(result.stdout.splitlines()[0].split("=", 1)[1].strip("'"))
    assert sorted(k for k in baked.kids if k) == sorted(dev.kids())
    for jwk, (_, reason) in zip(unusable, UNUSABLE.values(), strict=True):
        named = [line for line in result.stderr.splitlines() if jwk["kid"] in line]
        assert len(named) == 1
        assert reason in named[0]


# -- bake: fallback, loopback, usage ----------------------------------------------------


def test_bake_fallback_exits_0_with_outputs_untouched(dev: DevIssuer, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(f"{JWKS_VAR}='previous'\n")
    down = Issuer(dev).on(DISCOVERY, status(503))

    failed = invoke(["bake", "--issuer", ISSUER, "--env-file", str(env)], down)
    fallback = invoke(["bake", "--issuer", ISSUER, "--env-file", str(env), "--fallback"], down)

    assert failed.exit_code == 3
    assert fallback.exit_code == 0
    line = one_line(fallback.stderr)
    assert "warning" in line
    assert DISCOVERY in line
    assert "run time" in line
    assert fallback.stdout == ""
    assert env.read_text() == f"{JWKS_VAR}='previous'\n"


def test_bake_fallback_does_not_cover_a_refused_key_set(dev: DevIssuer) -> None:
    # The runtime layer would refuse the same set, so starting the app helps nobody.
    result = invoke(["bake", "--issuer", ISSUER, "--fallback"], Issuer(dev, {"keys": []}))
    assert result.exit_code == 3


def test_bake_skips_loopback_issuer_without_allow_loopback(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    result = invoke(
        ["bake", "--issuer", "http://127.0.0.1:9", "--env-file", str(env)],
        raises(AssertionError("a skipped bake must not fetch")),
    )

    assert result.exit_code == 0
    assert "loopback" in one_line(result.stderr)
    assert "--allow-loopback" in result.stderr
    assert not env.exists()
    assert result.stdout == ""


def test_bake_without_issuer_is_a_usage_error() -> None:
    result = invoke(["bake"])
    assert result.exit_code == 2
    assert "APP_CONFIG_AUTH__ISSUER" in one_line(result.stderr)


def test_bake_reads_the_issuer_from_the_environment(dev: DevIssuer) -> None:
    result = invoke(["bake"], Issuer(dev), env={"APP_CONFIG_AUTH__ISSUER": ISSUER})
    assert result.exit_code == 0, result.stderr


def test_bake_reads_the_issuer_from_the_env_file_it_updates(dev: DevIssuer, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(f"APP_CONFIG_AUTH__ISSUER={ISSUER}\n{JWKS_VAR}='broken'\n")
    result = invoke(["bake", "--env-file", str(env)], Issuer(dev))

    assert result.exit_code == 0, result.stderr
    assert env_values(env)["APP_CONFIG_AUTH__ISSUER"] == ISSUER
    assert parse_jwks(env_values(env)[JWKS_VAR]).kids == parse_jwks(dev.jwks()).kids


@pytest.mark.parametrize(
    "args",
    [
        ["--issuer", "ftp://auth.example.com"],
        ["--issuer", ISSUER, "--jwks-url", "not a url"],
        ["--issuer", ISSUER, "--timeout", "0"],
        ["--issuer", ISSUER, "--github-env"],  # $GITHUB_ENV is not set
    ],
)
def test_bake_usage_errors_exit_2(args: list[str]) -> None:
    result = invoke(["bake", *args])
    assert result.exit_code == 2
    assert one_line(result.stderr).startswith("jwtedge: ")


# -- bake: writers -------------------------------------------------------------------------


def test_bake_env_file_keeps_other_lines_and_replaces_old_values(
    dev: DevIssuer, tmp_path: Path
) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "# app settings\n"
        f"APP_CONFIG_AUTH__ISSUER={ISSUER}\n"
        f"{JWKS_VAR}='{{\"keys\": []}}'\n"
        "\n"
        "# secrets\n"
        f"APP_CONFIG_AUTH__CLIENT_SECRET={CLIENT_SECRET}\n"
        f"{JWKS_META_VAR}='{{}}'\n"
    )
    env.chmod(0o640)

    result = invoke(["bake", "--issuer", ISSUER, "--env-file", str(env)], Issuer(dev))

    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    lines = env.read_text().splitlines()
    assert lines[0] == "# app settings"
    assert lines[1] == f"APP_CONFIG_AUTH__ISSUER={ISSUER}"
    assert lines[2].startswith(f'{JWKS_VAR}=\'{{"keys":[{{')
    assert lines[3:6] == ["", "# secrets", f"APP_CONFIG_AUTH__CLIENT_SECRET={CLIENT_SECRET}"]
    assert lines[6].startswith(f"{JWKS_META_VAR}='")
    assert len(lines) == 7
    assert stat.S_IMODE(env.stat().st_mode) == 0o640
    assert CLIENT_SECRET not in result.stderr


def test_bake_jwks_line_is_byte_identical_across_two_bakes(dev: DevIssuer, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    args = ["bake", "--issuer", ISSUER, "--env-file", str(env)]

    assert invoke(args, Issuer(dev), now=lambda: NOW).exit_code == 0
    first = env.read_bytes().splitlines()
    shuffled = {"keys": list(reversed(dev.jwks()["keys"]))}
    later = NOW + timedelta(days=1)
    assert invoke(args, Issuer(dev, shuffled), now=lambda: later).exit_code == 0
    second = env.read_bytes().splitlines()

    assert first[0] == second[0]
    assert first[1] != second[1]
    assert second[0].startswith(JWKS_VAR.encode())


def test_bake_writes_github_env_heredocs(dev: DevIssuer, tmp_path: Path) -> None:
    github = tmp_path / "github_env"
    github.write_text("OTHER=1\n")
    result = invoke(
        ["bake", "--issuer", ISSUER, "--github-env"], Issuer(dev), env={"GITHUB_ENV": str(github)}
    )

    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    text = github.read_text()
    blocks = re.findall(r"^(\w+)<<(ghadelimiter_[0-9a-f]+)\n(.*?)\n\2$", text, re.M | re.S)
    assert [name for name, _, _ in blocks] == [JWKS_VAR, JWKS_META_VAR]
    assert blocks[0][2] == parse_jwks(dev.jwks()).canonical_json()
    assert json.loads(blocks[1][2])["issuer"] == ISSUER
    assert text.startswith("OTHER=1\n")


def test_bake_writes_the_json_file(dev: DevIssuer, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    result = invoke(["bake", "--issuer", ISSUER, "--json-file", str(path)], Issuer(dev))

    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    document = json.loads(path.read_text())
    assert parse_jwks(document["jwks"]).canonical_json() == parse_jwks(dev.jwks()).canonical_json()
    assert document["jwks_meta"]["issuer"] == ISSUER


@pytest.mark.parametrize("option", ["--env-file", "--json-file"])
def test_bake_exits_4_when_the_output_cannot_be_written(
    dev: DevIssuer, tmp_path: Path, option: str
) -> None:
    # Tests run as root, so permissions would not stop us: a path under a
    # regular file, or a directory as the file, cannot be written by anyone.
    parent = tmp_path / "plain-file"
    parent.write_text("")
    for target in (parent / "out", tmp_path):
        result = invoke(["bake", "--issuer", ISSUER, option, str(target)], Issuer(dev))
        assert result.exit_code == 4, result.stderr
        assert str(target) in result.stderr.splitlines()[-1]
        assert result.stdout == ""
    assert parent.read_text() == ""


# -- check -------------------------------------------------------------------------------


def write_bake(path: Path, dev: DevIssuer, *, baked_at: datetime = NOW, **extra: str) -> None:
    jwks = parse_jwks(dev.jwks())
    meta = {
        "issuer": ISSUER,
        "jwks_uri": JWKS_URL,
        "baked_at": baked_at.isoformat(),
        "sha256": jwks.sha256,
        "kids": list(jwks.kids),
    }
    lines = [f"{name}={value}" for name, value in extra.items()]
    lines += [
        f"{JWKS_VAR}={dotenv_json(jwks.canonical_json())}",
        f"{JWKS_META_VAR}={dotenv_json(json.dumps(meta))}",
    ]
    path.write_text("\n".join(lines) + "\n")


def test_check_in_sync_exits_0(dev: DevIssuer, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    write_bake(env, dev)
    result = invoke(["check", "--env-file", str(env)], Issuer(dev))

    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "in sync" in result.stderr


def test_check_names_added_dropped_and_changed_kids(
    dev: DevIssuer, other: DevIssuer, tmp_path: Path
) -> None:
    env = tmp_path / ".env"
    write_bake(env, dev)
    mine, theirs = dev.jwks()["keys"], other.jwks()["keys"]
    live = {"keys": [{**theirs[0], "kid": mine[0]["kid"]}, mine[1], theirs[2]]}

    result = invoke(["check", "--env-file", str(env)], Issuer(dev, live))

    assert result.exit_code == 1, result.stderr
    assert result.stdout.splitlines() == [
        f"added: {theirs[2]['kid']}",
        f"dropped: {mine[2]['kid']}",
        f"changed: {mine[0]['kid']}",
    ]


def test_check_max_age_makes_an_old_bake_drift(dev: DevIssuer, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    write_bake(env, dev, baked_at=NOW - timedelta(days=8))

    fresh = invoke(["check", "--env-file", str(env), "--max-age", "9d"], Issuer(dev))
    stale = invoke(["check", "--env-file", str(env), "--max-age", "7d"], Issuer(dev))
    seconds = invoke(["check", "--env-file", str(env), "--max-age", "3600"], Issuer(dev))

    assert fresh.exit_code == 0, fresh.stderr
    assert stale.exit_code == 1
    assert stale.stdout.splitlines() == ["stale: baked 8d ago, more than --max-age 7d"]
    assert seconds.exit_code == 1


def test_check_reads_the_bake_from_the_environment(dev: DevIssuer, tmp_path: Path) -> None:
    env = tmp_path / "baked.env"
    write_bake(env, dev)
    values = {k: v for k, v in env_values(env).items() if v is not None}
    result = invoke(["check"], Issuer(dev), env=values)
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("args", [[], ["--max-age", "soon"]])
def test_check_usage_errors_exit_2(dev: DevIssuer, tmp_path: Path, args: list[str]) -> None:
    if args:
        write_bake(tmp_path / ".env", dev)
    result = invoke(["check", *args], Issuer(dev))
    assert result.exit_code == 2
    assert one_line(result.stderr).startswith("jwtedge: ")


def test_check_exits_3_when_the_issuer_is_unreachable_or_unusable(
    dev: DevIssuer, tmp_path: Path
) -> None:
    env = tmp_path / ".env"
    write_bake(env, dev)

    down = invoke(["check", "--env-file", str(env)], Issuer(dev).on(DISCOVERY, status(500)))
    empty = invoke(["check", "--env-file", str(env)], Issuer(dev, {"keys": []}))

    assert down.exit_code == 3
    assert DISCOVERY in one_line(down.stderr)
    assert empty.exit_code == 3
    assert "no usable signing key" in one_line(empty.stderr)


def test_check_skips_a_loopback_issuer_without_allow_loopback(
    dev: DevIssuer, tmp_path: Path
) -> None:
    env = tmp_path / ".env"
    write_bake(env, dev)
    result = invoke(["check", "--env-file", str(env), "--issuer", "http://localhost:9"])

    assert result.exit_code == 0
    assert "loopback" in one_line(result.stderr)


# -- inspect --------------------------------------------------------------------------------


@pytest.fixture
def app_env(dev: DevIssuer, tmp_path: Path) -> Path:
    env = tmp_path / "app.env"
    write_bake(
        env,
        dev,
        APP_CONFIG_AUTH__ISSUER=ISSUER,
        APP_CONFIG_AUTH__AUDIENCE="api",
        APP_CONFIG_AUTH__CLIENT_ID="web",
        APP_CONFIG_AUTH__CLIENT_SECRET=CLIENT_SECRET,
        APP_CONFIG_AUTH__HS_SECRET=HS_SECRET,
    )
    return env


ORGS = [{"id": "o1", "slug": "acme", "name": "Acme Corp", "role": "owner"}]
PROJECTS = [{"id": "p1", "slug": "site", "organizationId": "o1"}]


def real_now() -> datetime:
    return datetime.now(UTC)


def run_inspect(args: list[str], token_input: str | None, **extra: Any) -> Result:
    return invoke(["inspect", *args], input=token_input, now=real_now, **extra)


def assert_never_shown(result: Result, *tokens: str) -> None:
    shown = result.stdout + result.stderr
    for token in tokens:
        assert token not in shown
        signature = token.rsplit(".", 1)[-1]
        for start in range(len(signature) - 19):
            assert signature[start : start + 20] not in shown
    assert CLIENT_SECRET not in shown
    assert HS_SECRET not in shown


def test_inspect_reads_stdin_and_shows_the_verified_session(dev: DevIssuer, app_env: Path) -> None:
    token = dev.access_token(sub="u1", organizations=ORGS, projects=PROJECTS, sid="s-9")
    result = run_inspect(["--env-file", str(app_env)], f"{token}\n")

    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "verdict: valid" in out
    assert "header (unverified)" in out
    assert "claims (unverified)" in out
    assert "user: u1" in out
    assert "Acme Corp (acme, id o1): owner" in out
    assert "site (id p1, organization o1)" in out
    assert "scopes: openid profile" in out
    assert "session id: s-9" in out
    assert re.search(r"expires: \S+Z \(in 4m", out)
    assert_never_shown(result, token)


def test_inspect_reports_an_expired_token_with_exit_1(dev: DevIssuer, app_env: Path) -> None:
    token = dev.access_token(ttl=-3600)
    result = run_inspect(["--env-file", str(app_env)], token)

    assert result.exit_code == 1
    assert "verdict: invalid (token_expired)" in result.stdout
    assert "claims (unverified)" in result.stdout
    assert_never_shown(result, token)


def test_inspect_json_is_machine_readable(dev: DevIssuer, app_env: Path) -> None:
    token = dev.access_token(sub="u2", organizations=ORGS)
    valid = run_inspect(["--json", "--env-file", str(app_env)], token)
    expired = run_inspect(["--json", "--env-file", str(app_env)], dev.access_token(ttl=-3600))

    assert valid.exit_code == 0, valid.stderr
    document = json.loads(valid.stdout)
    assert document["valid"] is True
    assert document["error"] is None
    assert document["session"]["user"]["id"] == "u2"
    assert document["session"]["organizations"][0]["name"] == "Acme Corp"
    assert document["access_token"]["unverified_claims"]["sub"] == "u2"
    assert document["access_token"]["unverified_header"]["kid"] == dev.kid
    assert document["id_token"] is None
    assert_never_shown(valid, token)

    assert expired.exit_code == 1
    failed = json.loads(expired.stdout)
    assert failed["verdict"] == "invalid"
    assert failed["error"]["code"] == "token_expired"
    assert failed["session"] is None


def test_inspect_shows_roles_permissions_and_the_active_org(dev: DevIssuer, tmp_path: Path) -> None:
    env = tmp_path / "app.env"
    write_bake(
        env,
        dev,
        APP_CONFIG_AUTH__ISSUER=ISSUER,
        APP_CONFIG_AUTH__AUDIENCE="api",
        APP_CONFIG_CLAIMS__ROLES="/realm_access/roles",
        APP_CONFIG_CLAIMS__PERMISSIONS="permissions",
    )
    extra = {
        "realm_access": {"roles": ["admin", "auditor"]},
        "permissions": ["read:reports"],
        "active_org": "acme",
    }
    token = dev.access_token(sub="u1", organizations=ORGS, extra=extra)

    text = run_inspect(["--env-file", str(env)], token)
    machine = run_inspect(["--json", "--env-file", str(env)], token)

    assert text.exit_code == 0, text.stderr
    assert "Acme Corp (acme, id o1): owner [active]" in text.stdout
    assert "roles: admin auditor" in text.stdout
    assert "permissions: read:reports" in text.stdout
    session = json.loads(machine.stdout)["session"]
    assert (session["roles"], session["permissions"]) == (["admin", "auditor"], ["read:reports"])
    assert session["active_organization"] == "o1"
    assert_never_shown(text, token)


def test_inspect_verifies_an_id_token_with_the_access_token(dev: DevIssuer, app_env: Path) -> None:
    access = dev.access_token(sub="u1")
    id_token = dev.id_token(sub="u1", name="Ada Lovelace")
    other = dev.id_token(sub="u2")

    pair = run_inspect(["--env-file", str(app_env), "--id-token", "-"], f"{access}\n{id_token}\n")
    mismatch = run_inspect(["--env-file", str(app_env), "--id-token", "-"], f"{access} {other}")

    assert pair.exit_code == 0, pair.stdout + pair.stderr
    assert "id token claims (unverified)" in pair.stdout
    assert "user: u1 (Ada Lovelace <a@example.com>, email verified)" in pair.stdout
    assert mismatch.exit_code == 1
    assert "id_token_mismatch" in mismatch.stdout
    assert_never_shown(pair, access, id_token)
    assert_never_shown(mismatch, access, other)


def test_inspect_accepts_a_pasted_bearer_header_value(dev: DevIssuer, app_env: Path) -> None:
    token = dev.access_token()
    result = run_inspect(["--env-file", str(app_env)], f"Bearer {token}")
    assert result.exit_code == 0, result.stdout


def test_inspect_reports_a_malformed_token(app_env: Path) -> None:
    result = run_inspect(["--env-file", str(app_env)], "not-a-token")

    assert result.exit_code == 1
    assert "verdict: invalid (token_malformed)" in result.stdout
    assert "(not decodable)" in result.stdout
    assert "not-a-token" not in result.stdout + result.stderr


def test_inspect_config_errors_exit_2(dev: DevIssuer, app_env: Path, tmp_path: Path) -> None:
    token = dev.access_token()
    no_bake = tmp_path / "nobake.env"
    no_bake.write_text(f"APP_CONFIG_AUTH__ISSUER={ISSUER}\nAPP_CONFIG_AUTH__AUDIENCE=api\n")
    broken = tmp_path / "broken.env"
    broken.write_text(f"APP_CONFIG_AUTH__ISSUER=nope\nAPP_CONFIG_AUTH__HS_SECRET={HS_SECRET}\n")

    for env in (no_bake, broken):
        result = run_inspect(["--env-file", str(env)], token)
        assert result.exit_code == 2
        assert one_line(result.stderr).startswith("jwtedge: ")
        assert_never_shown(result, token)
    empty = run_inspect(["--env-file", str(app_env)], "   \n")
    assert empty.exit_code == 2


def test_inspect_never_echoes_stray_arguments(dev: DevIssuer, app_env: Path) -> None:
    token, extra = dev.access_token(), dev.access_token(sub="u9")
    result = invoke(["inspect", token, extra, "--env-file", str(app_env)], now=real_now)

    assert result.exit_code == 2
    assert "not shown" in one_line(result.stderr)
    assert_never_shown(result, token, extra)


def test_inspect_uses_app_config_env_file_by_default(
    dev: DevIssuer, app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = dev.access_token()
    result = run_inspect([], token, env={"APP_CONFIG_ENV_FILE": str(app_env)})
    assert result.exit_code == 0, result.stderr


# -- unexpected errors and leaks ------------------------------------------------------------


def test_an_unexpected_error_exits_70_naming_only_its_type(dev: DevIssuer) -> None:
    token = dev.access_token()
    result = invoke(["bake", "--issuer", ISSUER], raises(RuntimeError(f"boom {token}")))

    assert result.exit_code == 70
    assert one_line(result.stderr) == ("jwtedge: unexpected error (RuntimeError); please report it")
    assert result.stdout == ""
    assert_never_shown(result, token)


def test_no_command_shows_a_token_or_secret(
    dev: DevIssuer, other: DevIssuer, app_env: Path, tmp_path: Path
) -> None:
    token = dev.access_token(organizations=ORGS, projects=PROJECTS)
    expired = dev.access_token(ttl=-3600)
    forged = other.access_token()
    id_token = dev.id_token()
    tokens = (token, expired, forged, id_token)
    env = str(app_env)

    def crash(_: httpx2.Request) -> httpx2.Response:
        raise RuntimeError(token)

    def broken_clock() -> datetime:
        raise RuntimeError(f"{token} {CLIENT_SECRET}")

    runs = [
        invoke(["--help"]),
        *(invoke([command, "--help"]) for command in ("bake", "check", "inspect")),
        invoke(["bake", "--issuer", ISSUER], Issuer(dev)),
        invoke(["bake", "--issuer", ISSUER], Issuer(dev).on(DISCOVERY, status(500))),
        invoke(["bake", "--issuer", ISSUER], crash),
        invoke(["check", "--env-file", env], Issuer(dev)),
        invoke(["check", "--env-file", env], Issuer(other)),
        invoke(["check", "--env-file", env], crash),
        invoke(["inspect", "--env-file", env], input=token, now=real_now),
        invoke(["inspect", "--env-file", env, "--json"], input=token, now=real_now),
        invoke(["inspect", "--env-file", env], input=expired, now=real_now),
        invoke(["inspect", "--env-file", env], input=forged, now=real_now),
        invoke(["inspect", "--env-file", env, "--json"], input=forged, now=real_now),
        invoke(["inspect", "--env-file", env, "--id-token", id_token, token], now=real_now),
        invoke(["inspect", "--env-file", env], input=token, now=broken_clock),
    ]

    codes = [result.exit_code for result in runs]
    assert codes == [0, 0, 0, 0, 0, 3, 70, 0, 1, 70, 0, 0, 1, 1, 1, 0, 70]
    for result in runs:
        assert_never_shown(result, *tokens)


# -- hostile strings from the issuer and from tokens (issue 20, item 5) -----------------------

#: The issue's kid: a newline and a GitHub Actions workflow command.
INJECTED_KID = "k1\n::error title=Injected::pwned"
#: What else can drive a terminal or reorder a line: ESC (CSI), C1 CSI, DEL,
#: a bell, a carriage return, a line separator, a right-to-left override.
CONTROLS = ["\x1b[31m", "\x9b2J", "\x7f", "\x07", "\r", "\u2028", "\u202e"]
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def hostile_jwks(dev: DevIssuer) -> dict[str, Any]:
    keys = [dict(key) for key in dev.jwks()["keys"]]
    keys[0]["kid"] = INJECTED_KID
    keys[1]["kid"] = "k2" + "".join(CONTROLS)
    # An unusable key is named too (in the "skipped" lines).
    keys.append(
        {"kty": "EC", "crv": "P-192", "kid": "k3\n::warning::skipped", "x": "AA", "y": "AA"}
    )
    return {"keys": keys}


def assert_inert(text: str) -> None:
    """No line a CI runner reads as a command, no character that drives a terminal."""
    assert not [line for line in text.split("\n") if line.lstrip().startswith("::")], text
    assert not RAW_CONTROL.search(text), repr(text)


def test_bake_prints_hostile_kids_escaped_never_as_workflow_commands(dev: DevIssuer) -> None:
    hostile = hostile_jwks(dev)
    result = invoke(["bake", "--issuer", ISSUER], Issuer(dev, hostile))

    assert result.exit_code == 0, result.stderr
    assert_inert(result.stdout)
    assert_inert(result.stderr)
    assert "k1\\n::error title=Injected::pwned" in result.stderr
    assert "k2\\x1b[31m\\x9b2J\\x7f\\x07\\r\\u2028\\u202e" in result.stderr
    assert "k3\\n::warning::skipped" in result.stderr
    # The printed env lines still read back as the exact key set.
    env = Path("printed.env")
    env.write_text(result.stdout)
    values = env_values(env)
    kids = {key["kid"] for key in json.loads(values[JWKS_VAR] or "")["keys"]}
    assert {INJECTED_KID, "k2" + "".join(CONTROLS)} <= kids
    assert set(json.loads(values[JWKS_META_VAR] or "")["kids"]) == kids


def test_check_prints_hostile_drift_kids_escaped(dev: DevIssuer, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    write_bake(env, dev)
    result = invoke(["check", "--env-file", str(env)], Issuer(dev, hostile_jwks(dev)))

    assert result.exit_code == 1
    assert_inert(result.stdout)
    assert_inert(result.stderr)
    assert "added: k1\\n::error title=Injected::pwned" in result.stdout.splitlines()


def hostile_claims_token(dev: DevIssuer) -> str:
    org = {"id": "o1", "slug": "acme", "name": "Acme\x1b]0;owned\x07", "role": "owner"}
    return dev.access_token(
        sub="u1\n::error title=Injected::sub",
        organizations=[org],
        extra={"name": "Jos\u00e9 \u202eevil\u202c", "email": "a@example.com\x9b", "note": "\x7f"},
    )


def test_inspect_text_escapes_control_characters_from_claims(dev: DevIssuer, app_env: Path) -> None:
    result = run_inspect(["--env-file", str(app_env)], hostile_claims_token(dev))

    assert result.exit_code == 0, result.stderr
    assert_inert(result.stdout)
    assert "user: u1\\n::error title=Injected::sub (Jos\u00e9 \\u202eevil\\u202c" in result.stdout
    assert "Acme\\x1b]0;owned\\x07 (acme, id o1): owner" in result.stdout


def test_inspect_json_escapes_once_and_reads_back_exactly(dev: DevIssuer, app_env: Path) -> None:
    result = run_inspect(["--json", "--env-file", str(app_env)], hostile_claims_token(dev))

    assert result.exit_code == 0, result.stderr
    assert result.stdout.isascii()
    assert_inert(result.stdout)
    document = json.loads(result.stdout)
    claims = document["access_token"]["unverified_claims"]
    assert claims["sub"] == "u1\n::error title=Injected::sub"
    assert claims["name"] == "Jos\u00e9 \u202eevil\u202c"
    assert claims["email"] == "a@example.com\x9b"
    assert document["session"]["organizations"][0]["name"] == "Acme\x1b]0;owned\x07"
    # Escaped once: the ESC is \u001b in the output, never \\u001b.
    assert "\\u001b" in result.stdout
    assert "\\\\u" not in result.stdout


def runner_env_file(text: str) -> dict[str, str]:
    """Read a $GITHUB_ENV file as the Actions runner does (SetEnvFileCommand).

    Lines split on CR LF, CR or LF (.NET ReadLine); ``NAME<<DELIM`` starts a
    value that ends at the first line equal to ``DELIM``; ``NAME=value`` is
    one line.
    """
    lines = re.split(r"\r\n|\r|\n", text)
    values: dict[str, str] = {}
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body: list[str] = []
            while lines[index] != delimiter:
                body.append(lines[index])
                index += 1
            index += 1
            values[name] = "\n".join(body)
        else:
            name, _, value = line.partition("=")
            values[name] = value
    return values


HOSTILE_VALUES = [
    "x\nGITHUB_PATH=/tmp/evil",
    "x\r\nEOF\nNODE_OPTIONS<<EOF\n--require=/tmp/evil.js\nEOF",
    "x\rghadelimiter_" + "0" * 32 + "\nLD_PRELOAD=/tmp/evil.so",
    "ghadelimiter_\n\nghadelimiter_0123\n",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_github_env_heredoc_cannot_be_broken_out_of(value: str, tmp_path: Path) -> None:
    from deploy.bake import github_env_block

    path = tmp_path / "github_env"
    path.write_text("OTHER=1\n" + github_env_block({JWKS_VAR: value, JWKS_META_VAR: "{}"}))

    assert runner_env_file(path.read_text()) == {
        "OTHER": "1",
        JWKS_VAR: value.replace("\r\n", "\n").replace("\r", "\n"),
        JWKS_META_VAR: "{}",
    }


def test_github_env_written_from_a_hostile_issuer_sets_only_the_two_settings(
    dev: DevIssuer, tmp_path: Path
) -> None:
    github = tmp_path / "github_env"
    github.write_text("OTHER=1\n")
    result = invoke(
        ["bake", "--issuer", ISSUER, "--github-env"],
        Issuer(dev, hostile_jwks(dev)),
        env={"GITHUB_ENV": str(github)},
    )

    assert result.exit_code == 0, result.stderr
    values = runner_env_file(github.read_text())
    assert set(values) == {"OTHER", JWKS_VAR, JWKS_META_VAR}
    kids = {key["kid"] for key in json.loads(values[JWKS_VAR])["keys"]}
    assert {INJECTED_KID, "k2" + "".join(CONTROLS)} <= kids


# -- end to end: real HTTP on 127.0.0.1 ----------------------------------------------------------


@pytest.fixture
def served() -> Iterator[DevIssuer]:
    with DevIssuer.serve(port=0, audience="api", client_id="web") as issuer:
        yield issuer


@pytest.mark.e2e
def test_bake_then_app_config_verifies_then_rotation_is_drift(
    served: DevIssuer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / ".env"
    env.write_text("# written by hand\nAPP_CONFIG_COOKIES__SECURE=always\n")

    baked = runner.invoke(
        app, ["bake", "--issuer", served.url, "--allow-loopback", "--env-file", str(env)]
    )
    assert baked.exit_code == 0, baked.stderr
    assert served.stats.jwks_requests == 1

    monkeypatch.setenv("APP_CONFIG_AUTH__ISSUER", served.url)
    monkeypatch.setenv("APP_CONFIG_AUTH__AUDIENCE", "api")
    config = AppConfig(_env_file=env)
    assert config.cookies.secure == "always"
    claims = TokenVerifier.from_config(config).verify_access(served.access_token(sub="e2e"))
    assert claims["sub"] == "e2e"

    in_sync = runner.invoke(app, ["check", "--allow-loopback", "--env-file", str(env)])
    assert in_sync.exit_code == 0, in_sync.stderr

    new_kid = served.rotate()
    drift = runner.invoke(app, ["check", "--allow-loopback", "--env-file", str(env)])
    assert drift.exit_code == 1, drift.stderr
    assert drift.stdout.splitlines() == [f"added: {new_kid}"]


@pytest.mark.e2e
def test_bake_skips_a_served_loopback_issuer_without_allow_loopback(
    served: DevIssuer, tmp_path: Path
) -> None:
    env = tmp_path / ".env"
    result = runner.invoke(app, ["bake", "--issuer", served.url, "--env-file", str(env)])

    assert result.exit_code == 0
    assert "warning" in one_line(result.stderr)
    assert not env.exists()
    assert served.stats.discovery_requests == 0
    assert served.stats.jwks_requests == 0
