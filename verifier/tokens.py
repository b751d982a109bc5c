"""Verify a compact JWS, then validate its claims (RFC 8725).

Two steps, like joserfc's ``jwt.decode`` then ``JWTClaimsRegistry``:

1. :func:`~verifier.jws.verify_jws` (:mod:`verifier.jws`) checks the
   serialization and the signature and returns the header and the raw
   payload, under the bounds of :mod:`verifier.limits`.
2. :class:`TokenVerifier` validates claims with an injected clock: exact
   issuer, audience, numeric dates, leeway, token type and audience
   separation between access and ID tokens. The issuer profile
   (:mod:`verifier.profiles`) says which claim holds the audience and which
   the subject, tells its access tokens from its ID tokens before the
   generic rules do, and maps the claims to the session.

This is the hot path: it does no I/O and parses each segment once. A pair
verified before is served by :mod:`verifier.session_cache` (a digest of both
tokens, a dict lookup, a clock read).

What a forged token can cost is bounded before its signature is checked
(issue 17): the size cap, the header's member count, nesting and duplicate
check, and the claims' nesting live in :mod:`verifier.limits`, all linear;
the caches hold only what verified.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .claim_rules import audiences as _audiences
from .claim_rules import is_at_jwt as _is_at_jwt
from .claim_rules import numeric_date as _numeric_date
from .clock import Clock, wall_clock
from .errors import (
    AlgorithmNotAllowed,
    AudienceMismatch,
    ClaimsInvalid,
    IdTokenMismatch,
    IssuedInFuture,
    IssuerMismatch,
    TokenExpired,
    TokenNotYetValid,
    TokenTypeInvalid,
    VerifierError,
)
from .jws import _unverified_claims, _verify, unverified_header, verify_jws
from .keys import KeyStore
from .limits import MAX_HEADER_MEMBERS, MAX_NESTING_DEPTH, check_size
from .limits import load_claims as _load_claims
from .profiles import (
    ClaimsMapper,
    Profile,
    ProfileContext,
    TokenKind,
    apply_overrides,
    get_profile,
)
from .session import Session, shared_parts
from .session_cache import CacheStats, ExpiredProofs, SessionCache, cache_key

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

_ID_TOKEN_ONLY = ("nonce", "at_hash", "c_hash")


def _overrides(profile: Profile, name: str) -> bool:
    """Whether ``profile`` replaces the base class's method ``name`` (else it is skipped)."""
    return getattr(type(profile), name) is not getattr(Profile, name)


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
        self._cache = SessionCache(cache_size) if cache_size > 0 else None
        #: Genuine access tokens that only expired: their refresh proof (one verify, not two).
        self._expired = ExpiredProofs()
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
        and every other claim are still checked). A token that failed
        :meth:`session` a moment ago on its expiry alone is not verified
        again: its claims were kept (:class:`~verifier.session_cache.ExpiredProofs`),
        and only the clock checks run anew.
        """
        if not check_expiry:
            kept = self._expired.get(token)
            if kept is not None:
                self._check_common(kept, check_expiry=False)
                return dict(kept)
        return self._verify_access(token, check_expiry)[1]

    def _verify_access(
        self, token: str | bytes, check_expiry: bool = True
    ) -> tuple[Mapping[str, Any], dict[str, Any], bytes]:
        if self._check_unverified is not None and len(token) <= self.max_token_bytes:
            unverified = _unverified_claims(token)
            if unverified is not None:
                self._check_unverified(*unverified, self.context)
        header, payload = self._verify_signature(token, "access")
        claims = _load_claims(payload)
        self._check_access_type(header, claims)
        expired = self._check_common(claims, check_expiry=check_expiry)
        try:
            audience_claim = self.audience_claim
            if (
                audience_claim is not None
                and not (self._audience_optional and claims.get(audience_claim) is None)
                and not self.audiences.intersection(_audiences(claims, audience_claim))
            ):
                raise AudienceMismatch()
            if self._check_profile is not None:
                self._check_profile(claims, self.context)
        except VerifierError:
            if expired is None:
                raise
            raise expired from None  # the expiry is reported first, as it always was
        if expired is not None:
            # Genuine, every check passed but exp: the refresh proof of this
            # request reads these claims instead of verifying the token again.
            self._expired.remember(token, claims)
            raise expired
        return header, claims, payload

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

    def _check_common(
        self, claims: Mapping[str, Any], *, check_expiry: bool
    ) -> TokenExpired | None:
        """The checks every access token passes; the expiry error is returned, not
        raised, so the caller can tell a genuine token that only expired.

        Checks after the expiry never hide it: when the token expired and a
        later check fails, the expiry error is raised (it was always first).
        """
        iss = claims.get("iss")
        if iss != self.issuer and not self._accepts_issuer(iss):
            raise IssuerMismatch()
        now = self.now()
        exp = _numeric_date(claims, "exp", required=True)
        nbf = _numeric_date(claims, "nbf", required=False)
        iat = _numeric_date(claims, "iat", required=False)
        assert exp is not None
        expired = (
            TokenExpired(expired_at=exp) if check_expiry and now >= exp + self.leeway else None
        )
        try:
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
        except VerifierError:
            if expired is None:
                raise
            raise expired from None
        return expired

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
    ) -> tuple[Mapping[str, Any], dict[str, Any], bytes]:
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
        return header, claims, payload

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

        A pair verified before is served from the cache (keyed by a digest of
        both whole tokens, :mod:`verifier.session_cache`) after re-checking
        ``exp``, ``nbf`` and ``iat`` against the clock; a hit returns the same
        ``Session`` object.
        """
        cache = self._cache
        key: bytes | None = None
        # Only str tokens are keys: a bytes ID token must never find the entry
        # of the access token alone.
        if (
            cache is not None
            and isinstance(access_token, str)
            and (id_token is None or isinstance(id_token, str))
        ):
            # The size cap comes before the cache too: the digest reads it all.
            limit = self.max_token_bytes
            if len(access_token) > limit or (id_token is not None and len(id_token) > limit):
                check_size(access_token, limit)
                check_size(id_token or "", limit)
            # A hot token's digest is remembered (by its exact string) once it verified.
            exact = access_token if id_token is None else (access_token, id_token)
            key = cache.digests.get(exact)
            remembered = key is not None
            if not remembered:
                key = cache_key(access_token, id_token)
            if key is not None:
                # SessionCache.get, inline: this is every cached request.
                entry = cache.entries.get(key)
                if entry is not None:
                    if entry.valid_from <= self.now() < entry.valid_until:
                        cache.entries.move_to_end(key)
                        self.cache_stats.hits += 1
                        if not remembered:
                            cache.remember(exact, key)
                        return entry.session
                    del cache.entries[key]
                self.cache_stats.misses += 1
        header, access, payload = self._verify_access(access_token)
        id_header: Mapping[str, Any] | None = None
        id_claims = id_payload = None
        profile_until = math.inf
        if id_token:
            id_header, id_claims, id_payload = self._verify_id(id_token, access)
            id_claims, profile_until = self._profile_claims(id_claims)
        if cache is None or key is None:
            return self._build_session(access, id_claims)
        # A cached session keeps the payload bytes, not the parsed claims.
        session = self._build_session(access, id_claims, payload, id_payload)
        kid = header.get("kid")
        # Served again only while every time check would still pass: after
        # nbf and iat (a clock stepping back), before exp (all with leeway).
        starts = [float(access[name]) for name in ("nbf", "iat") if name in access]
        cache.put(
            key,
            session,
            valid_from=max(starts) - self.leeway if starts else -math.inf,
            # A session with ID-token profile fields lasts only while that
            # token is young enough to supply them.
            valid_until=min(session.expires_at + self.leeway, profile_until),
            kids=(kid, id_header.get("kid") if id_header else kid),
        )
        cache.remember(exact, key)
        return session

    def _build_session(
        self,
        access: Mapping[str, Any],
        id_claims: Mapping[str, Any] | None,
        payload: bytes | None = None,
        id_payload: bytes | None = None,
    ) -> Session:
        context = self.context
        parts = apply_overrides(self.claims_mapper(access, id_claims, context), access, context)
        if payload is not None:
            # Cached: what it has in common with other cached sessions is kept once.
            parts = shared_parts(parts)
        user_id = self.profile.subject(access) if self._custom_subject else None
        return Session.from_parts(
            access,
            id_claims,
            parts,
            user_id=user_id,
            role_ranks=self.role_ranks,
            access_payload=payload,
            id_payload=id_payload,
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
        """Drop cached sessions (and kept proofs) verified with removed or replaced keys."""
        self._expired.clear()
        if self._cache is not None:
            self._cache.evict_kids(kids)

    def clear_cache(self) -> None:
        self._expired.clear()
        if self._cache is not None:
            self._cache.clear()
