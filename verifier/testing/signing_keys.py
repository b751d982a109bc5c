"""The dev issuer's signing keys: RSA, EC and Ed25519, each with a readable, unique kid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from joserfc.jwk import ECKey, OKPKey, RSAKey

__all__ = ["INITIAL_ALGS", "KEY_ALGORITHMS", "SigningKey", "generate_key"]

RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
OKP_ALGS = ("Ed25519", "EdDSA")
#: Algorithms a DevIssuer key can be created for (its JWK ``alg``).
KEY_ALGORITHMS = (*RSA_ALGS, *EC_CURVES, *OKP_ALGS)
INITIAL_ALGS = ("RS256", "ES256", "Ed25519")


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str
    key: RSAKey | ECKey | OKPKey

    @property
    def signing_algs(self) -> tuple[str, ...]:
        """Every algorithm this private key can physically sign with."""
        if isinstance(self.key, RSAKey):
            return RSA_ALGS
        if isinstance(self.key, ECKey):
            return tuple(a for a, crv in EC_CURVES.items() if crv == self.key.curve_name)
        return OKP_ALGS

    def jwk(self, *, private: bool) -> dict[str, Any]:
        return {"kid": self.kid, "use": "sig", "alg": self.alg, **self.key.as_dict(private=private)}


def generate_key(alg: str, serial: int) -> SigningKey:
    key: RSAKey | ECKey | OKPKey
    if alg in RSA_ALGS:
        key = RSAKey.generate_key(2048)
    elif alg in EC_CURVES:
        key = ECKey.generate_key(EC_CURVES[alg])
    elif alg in OKP_ALGS:
        key = OKPKey.generate_key("Ed25519")
    else:
        raise ValueError(f"unsupported key algorithm {alg!r}; expected one of {KEY_ALGORITHMS}")
    # The serial keeps kids readable and ordered; the thumbprint prefix keeps them
    # distinct across DevIssuer instances, so two issuers never share a kid by accident.
    return SigningKey(kid=f"{alg.lower()}-{serial}-{key.thumbprint()[:8]}", alg=alg, key=key)
