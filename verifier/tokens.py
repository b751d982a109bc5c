"""Verify a compact JWS, then validate its claims (RFC 8725).

Two steps, like joserfc's ``jwt.decode`` then ``JWTClaimsRegistry``:

1. :func:`verify_jws` checks the serialization and the signature and returns
   the header and the raw payload. Compact serialization only; a size cap
   (:func:`check_size`) before any decoding; strict base64url; at most
   :data:`MAX_HEADER_MEMBERS` header members, duplicates refused; ``none``
   refused; ``jku``/``x5u``/``x5c``/``jwk`` never followed (refused);
   unknown ``crit`` and ``b64=false`` refused; the key and its one algorithm
   come from the :class:`~verifier.keys.KeyStore`, never from the token.
2. :class:`TokenVerifier` validates claims with an injected clock: exact
   issuer, audience, numeric dates, leeway, token type and audience
   separation between access and ID tokens. The issuer profile
   (:mod:`verifier.profiles`) says which claim holds the audience and which
   the subject, tells its access tokens from its ID tokens before the
   generic rules do, and maps the claims to the session.

This is the hot path: it does no I/O and parses each segment once.

What a forged token can cost is bounded before its signature is checked
(issue 17): the size cap, the header's member count, nesting and duplicate
check, and the claims' nesting live in :mod:`verifier.limits`, all linear.
The parsed-header cache holds only headers of tokens whose signature
verified, bounded in bytes (64 KiB of segments, none over 1 KiB), so no
request that fails to verify can grow it.
"""

from __future__ import annotations

import binascii
import logging
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .clock import Clock, wall_clock
from .errors import (
    AlgorithmNotAllowed,
    AudienceMismatch,
    ClaimsInvalid,
    HeaderInvalid,
    IdTokenMismatch,
    IssuedInFuture,
    IssuerMismatch,
    SignatureInvalid,
    TokenExpired,
    TokenMalformed,
    TokenMissing,
    TokenNotYetValid,
    TokenTypeInvalid,
)
from .keys import KeyStore
from .limits import MAX_HEADER_MEMBERS, MAX_NESTING_DEPTH, check_size
from .limits import load_claims as _load_claims
from .limits import parse_header as _parse_header
from .profiles import (
    ClaimsMapper,
    Profile,
    ProfileContext,
    TokenKind,
    apply_overrides,
    get_profile,
)
from .session import Session

if TYPE_CHECKING:
    from .config import AppConfig, ClaimsSettings

logger = logging.getLogger("jwtedge")

__all__ = [
    "MAX_HEADER_MEMBERS",
    "MAX_NESTING_DEPTH",
    "CacheStats",
    "Clock",
    "TokenVerifier",
    "check_size",
    "unverified_header",
    "verify_jws",
]

_B64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_INDEX = {char: index for index, char in enumerate(_B64URL.decode())}
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = {0: b"", 2: b"==", 3: b"="}
# Header parameters that point at keys elsewhere: never followed, refused.
_KEY_REFERENCES = ("jku", "x5u", "x5c", "jwk")
_ID_TOKEN_ONLY = ("nonce", "at_hash", "c_hash")


def _b64url(segment: str, what: str) -> bytes:
    """Strict unpadded base64url: alphabet, length and unused bits.

    One translate to the standard alphabet, then ``a2b_base64`` in strict mode
    (which refuses any character outside it), is the fastest strict route; the
    standard-alphabet characters and padding are refused first, since after
    the translate they would pass.
    """
    if not segment:
        raise TokenMalformed(f"the {what} segment is empty")
    if "+" in segment or "/" in segment or "=" in segment:
        raise TokenMalformed(f"the {what} segment is not base64url")
    size = len(segment)
    remainder = size % 4
    if remainder == 1:
        raise TokenMalformed(f"the {what} segment has an impossible length")
    # Non-zero unused bits would let two strings decode to the same bytes.
    if remainder and _B64_INDEX.get(segment[-1], 0) & (0x0F if remainder == 2 else 0x03):
        raise TokenMalformed(f"the {what} segment is not canonical base64url")
    standard = segment.encode("ascii").translate(_TO_STANDARD) + _PADDING[remainder]
    try:
        return binascii.a2b_base64(standard, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise TokenMalformed(f"the {what} segment is not base64url") from exc


def _check_header(header: Mapping[str, Any]) -> tuple[str, str | None]:
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise HeaderInvalid('the header has no string "alg"')
    if alg.lower() == "none":
        raise AlgorithmNotAllowed('algorithm "none" is never allowed', alg="none")
    for name in _KEY_REFERENCES:
        if name in header:
            raise HeaderInvalid(f'the "{name}" header is never followed', member=name)
    if "crit" in header:
        # We understand no extension, so any critical one is unknown (RFC 7515 §4.1.11).
        raise HeaderInvalid('the header names "crit" extensions we do not support')
    if "b64" in header and header["b64"] is not True:
        raise HeaderInvalid('"b64": false (RFC 7797) is not supported')
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise HeaderInvalid('"kid" is not a string')
    typ = header.get("typ")
    if typ is not None and not isinstance(typ, str):
        raise HeaderInvalid('"typ" is not a string')
    return alg, kid


def unverified_header(token: str, *, max_bytes: int = 8192) -> dict[str, Any]:
    """The header of a compact JWS, parsed strictly but NOT verified.

    For choosing a key to fetch; never trust what it returns. ``max_bytes``
    is ``auth.max_token_bytes``: a longer token is refused unread.
    """
    check_size(token, max_bytes)
    if not token.isascii() or token.count(".") != 2:
        raise TokenMalformed("the token is not a compact JWS")
    return dict(_header(token.partition(".")[0])[0])


_Header = tuple[dict[str, Any], str, str | None]


class _VerifiedHeaders:
    """Checked headers of tokens whose signature verified, by their base64url segment.

    Tokens from one key share a header, so this turns header parsing into a
    dict lookup. Only a verified token adds an entry, so a forger cannot fill
    it; a segment longer than ``max_segment`` is never kept, and the segments
    kept add up to at most ``max_bytes`` (then it starts again, empty). Values
    are never handed to callers (they get copies).
    """

    __slots__ = ("entries", "max_bytes", "max_segment", "size")

    def __init__(self, *, max_bytes: int, max_segment: int) -> None:
        self.entries: dict[str, _Header] = {}
        self.max_bytes = max_bytes
        self.max_segment = max_segment
        self.size = 0

    def add(self, segment: str, header: _Header) -> None:
        cost = len(segment)
        if cost > self.max_segment:
            return
        if self.size + cost > self.max_bytes:
            self.entries.clear()
            self.size = 0
        if self.entries.setdefault(segment, header) is header:
            self.size += cost


#: An issuer signs with a few keys and header shapes; 64 KiB holds hundreds.
_HEADERS = _VerifiedHeaders(max_bytes=64 * 1024, max_segment=1024)


def _header(segment: str) -> _Header:
    cached = _HEADERS.entries.get(segment)
    if cached is not None:
        return cached
    header = _parse_header(_b64url(segment, "header"))
    alg, kid = _check_header(header)
    return header, alg, kid


def verify_jws(
    token: str | bytes, keys: KeyStore, *, max_bytes: int = 8192
) -> tuple[dict[str, Any], bytes]:
    """Verify a compact JWS and return ``(header, payload bytes)``.

    Raises a :class:`~verifier.errors.TokenError` subclass; the message never
    contains the token.
    """
    header, payload = _verify(token, keys, max_bytes)
    return dict(header), payload


def _verify(token: str | bytes, keys: KeyStore, max_bytes: int) -> tuple[Mapping[str, Any], bytes]:
    if isinstance(token, bytes | bytearray):
        check_size(token, max_bytes)
        try:
            token = bytes(token).decode("ascii")
        except UnicodeDecodeError as exc:
            raise TokenMalformed("the token is not ASCII") from exc
    if not isinstance(token, str):
        raise TokenMalformed("the token is not a string")
    if not token:
        raise TokenMissing()
    check_size(token, max_bytes)
    if not token.isascii():
        raise TokenMalformed("the token is not ASCII")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenMalformed(f"a compact JWS has 3 segments, this token has {len(parts)}")
    header_b64, payload_b64, signature_b64 = parts

    cached = _HEADERS.entries.get(header_b64)
    header, alg, kid = cached if cached is not None else _header(header_b64)
    payload = _b64url(payload_b64, "payload")
    signature = _b64url(signature_b64, "signature")
    key = keys.key_for(kid, alg)
    signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
    if not key.verify(signing_input, signature):
        raise SignatureInvalid(kid=key.kid, alg=key.alg)
    if cached is None:
        # Only now: a header is remembered once a key of ours has signed it.
        _HEADERS.add(header_b64, (header, alg, kid))
    return header, payload


def _numeric_date(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required or name in claims:
            raise ClaimsInvalid(f'the "{name}" claim is required', claim=name)
        return None
    # bool is an int subclass; NaN and infinities are not dates.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ClaimsInvalid(f'the "{name}" claim is not a NumericDate', claim=name)
    return float(value)


def _is_at_jwt(typ: object) -> bool:
    if not isinstance(typ, str):
        return False
    typ = typ.lower()
    return typ.removeprefix("application/") == "at+jwt"


def _audiences(claims: Mapping[str, Any], name: str = "aud") -> list[str]:
    aud = claims.get(name)
    if aud is None:
        raise AudienceMismatch(f'the token has no "{name}" claim')
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list) and aud and all(isinstance(item, str) for item in aud):
        return aud
    raise ClaimsInvalid(f'the "{name}" claim is neither a string nor a list of strings', claim=name)


def _unverified_claims(token: str | bytes) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """Header and payload of a token, NOT verified: for a profile's early refusals only.

    ``None`` when the token does not parse (verifying it reports why).
    """
    try:
        text = token.decode("ascii") if isinstance(token, bytes | bytearray) else token
        if not isinstance(text, str) or text.count(".") != 2:
            return None
        header_b64, payload_b64, _ = text.split(".")
        header = _header(header_b64)[0]
        claims = _load_claims(_b64url(payload_b64, "payload"))
    except (UnicodeDecodeError, TokenMalformed, HeaderInvalid, AlgorithmNotAllowed):
        return None
    return header, claims


def _overrides(profile: Profile, name: str) -> bool:
    """Whether ``profile`` replaces the base class's method ``name`` (else it is skipped)."""
    return getattr(type(profile), name) is not getattr(Profile, name)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


@dataclass(frozen=True, slots=True)
class _CacheEntry:
    session: Session
    valid_from: float
    valid_until: float
    kids: tuple[str | None, str | None]


class TokenVerifier:
    """Verifies access and ID tokens against baked keys; no I/O.

    Build it with :meth:`from_config`. ``now`` is the clock (seconds since
    the epoch); tests inject a fixed one. Without one, ``time.time()`` is read
    at each check, so ``freezegun.freeze_time`` moves it.

    ``profile`` is the issuer profile (a name or a
    :class:`~verifier.profiles.Profile`; ``claim_names.profile`` when omitted).
    ``claims_mapper`` replaces its mapping of claims to the session (same
    signature as :meth:`Profile.map_claims`); everything else the profile
    declares still applies. ``audience_claim`` overrides the profile's
    audience claim (``"none"``: no audience is checked); ``tenants`` are
    Entra's accepted ``tid`` values; ``role_ranks`` replaces the profile's
    ranking.
    """

    def __init__(
        self,
        keys: KeyStore,
        *,
        issuer: str,
        audiences: tuple[str, ...],
        client_id: str | None = None,
        leeway: float = 30.0,
        max_token_bytes: int = 8192,
        require_at_jwt: bool = False,
        access_claim: str | None = None,
        claim_names: ClaimsSettings | None = None,
        cache_size: int = 10_000,
        now: Clock | None = None,
        profile: str | Profile | None = None,
        claims_mapper: ClaimsMapper | None = None,
        audience_claim: str | None = None,
        tenants: tuple[str, ...] = (),
        role_ranks: Mapping[str, int] | None = None,
        id_token_max_age: float | None = None,
    ) -> None:
        from .config import ClaimsSettings

        self.keys = keys
        self.issuer = issuer
        self.audiences = frozenset(audiences)
        self.client_id = client_id
        self.leeway = leeway
        self.max_token_bytes = max_token_bytes
        self.require_at_jwt = require_at_jwt
        self.access_claim = access_claim
        self.claim_names = claim_names
        # Read at call time unless injected, so freezegun's freeze_time moves it.
        self.now: Clock = now if now is not None else wall_clock
        settings = claim_names if claim_names is not None else ClaimsSettings()
        if profile is None:
            profile = settings.profile
        self.profile: Profile = get_profile(profile) if isinstance(profile, str) else profile
        self.claims_mapper: ClaimsMapper = claims_mapper or self.profile.map_claims
        self.tenants = frozenset(tenants)
        self.context = ProfileContext(
            settings, client_id=client_id, tenants=self.tenants, issuer=issuer
        )
        #: The claim holding the audience; ``None`` when none is checked (explicit opt-in).
        self.audience_claim: str | None = (
            None if audience_claim == "none" else (audience_claim or self.profile.audience_claim)
        )
        # Only for the profile's own claim: an overridden claim (a JWT template's
        # aud) is required like any other.
        self._audience_optional = (
            self.profile.audience_optional and self.audience_claim == self.profile.audience_claim
        )
        if self.audience_claim is None and self.audiences:
            raise ValueError('audiences are given but audience_claim="none" checks none')
        if self.audience_claim is not None and not self.audiences:
            raise ValueError('at least one audience is required (or audience_claim="none")')
        ranks = role_ranks if role_ranks is not None else settings.role_ranks
        self.role_ranks: Mapping[str, int] = (
            MappingProxyType(dict(ranks)) if ranks is not None else self.profile.role_ranks
        )
        #: Every accepted ``iss`` (one unless the profile accepts several forms).
        self.issuers = self.profile.issuers(issuer, self.tenants)
        # Only the hooks a profile overrides are called, so the default
        # profile's path is what it was before profiles existed.
        profile_ = self.profile
        self._token_kind = profile_.token_kind if _overrides(profile_, "token_kind") else None
        self._check_profile = (
            profile_.check_access if _overrides(profile_, "check_access") else None
        )
        self._check_unverified = (
            profile_.check_unverified if _overrides(profile_, "check_unverified") else None
        )
        self._custom_subject = _overrides(profile_, "subject") or _overrides(
            profile_, "subject_key"
        )
        #: Past this age (by ``iat``) an ID token still has to match, but no
        #: longer supplies profile fields (``cookies.refresh_max_age``).
        self.id_token_max_age = id_token_max_age
        self.cache_size = cache_size
        self.cache_stats = CacheStats()
        # LRU by access (and ID) token string; stdlib OrderedDict is enough and
        # keeps the hot path to one lookup and one move_to_end.
        self._cache: OrderedDict[tuple[str, str | None], _CacheEntry] | None = (
            OrderedDict() if cache_size > 0 else None
        )
        keys.on_change(self._evict_kids)

    @classmethod
    def from_config(
        cls,
        config: AppConfig,
        *,
        keys: KeyStore | None = None,
        now: Clock | None = None,
        claims_mapper: ClaimsMapper | None = None,
    ) -> TokenVerifier:
        """A verifier over the baked keys of ``config`` (no I/O).

        ``claims_mapper`` replaces the profile's mapping (see the class doc).
        """
        auth = config.auth
        verifier = cls(
            keys if keys is not None else KeyStore.from_config(config),
            issuer=auth.issuer,
            audiences=auth.audiences,
            client_id=auth.client_id,
            leeway=auth.leeway,
            max_token_bytes=auth.max_token_bytes,
            require_at_jwt=auth.require_at_jwt,
            access_claim=auth.access_claim,
            claim_names=config.claims,
            cache_size=config.cache.size,
            now=now,
            profile=config.claims.profile,
            audience_claim=auth.audience_claim,
            tenants=tuple(auth.tenants or ()),
            role_ranks=config.claims.role_ranks,
            claims_mapper=claims_mapper,
            id_token_max_age=config.cookies.refresh_max_age,
        )
        if auth.audience_claim == "none":
            # Never silent: say at start-up what an unbound token means.
            logger.warning(
                "auth.audience_claim=none: no audience is checked; tokens are bound by "
                "issuer and keys only (issuer %s)",
                auth.issuer,
            )
        return verifier

    def _verify_signature(self, token: str | bytes, which: str) -> tuple[Mapping[str, Any], bytes]:
        """:func:`verify_jws`, with an algorithm refusal saying which token it was."""
        try:
            return _verify(token, self.keys, self.max_token_bytes)
        except AlgorithmNotAllowed as exc:
            # An issuer that signs access and ID tokens with different algorithms
            # under one key is a setup problem: say which token, so it can be found.
            raise AlgorithmNotAllowed(
                f"{which} token: {exc.message}", token=which, **exc.context
            ) from exc

    # -- access tokens -------------------------------------------------------

    def verify_access(self, token: str | bytes, *, check_expiry: bool = True) -> dict[str, Any]:
        """Verify an access token and return its claims, or raise.

        ``check_expiry=False`` is for refresh decisions only (the signature
        and every other claim are still checked).
        """
        return self._verify_access(token, check_expiry)[1]

    def _verify_access(
        self, token: str | bytes, check_expiry: bool = True
    ) -> tuple[Mapping[str, Any], dict[str, Any]]:
        if self._check_unverified is not None and len(token) <= self.max_token_bytes:
            unverified = _unverified_claims(token)
            if unverified is not None:
                self._check_unverified(*unverified, self.context)
        header, payload = self._verify_signature(token, "access")
        claims = _load_claims(payload)
        self._check_access_type(header, claims)
        self._check_common(claims, check_expiry=check_expiry)
        audience_claim = self.audience_claim
        if (
            audience_claim is not None
            and not (self._audience_optional and claims.get(audience_claim) is None)
            and not self.audiences.intersection(_audiences(claims, audience_claim))
        ):
            raise AudienceMismatch()
        if self._check_profile is not None:
            self._check_profile(claims, self.context)
        return header, claims

    def token_kind(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> TokenKind | None:
        """What the profile's access-token markers say: ``"access"``, ``"id"``, or ``None``.

        Every "an ID token is not an access token" rule consults this first:
        ``"id"`` refuses, ``"access"`` accepts without the generic rules,
        ``None`` leaves the decision to them.
        """
        if self._token_kind is None:
            return None
        return self._token_kind(header, claims)

    def _check_access_type(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> None:
        kind = self.token_kind(header, claims) if self._token_kind is not None else None
        if kind == "id":
            raise TokenTypeInvalid("an ID token is not an access token")
        if kind != "access" and any(name in claims for name in _ID_TOKEN_ONLY):
            raise TokenTypeInvalid("an ID token is not an access token")
        if self.require_at_jwt and not _is_at_jwt(header.get("typ")):
            raise TokenTypeInvalid('access tokens must have "typ": "at+jwt"')
        if self.access_claim and self.access_claim not in claims:
            raise TokenTypeInvalid(f'access tokens must carry the "{self.access_claim}" claim')
        if kind is None and not self._is_access_token(header, claims):
            raise TokenTypeInvalid("an ID token is not an access token")

    def _is_access_token(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> bool:
        """Audience separation: the one place that tells access from ID tokens by kind.

        Consulted only when the profile's own marker (:meth:`token_kind`)
        does not decide. Then: when ``auth.client_id`` is not one of ``auth.audience``,
        a token whose ``aud`` contains the client id was issued to the client,
        so it is an ID token unless its ``typ`` is ``at+jwt`` (RFC 9068). An
        ID token can list the API next to the client, and refresh-grant ID
        tokens usually carry no ``nonce``, so ``aud`` and ``nonce`` alone do
        not tell them apart.
        """
        client_id = self.client_id
        if client_id is None or client_id in self.audiences:
            # With the client among the audiences the config demands
            # require_at_jwt or access_claim instead (checked above).
            return True
        aud = claims.get("aud")
        if not isinstance(aud, list) or client_id not in aud:
            # A lone client-id audience is no audience of ours: the audience
            # check refuses it (audience_mismatch), as it does any other.
            return True
        audiences = self.audiences
        if not any(isinstance(item, str) and item in audiences for item in aud):
            return True
        return _is_at_jwt(header.get("typ"))

    def _accepts_issuer(self, iss: object) -> bool:
        return iss == self.issuer or (type(iss) is str and iss in self.issuers)

    def _check_common(self, claims: Mapping[str, Any], *, check_expiry: bool) -> None:
        iss = claims.get("iss")
        if iss != self.issuer and not self._accepts_issuer(iss):
            raise IssuerMismatch()
        now = self.now()
        exp = _numeric_date(claims, "exp", required=True)
        nbf = _numeric_date(claims, "nbf", required=False)
        iat = _numeric_date(claims, "iat", required=False)
        assert exp is not None
        if check_expiry and now >= exp + self.leeway:
            raise TokenExpired(expired_at=exp)
        if nbf is not None and now + self.leeway < nbf:
            raise TokenNotYetValid(not_before=nbf)
        if iat is not None and iat > now + self.leeway:
            raise IssuedInFuture(issued_at=iat)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise ClaimsInvalid('the "sub" claim must be a non-empty string', claim="sub")
        sid = claims.get("sid")
        if sid is not None and not isinstance(sid, str):
            raise ClaimsInvalid('the "sid" claim must be a string', claim="sid")
        if self._custom_subject:
            self.profile.subject(claims)  # claims_invalid when the subject claim is missing

    # -- ID tokens -----------------------------------------------------------

    def verify_id(
        self,
        token: str | bytes,
        *,
        access_claims: Mapping[str, Any] | None = None,
        nonce: str | None = None,
    ) -> dict[str, Any]:
        """Verify an ID token that accompanies ``access_claims``.

        Signature, issuer, audience (``client_id``; ``azp`` when there are
        several audiences), ``sub`` and ``sid`` are checked; its ``exp`` is not
        (the ID token proves the login, the access token carries the session).
        """
        return self._verify_id(token, access_claims, nonce)[1]

    def _verify_id(
        self,
        token: str | bytes,
        access_claims: Mapping[str, Any] | None = None,
        nonce: str | None = None,
    ) -> tuple[Mapping[str, Any], dict[str, Any]]:
        header, payload = self._verify_signature(token, "ID")
        claims = _load_claims(payload)
        if _is_at_jwt(header.get("typ")) or self.token_kind(header, claims) == "access":
            raise TokenTypeInvalid("an access token is not an ID token")
        if not self._accepts_issuer(claims.get("iss")):
            raise IssuerMismatch()
        for name in ("exp", "iat"):
            _numeric_date(claims, name, required=False)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise ClaimsInvalid('the "sub" claim must be a non-empty string', claim="sub")
        self._check_id_audience(claims)
        if nonce is not None and claims.get("nonce") != nonce:
            raise IdTokenMismatch("the ID token nonce does not match the login")
        if access_claims is not None:
            if not self.same_subject(access_claims, claims):
                raise IdTokenMismatch("the ID token is for another subject")
            sid, access_sid = claims.get("sid"), access_claims.get("sid")
            if sid is not None and access_sid is not None and sid != access_sid:
                raise IdTokenMismatch("the ID token is for another session")
        return header, claims

    def _check_id_audience(self, claims: Mapping[str, Any]) -> None:
        if self.client_id is None:
            raise AudienceMismatch("auth.client_id is not set, so ID tokens cannot be checked")
        audiences = _audiences(claims)
        if self.client_id not in audiences:
            raise AudienceMismatch("the ID token is not for this client")
        azp = claims.get("azp")
        if len(audiences) > 1 and azp is None:
            raise AudienceMismatch('an ID token with several audiences must carry "azp"')
        if azp is not None and azp != self.client_id:
            raise AudienceMismatch('the ID token "azp" is another client')

    # -- subjects ------------------------------------------------------------

    def subject(self, claims: Mapping[str, Any]) -> str:
        """The user id in access token claims, by the profile (``sub`` by default)."""
        return self.profile.subject(claims)

    def same_subject(self, first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
        """Whether two verified tokens (access or ID, any order) are for the same user.

        Binds an ID token to its access token and a refresh to its proof, by
        the profile's subject (Okta: ``uid`` against the ID token's ``sub``;
        Entra: ``oid`` and ``tid``, since its ``sub`` is pairwise per app).
        """
        if not self._custom_subject:
            sub = first.get("sub")
            return type(sub) is str and sub == second.get("sub")
        key = self.profile.subject_key(first)
        return bool(key) and key == self.profile.subject_key(second)

    # -- sessions ------------------------------------------------------------

    def session(self, access_token: str | bytes, id_token: str | bytes | None = None) -> Session:
        """Verify the pair and build the :class:`~verifier.session.Session`.

        A pair verified before is served from the cache (the exact token
        strings are the key) after re-checking ``exp``, ``nbf`` and ``iat``
        against the clock; a hit returns the same ``Session`` object.
        """
        cache = self._cache
        key: tuple[str, str | None] | None = None
        # Only str tokens are keys: a bytes ID token must never find the entry
        # of the access token alone.
        if (
            cache is not None
            and isinstance(access_token, str)
            and (id_token is None or isinstance(id_token, str))
        ):
            # The size cap comes before the cache too: hashing the key reads it all.
            limit = self.max_token_bytes
            if len(access_token) > limit or (id_token is not None and len(id_token) > limit):
                check_size(access_token, limit)
                check_size(id_token or "", limit)
            key = (access_token, id_token)
        if cache is not None and key is not None:
            entry = cache.get(key)
            if entry is not None:
                now = self.now()
                if entry.valid_from <= now < entry.valid_until:
                    cache.move_to_end(key)
                    self.cache_stats.hits += 1
                    return entry.session
                del cache[key]
            self.cache_stats.misses += 1
        header, access = self._verify_access(access_token)
        id_header: Mapping[str, Any] | None = None
        id_claims = None
        profile_until = math.inf
        if id_token:
            id_header, id_claims = self._verify_id(id_token, access)
            id_claims, profile_until = self._profile_claims(id_claims)
        session = self._build_session(access, id_claims)
        if cache is not None and key is not None:
            kids = (header.get("kid"), id_header.get("kid") if id_header else header.get("kid"))
            # Served again only while every time check would still pass: after
            # nbf and iat (a clock stepping back), before exp (all with leeway).
            starts = [float(access[name]) for name in ("nbf", "iat") if name in access]
            valid_from = max(starts) - self.leeway if starts else float("-inf")
            # A session with ID-token profile fields lasts only while that
            # token is young enough to supply them.
            valid_until = min(session.expires_at + self.leeway, profile_until)
            entry = _CacheEntry(session, valid_from, valid_until, kids)
            cache[key] = entry
            if len(cache) > self.cache_size:
                cache.popitem(last=False)
        return session

    def _build_session(
        self, access: Mapping[str, Any], id_claims: Mapping[str, Any] | None
    ) -> Session:
        context = self.context
        parts = apply_overrides(self.claims_mapper(access, id_claims, context), access, context)
        user_id = self.profile.subject(access) if self._custom_subject else None
        return Session.from_parts(
            access, id_claims, parts, user_id=user_id, role_ranks=self.role_ranks
        )

    def _profile_claims(self, id_claims: dict[str, Any]) -> tuple[dict[str, Any] | None, float]:
        """The ID token's claims while it may supply profile fields, and until when.

        An ID token proves a login; the cookie that carries it lives for
        ``cookies.refresh_max_age``, so one older than that (by ``iat``; one
        without ``iat`` has no provable age) is left over from a login the
        session no longer rests on: its e-mail and name are not served.
        """
        max_age = self.id_token_max_age
        if max_age is None:
            return id_claims, math.inf
        iat = id_claims.get("iat")
        if iat is None:
            return None, math.inf
        until = float(iat) + max_age  # a NumericDate: _verify_id checked it
        if self.now() >= until:
            return None, math.inf
        return id_claims, until

    def _evict_kids(self, kids: frozenset[str | None]) -> None:
        """Drop cached sessions verified with keys that were removed or replaced."""
        if self._cache is None:
            return
        for key in [key for key, entry in self._cache.items() if kids.intersection(entry.kids)]:
            del self._cache[key]

    def clear_cache(self) -> None:
        if self._cache is not None:
            self._cache.clear()
