"""KeyStore: the keys a token may be verified with, chosen strictly.

Split like panva/jose: this local layer does no I/O; the optional remote
layer (:class:`RemoteKeys`, in ``remote.py``) wraps it. Keys are imported once
(at start-up) into a dict by kid, and each key is bound to exactly one
algorithm (RFC 8725 §3.1): the JWK's ``alg``; else ``auth.rsa_alg`` for RSA,
the curve's ES algorithm for EC, Ed25519 for OKP. The token's ``alg`` never
chooses the algorithm, it only has to agree. ``EdDSA`` and ``Ed25519`` are one
algorithm for an Ed25519 key.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc.jws import JWSRegistry

from .config_types import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, MIN_HS_SECRET_BYTES
from .errors import AlgorithmNotAllowed, KeyNotFound
from .jwks import EC_CURVE_ALGS, JWKSet, PublicJWK

if TYPE_CHECKING:
    from .config import AppConfig
    from .remote import RemoteKeys, RemoteKeysStats, RemoteMode

# The remote layer lives in remote.py (this module stays the no-I/O part). Its
# names are still importable from here, but loaded only when asked for
# (PEP 562): importing the KeyStore must not import remote -> fetch -> httpx2.
_REMOTE_NAMES = frozenset({"RemoteKeys", "RemoteKeysStats", "RemoteMode"})

__all__ = [
    "KeyStore",
    "RemoteKeys",
    "RemoteKeysStats",
    "RemoteMode",
    "VerificationKey",
    "canonical_alg",
]

_HMAC_DIGESTS = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}

Verify = Callable[[bytes, bytes], bool]


def __getattr__(name: str) -> object:
    if name in _REMOTE_NAMES:
        from . import remote

        return getattr(remote, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def canonical_alg(alg: str) -> str:
    """``EdDSA`` (RFC 8037) and ``Ed25519`` (RFC 9864) name one algorithm here."""
    return "Ed25519" if alg == "EdDSA" else alg


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A key bound to its one algorithm, ready to verify signatures."""

    kid: str | None
    alg: str
    #: ``verify(signing_input, signature) -> bool``; never raises on bad input.
    verify: Verify = field(repr=False, compare=False)
    jwk: PublicJWK | None = field(default=None, repr=False, compare=False)


def _joserfc_verifier(alg: str, jwk: PublicJWK) -> Verify:
    """joserfc's algorithm model for ``alg`` over the imported key.

    The hot path uses :func:`_direct_verifier`; this one stays as the
    reference the tests compare it with.
    """
    model = JWSRegistry.algorithms[alg]
    jose_key = jwk.jose_key

    def verify(signing_input: bytes, signature: bytes) -> bool:
        try:
            return bool(model.verify(signing_input, signature, jose_key))
        except (InvalidSignature, ValueError):
            # e.g. a signature longer than the RSA modulus.
            return False

    return verify


_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}


def _direct_verifier(alg: str, jwk: PublicJWK) -> Verify:
    """The same checks as joserfc's models, with padding and hash objects
    built once per key instead of per request (joserfc's ``get_op_key`` and
    object construction are ~1 µs a call on the hot path)."""
    public_key = jwk.public_key
    digest = _HASHES.get(alg[2:])
    if isinstance(public_key, rsa.RSAPublicKey) and digest is not None:
        rsa_key = public_key
        hash_ = digest()
        pad: padding.AsymmetricPadding = (
            padding.PKCS1v15()
            if alg.startswith("RS")
            else padding.PSS(mgf=padding.MGF1(digest()), salt_length=hash_.digest_size)
        )

        def verify_rsa(signing_input: bytes, signature: bytes) -> bool:
            try:
                rsa_key.verify(signature, signing_input, pad, hash_)
            except (InvalidSignature, ValueError):
                return False
            return True

        return verify_rsa
    if isinstance(public_key, ec.EllipticCurvePublicKey) and digest is not None:
        ec_key = public_key
        ecdsa = ec.ECDSA(digest())
        size = (ec_key.key_size + 7) // 8

        def verify_ec(signing_input: bytes, signature: bytes) -> bool:
            # JWS carries raw r || s of fixed width (RFC 7518 §3.4), not DER.
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            try:
                ec_key.verify(encode_dss_signature(r, s), signing_input, ecdsa)
            except (InvalidSignature, ValueError):
                return False
            return True

        return verify_ec
    if isinstance(public_key, ed25519.Ed25519PublicKey) and alg == "Ed25519":
        ed_key = public_key

        def verify_ed25519(signing_input: bytes, signature: bytes) -> bool:
            try:
                ed_key.verify(signature, signing_input)
            except (InvalidSignature, ValueError):
                return False
            return True

        return verify_ed25519
    return _joserfc_verifier(alg, jwk)


def _hmac_verifier(alg: str, secret: bytes) -> Verify:
    digest = _HMAC_DIGESTS[alg]

    def verify(signing_input: bytes, signature: bytes) -> bool:
        expected = hmac.new(secret, signing_input, digest).digest()
        return hmac.compare_digest(expected, signature)

    return verify


def key_algorithm(jwk: PublicJWK, rsa_alg: str = "RS256") -> str:
    """The one algorithm a key is used with (RFC 8725 §3.1)."""
    if jwk.alg is not None:
        return canonical_alg(jwk.alg)
    if jwk.kty == "RSA":
        return rsa_alg
    if jwk.kty == "EC":
        assert jwk.crv is not None
        return EC_CURVE_ALGS[jwk.crv]
    return "Ed25519"


class KeyStore:
    """Baked keys by kid, each with one algorithm; no I/O.

    ``algorithms`` is the allowlist (default: every asymmetric algorithm,
    plus HS* when ``hs_secret`` is given). A JWKS never yields a usable
    symmetric key; HS* verification needs the explicit ``hs_secret``.
    """

    def __init__(
        self,
        jwks: JWKSet | None = None,
        *,
        rsa_alg: str = "RS256",
        algorithms: Collection[str] | None = None,
        hs_secret: bytes | None = None,
    ) -> None:
        if hs_secret is not None and len(hs_secret) < MIN_HS_SECRET_BYTES:
            raise ValueError(f"hs_secret must be at least {MIN_HS_SECRET_BYTES} bytes")
        if algorithms is None:
            algorithms = ASYMMETRIC_ALGORITHMS + (HMAC_ALGORITHMS if hs_secret else ())
        self.allowed = frozenset(canonical_alg(alg) for alg in algorithms)
        self.rsa_alg = rsa_alg
        self._hs_keys: dict[str, VerificationKey] = {}
        if hs_secret is not None:
            for alg in HMAC_ALGORITHMS:
                verify = _hmac_verifier(alg, hs_secret)
                self._hs_keys[alg] = VerificationKey(kid=None, alg=alg, verify=verify)
        self._by_kid: dict[str, VerificationKey] = {}
        self._without_kid: tuple[VerificationKey, ...] = ()
        self._listeners: list[Callable[[frozenset[str | None]], None]] = []
        self.jwks: JWKSet | None = None
        if jwks is not None:
            self.load(jwks)

    @classmethod
    def from_config(cls, config: AppConfig) -> KeyStore:
        """The baked keys of ``config.auth`` (no I/O)."""
        auth = config.auth
        secret = auth.hs_secret.get_secret_value().encode() if auth.hs_secret else None
        return cls(
            auth.jwks,
            rsa_alg=auth.rsa_alg,
            algorithms=auth.allowed_algorithms,
            hs_secret=secret,
        )

    def load(self, jwks: JWKSet) -> None:
        """Replace the key set. Keys are imported here, never per request."""
        by_kid: dict[str, VerificationKey] = {}
        without_kid: list[VerificationKey] = []
        for jwk in jwks.keys:
            alg = key_algorithm(jwk, self.rsa_alg)
            key = VerificationKey(kid=jwk.kid, alg=alg, verify=_direct_verifier(alg, jwk), jwk=jwk)
            if jwk.kid is None:
                without_kid.append(key)
            else:
                by_kid[jwk.kid] = key
        changed = self._changed_kids(jwks)
        # Swap whole dicts so a concurrent reader never sees a half-built set.
        self._by_kid, self._without_kid, self.jwks = by_kid, tuple(without_kid), jwks
        if changed:
            for listener in self._listeners:
                listener(changed)

    def on_change(self, listener: Callable[[frozenset[str | None]], None]) -> None:
        """Call ``listener(kids)`` when keys are removed or replaced (for caches)."""
        self._listeners.append(listener)

    def _changed_kids(self, new: JWKSet) -> frozenset[str | None]:
        """Kids whose key disappeared or changed; ``None`` stands for kid-less keys."""
        if self.jwks is None:
            return frozenset()
        old = {(key.kid, key.thumbprint) for key in self.jwks.keys}
        kept = {(key.kid, key.thumbprint) for key in new.keys}
        return frozenset(kid for kid, _ in old - kept)

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_kid))

    def has_kid(self, kid: str) -> bool:
        return kid in self._by_kid

    def __len__(self) -> int:
        return len(self._by_kid) + len(self._without_kid)

    def key_for(self, kid: str | None, alg: str) -> VerificationKey:
        """The key for a token's ``kid`` and ``alg``, or a ``VerifierError``.

        ``alg`` must be allowed and equal to the key's one algorithm. A token
        without ``kid`` matches only when exactly one key fits its ``alg``.
        """
        alg = canonical_alg(alg)
        if alg not in self.allowed:
            raise AlgorithmNotAllowed(
                f"algorithm {alg!r} is not allowed", alg=alg, setting="auth.algorithms"
            )
        if alg in self._hs_keys:
            return self._hs_keys[alg]
        if alg.startswith("HS"):
            raise AlgorithmNotAllowed("HS* needs auth.hs_secret", alg=alg)
        if kid is None:
            return self._only_key_for(alg)
        key = self._by_kid.get(kid)
        if key is None:
            raise KeyNotFound("no baked key has the token's kid", kid=_short(kid))
        if key.alg != alg:
            raise _wrong_alg(key, alg, kid, self.rsa_alg)
        return key

    def _only_key_for(self, alg: str) -> VerificationKey:
        fits = [key for key in self._all_keys() if key.alg == alg]
        if len(fits) != 1:
            raise KeyNotFound(
                f"the token has no kid and {len(fits)} keys fit {alg}: exactly one must", alg=alg
            )
        return fits[0]

    def _all_keys(self) -> list[VerificationKey]:
        return [*self._by_kid.values(), *self._without_kid]

    def snapshot(self) -> Mapping[str, VerificationKey]:
        """A read-only view of the keys by kid (for diagnostics)."""
        return dict(self._by_kid)


def _wrong_alg(key: VerificationKey, alg: str, kid: str, rsa_alg: str) -> AlgorithmNotAllowed:
    """The refusal for a token whose ``alg`` is not its key's one algorithm.

    Names the token's algorithm, the key's and where the key's came from: the
    JWK's ``alg``, or ``auth.rsa_alg`` for an RSA JWK without one (an issuer
    that signs RS256 and PS256 tokens with one such key cannot be served).
    """
    short = _short(kid)
    jwk = key.jwk
    if jwk is not None and jwk.alg is None and jwk.kty == "RSA":
        setting = "auth.rsa_alg"
        source = (
            f"auth.rsa_alg (APP_CONFIG_AUTH__RSA_ALG={rsa_alg}) since the JWK has no alg; "
            "one key keeps one algorithm: give each issuer key an alg, or have the issuer "
            "sign every token with one algorithm"
        )
    elif jwk is not None and jwk.alg is None:
        setting = "jwk.crv"
        source = f"its curve {jwk.crv} since the JWK has no alg"
    else:
        setting = "jwk.alg"
        source = "the JWK's alg"
    return AlgorithmNotAllowed(
        f"alg {alg} is not the key's algorithm: key {short!r} is used with {key.alg} only, "
        f"from {source}",
        alg=alg,
        key_alg=key.alg,
        kid=short,
        setting=setting,
    )


def _short(kid: str) -> str:
    """Kids come from the token: keep what we echo short and printable."""
    text = kid[:64]
    return "".join(ch if ch.isprintable() else "?" for ch in text)
