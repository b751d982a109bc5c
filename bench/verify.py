"""Per-token verify cost: ours (uncached, session, cached) beside raw crypto, joserfc, PyJWT.

Run ``python -m bench.verify`` (``--quick`` for a smoke run, ``--profile`` for a
cProfile of our uncached RS256 paths). Every case verifies the same set of
pre-minted DISTINCT tokens once per round (the cached case repeats one token);
rounds are interleaved and the medians printed. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from bench.common import (
    ALGORITHMS,
    AUDIENCE,
    ISSUER,
    b64url_decode,
    banner,
    interleaved,
    make_config,
    make_issuer,
    median,
    mint,
    paired_ratio,
    spread,
    table,
    verdict,
)
from verifier.testing import DevIssuer
from verifier.tokens import TokenVerifier

#: Targets from the "Performance" issue: ours uncached / raw cryptography.
TARGETS = {"RS256": 1.8, "ES256": 1.3, "Ed25519": 1.3}
STRETCH = {"RS256": 1.6}
CACHED_TARGET = 0.1  # cached session() / raw RS256 verify

IMPLS = ("raw", "verify_access", "session_nocache", "session_cached", "joserfc", "pyjwt")
LABELS = {
    "raw": "raw cryptography",
    "verify_access": "ours verify_access (uncached)",
    "session_nocache": "ours session() cache off",
    "session_cached": "ours session() cached hit",
    "joserfc": "joserfc decode+validate",
    "pyjwt": "PyJWT decode",
}


def _raw_verifier(alg: str, public_key: Any) -> Callable[[tuple[bytes, bytes]], None]:
    """A ready-made cryptography call: key object, padding and hash built once."""
    if alg == "RS256":
        pkcs1, sha = padding.PKCS1v15(), hashes.SHA256()
        return lambda item: public_key.verify(item[0], item[1], pkcs1, sha)
    if alg == "PS256":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        sha = hashes.SHA256()
        return lambda item: public_key.verify(item[0], item[1], pss, sha)
    if alg == "ES256":
        ecdsa = ec.ECDSA(hashes.SHA256())
        return lambda item: public_key.verify(item[0], item[1], ecdsa)
    return lambda item: public_key.verify(item[0], item[1])


def _raw_items(alg: str, tokens: Sequence[str]) -> list[tuple[bytes, bytes]]:
    """(signature, message) bytes, precomputed; ECDSA signatures converted to DER."""
    items = []
    for token in tokens:
        signing_input, _, signature_b64 = token.rpartition(".")
        signature = b64url_decode(signature_b64)
        if alg == "ES256":
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            signature = encode_dss_signature(r, s)
        items.append((signature, signing_input.encode("ascii")))
    return items


def build_cases(
    issuer: DevIssuer, alg: str, count: int
) -> dict[str, tuple[Callable[[Any], object], Sequence[Any]]]:
    tokens = mint(issuer, count, alg)
    keyset = KeySet.import_key_set(issuer.jwks())  # type: ignore[arg-type]
    kid = issuer.kids(alg)[-1]
    public_key: Any = keyset.get_by_kid(kid).get_op_key("verify")

    uncached = TokenVerifier.from_config(make_config(issuer, cache_size=0))
    cached = TokenVerifier.from_config(make_config(issuer))
    cached.session(tokens[0])

    registry = jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER}, aud={"essential": True, "value": AUDIENCE}
    )

    def joserfc_verify(token: str) -> None:
        registry.validate(jose_jwt.decode(token, keyset, algorithms=[alg]).claims)

    # PyJWT knows Ed25519 keys only under the RFC 8037 name; same key, same signature cost.
    pyjwt_alg = "EdDSA" if alg == "Ed25519" else alg
    pyjwt_tokens = mint(issuer, count, pyjwt_alg) if pyjwt_alg != alg else tokens

    def pyjwt_verify(token: str) -> None:
        pyjwt.decode(token, public_key, algorithms=[pyjwt_alg], audience=AUDIENCE, issuer=ISSUER)

    return {
        "raw": (_raw_verifier(alg, public_key), _raw_items(alg, tokens)),
        "verify_access": (uncached.verify_access, tokens),
        "session_nocache": (uncached.session, tokens),
        "session_cached": (cached.session, [tokens[0]] * count),
        "joserfc": (joserfc_verify, tokens),
        "pyjwt": (pyjwt_verify, pyjwt_tokens),
    }


def run(count: int, rounds: int, algorithms: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    issuer = make_issuer()
    results: dict[str, dict[str, list[float]]] = {}
    for alg in algorithms:
        cases = build_cases(issuer, alg, count)
        results[alg] = interleaved(cases, rounds=rounds)
    return results


def report(results: dict[str, dict[str, list[float]]], count: int, rounds: int) -> None:
    banner("verify: µs per token (median of rounds; ± is half the IQR in %)")
    print(
        f"{count} distinct tokens per case per round, {rounds} rounds interleaved; "
        "payload: 3 organizations, 5 projects, scope, sid, jti.\n"
        "The parsed-header cache is warm (tokens of one key share their header), "
        "as it is in production."
    )
    algs = list(results)
    rows = []
    for impl in IMPLS:
        row: list[object] = [LABELS[impl]]
        for alg in algs:
            samples = results[alg][impl]
            row.append(f"{median(samples):8.2f} ±{spread(samples):4.1f}%")
        rows.append(row)
    print(table(["µs/op", *algs], rows))

    med = {alg: {impl: median(results[alg][impl]) for impl in IMPLS} for alg in algs}
    print("\nnon-crypto cost of ours (µs/op minus raw):")
    rows = [
        [LABELS[impl], *(med[alg][impl] - med[alg]["raw"] for alg in algs)]
        for impl in ("verify_access", "session_nocache")
    ]
    print(table(["µs", *algs], rows))

    print("\nratios (median of per-round ratios; both sides ran in the same round):")

    def r(alg: str, a: str, b: str) -> float:
        return paired_ratio(results[alg][a], results[alg][b])

    rows = []
    for alg in algs:
        target = TARGETS.get(alg)
        ours = r(alg, "verify_access", "raw")
        target_text = "-"
        if target:
            target_text = f"≤ {target}" + (f" (stretch {STRETCH[alg]})" if alg in STRETCH else "")
        rows.append(
            [
                alg,
                ours,
                r(alg, "session_nocache", "raw"),
                target_text,
                verdict(ours, target) if target else "-",
                r(alg, "verify_access", "joserfc"),
                r(alg, "verify_access", "pyjwt"),
                r(alg, "joserfc", "raw"),
                r(alg, "pyjwt", "raw"),
            ]
        )
    headers = ["alg", "ours/raw", "session/raw", "target", "", "ours/joserfc", "ours/PyJWT"]
    print(table([*headers, "joserfc/raw", "PyJWT/raw"], rows))
    if "RS256" in results:
        cached = r("RS256", "session_cached", "raw")
        ours = r("RS256", "verify_access", "raw")
        print(
            f"\ncached session() / raw RS256 verify: {cached:.3f}  "
            f"(target ≤ {CACHED_TARGET}: {verdict(cached, CACHED_TARGET)})"
        )
        print(
            f"RS256 stretch ≤ {STRETCH['RS256']}: {verdict(ours, STRETCH['RS256'])} ({ours:.2f}x)"
        )


def profile(count: int) -> None:
    """Where our uncached RS256 time goes: a stage breakdown, then cProfile."""
    issuer = make_issuer()
    tokens = mint(issuer, count, "RS256")
    verifier = TokenVerifier.from_config(make_config(issuer, cache_size=0))
    _stage_breakdown(issuer, verifier, tokens)
    for label, fn in (
        ("verify_access (RS256, distinct tokens)", verifier.verify_access),
        ("session() cache off (RS256, distinct tokens)", verifier.session),
    ):
        fn(tokens[0])
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(5):
            for token in tokens:
                fn(token)
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime")
        stats.print_stats(18)
        banner(f"cProfile: {label}, {5 * len(tokens)} calls, by own time (inflates small calls)")
        print(out.getvalue().split("\n", 3)[-1].strip("\n"))


def _stage_breakdown(issuer: DevIssuer, verifier: TokenVerifier, tokens: Sequence[str]) -> None:
    """Each step of the uncached path timed alone over the same distinct tokens.

    Uses verifier internals, so it may need updating when they change; the
    totals at the bottom use only the public API.
    """
    from verifier import claim_rules
    from verifier import jws as internals
    from verifier.session import Session

    kid = issuer.kids("RS256")[-1]
    key = verifier.keys.key_for(kid, "RS256")
    parts = [token.split(".") for token in tokens]
    payloads = [internals._b64url(p, "payload") for _, p, _ in parts]
    claims = [internals._load_claims(raw) for raw in payloads]
    items = _raw_items("RS256", tokens)
    raw = _raw_verifier("RS256", key.jwk.jose_key.get_op_key("verify") if key.jwk else None)
    steps: list[tuple[str, Callable[[Any], object], Sequence[Any]]] = [
        ("token.split('.')", lambda t: t.split("."), tokens),
        ("_header() (cached parse)", lambda p: internals._header(p[0]), parts),
        ("_b64url(payload)", lambda p: internals._b64url(p[1], "payload"), parts),
        ("_b64url(signature)", lambda p: internals._b64url(p[2], "signature"), parts),
        ("KeyStore.key_for", lambda _: verifier.keys.key_for(kid, "RS256"), parts),
        ("signing input slice+encode", lambda t: t[: t.rindex(".")].encode("ascii"), tokens),
        ("raw cryptography verify", raw, items),
        ("VerificationKey.verify (our wrapper)", lambda i: key.verify(i[1], i[0]), items),
        ("orjson payload (_load_claims)", internals._load_claims, payloads),
        ("_check_access_type", lambda c: verifier._check_access_type({}, c), claims),
        ("_check_common", lambda c: verifier._check_common(c, check_expiry=True), claims),
        (
            "audience check",
            lambda c: verifier.audiences.intersection(claim_rules.audiences(c)),
            claims,
        ),
        (
            "Session.from_claims",
            lambda c: Session.from_claims(c, None, names=verifier.claim_names),
            claims,
        ),
        ("TOTAL verify_access", verifier.verify_access, tokens),
        ("TOTAL session() cache off", verifier.session, tokens),
    ]
    samples = interleaved({name: (fn, items_) for name, fn, items_ in steps}, rounds=9)
    banner("stage breakdown: uncached RS256, µs per token (median of 9 interleaved rounds)")
    rows = [[name, median(values)] for name, values in samples.items()]
    print(table(["stage", "µs"], rows))
    med = {name: median(values) for name, values in samples.items()}
    non_crypto = med["TOTAL verify_access"] - med["raw cryptography verify"]
    print(
        f"verify_access non-crypto: {non_crypto:.2f} µs; "
        f"session() adds {med['TOTAL session() cache off'] - med['TOTAL verify_access']:.2f} µs"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="distinct tokens per case (200)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (15)")
    parser.add_argument("--quick", action="store_true", help="tiny run: --n 30 --rounds 2")
    parser.add_argument("--alg", action="append", choices=ALGORITHMS, help="repeatable")
    parser.add_argument("--profile", action="store_true", help="cProfile ours (RS256)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.rounds = 30, 2
    # joserfc warns about EdDSA (RFC 9864); the table says which name each peer got.
    warnings.simplefilter("ignore")
    if args.profile:
        profile(args.n)
        return 0
    results = run(args.n, args.rounds, args.alg or ALGORITHMS)
    report(results, args.n, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
