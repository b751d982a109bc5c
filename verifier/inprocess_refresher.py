"""Single-flight refresh in one process: :class:`InProcessRefresher`.

The coordinator described in :mod:`verifier.refresh` (one flight per refresh
token, the grace for parallel tabs, the proof rule and cooldown, memories of
spent and refused tokens), for one process; :mod:`verifier.redis_refresher`
extends it to every process on one Redis. Also the parts both share: the
result and stats types, :func:`token_key`, and :class:`Kept` /
:func:`mark_retrieved`, the seams the Redis refresher builds its own flights
from.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote_plus

import httpx2

from .config import AppConfig
from .cookies import TokenSet
from .errors import RefreshFailed, VerifierError
from .oauth import TokenEndpointUnavailable, oauth_error, post_form
from .tokens import TokenVerifier

__all__ = [
    "COOLDOWN_MEMORY",
    "FAILED_MEMORY",
    "SPENT_MEMORY",
    "ClientAuth",
    "InProcessRefresher",
    "Kept",
    "RefreshResult",
    "RefreshStats",
    "mark_retrieved",
    "token_key",
]

logger = logging.getLogger("jwtedge.refresh")

ClientAuth = Literal["client_secret_basic", "client_secret_post", "none"]
#: How many spent refresh-token hashes are remembered (to never replay them).
SPENT_MEMORY = 100_000
#: How many refused refresh-token hashes are remembered, in their own memory:
#: failures never push a spent token out.
FAILED_MEMORY = 10_000
#: How many proof tokens can be cooling down at once (the oldest go first).
COOLDOWN_MEMORY = 100_000


def token_key(refresh_token: str) -> str:
    """The only form in which a refresh token is stored or counted."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """A verified new token set and its access claims."""

    tokens: TokenSet
    claims: Mapping[str, Any] = field(repr=False)

    def __repr__(self) -> str:
        return f"RefreshResult(sub={self.claims.get('sub')!r})"


@dataclass
class RefreshStats:
    """Counters, keyed by outcome; never by token."""

    calls: int = 0
    ok: int = 0
    failed: int = 0
    joined: int = 0
    grace_reused: int = 0
    reuse_refused: int = 0


def mark_retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a flight's exception as seen even if every waiter went away (a done callback)."""
    if not future.cancelled():
        future.exception()


def _proof_matches(
    proof: Mapping[str, Any] | None, claims: Mapping[str, Any], verifier: TokenVerifier
) -> bool:
    # Same user by the issuer profile's subject (Okta uid, Entra oid+tid), not raw sub.
    if proof is None or not verifier.same_subject(proof, claims):
        return False
    sid = claims.get("sid")
    return sid is None or proof.get("sid") == sid


@dataclass(slots=True)
class Kept:
    """A flight's result, handed out (to the same proof) until ``until``."""

    result: RefreshResult
    until: float


class InProcessRefresher:
    """Single-flight refresh for one process.

    ``cooldown`` is how long a proof token is refused after its flight failed
    (``timeout`` by default); ``spent_memory`` and ``failed_memory`` bound the
    two memories of refresh-token hashes (spent, and refused by the issuer).
    """

    def __init__(
        self,
        *,
        token_endpoint: str,
        client_id: str,
        verifier: TokenVerifier,
        client_secret: str | None = None,
        client_auth: ClientAuth | None = None,
        grace: float = 10.0,
        timeout: float = 10.0,
        cooldown: float | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        now: Callable[[], float] = time.monotonic,
        spent_memory: int = SPENT_MEMORY,
        failed_memory: int = FAILED_MEMORY,
        resource: Sequence[str] = (),
    ) -> None:
        self.token_endpoint = token_endpoint
        #: RFC 8707 resource indicators sent on every refresh grant (login.resource).
        self.resource = tuple(resource)
        self.client_id = client_id
        self._client_secret = client_secret
        self.client_auth: ClientAuth = client_auth or (
            "client_secret_basic" if client_secret else "none"
        )
        self.verifier = verifier
        self.grace = grace
        self.timeout = timeout
        #: Seconds a proof token is refused after its flight failed (``timeout`` by default).
        self.cooldown = timeout if cooldown is None else cooldown
        self.now = now
        self.stats = RefreshStats()
        self._transport = transport
        self._client: httpx2.AsyncClient | None = None
        self._flights: dict[str, asyncio.Future[RefreshResult]] = {}
        self._kept: dict[str, Kept] = {}
        # Two memories, each with its own bound: refused tokens cannot crowd out spent ones.
        self.spent_memory = spent_memory
        self.failed_memory = failed_memory
        self._spent: OrderedDict[str, None] = OrderedDict()
        self._failed: OrderedDict[str, None] = OrderedDict()
        #: proof key -> the refresh-token key its issuer call is for (in flight).
        self._proof_flights: dict[str, str] = {}
        #: proof key -> until when it is refused; insertion order is expiry order.
        self._cooling: OrderedDict[str, float] = OrderedDict()

    @classmethod
    def from_config(
        cls,
        config: AppConfig,
        verifier: TokenVerifier,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> InProcessRefresher | None:
        """The refresher ``config`` asks for, or ``None`` when it cannot refresh."""
        endpoint = config.endpoint("token")
        if not config.refresh.enabled or endpoint is None or config.auth.client_id is None:
            return None
        secret = config.auth.client_secret
        return cls(
            token_endpoint=endpoint,
            client_id=config.auth.client_id,
            client_secret=secret.get_secret_value() if secret else None,
            verifier=verifier,
            grace=config.refresh.grace,
            timeout=config.refresh.timeout,
            cooldown=config.refresh.timeout,
            transport=transport,
            now=now,
            resource=config.login.resource,
        )

    def __repr__(self) -> str:
        return f"InProcessRefresher(token_endpoint={self.token_endpoint!r})"

    @property
    def client(self) -> httpx2.AsyncClient:
        """The HTTP client, built on first use (its TLS context costs ~30 ms at start-up)."""
        if self._client is None:
            self._client = httpx2.AsyncClient(
                transport=self._transport,
                timeout=self.timeout,
                follow_redirects=False,
                trust_env=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def refresh(
        self,
        refresh_token: str,
        *,
        proof: Mapping[str, Any] | None,
        proof_key: str | None = None,
    ) -> RefreshResult:
        """New tokens for ``refresh_token`` (see :class:`Refresher`)."""
        key = token_key(refresh_token)
        remembered = self._from_memory(key, proof)
        if remembered is not None:
            return remembered
        flight = self._flights.get(key)
        if flight is not None:
            self.stats.joined += 1
            result = await asyncio.shield(flight)
            return self._hand_out(result, proof, joined=True)
        self._claim_proof(proof_key, key)
        # The call runs as its own task: a client that disconnects cancels its
        # request, not the refresh that other requests are waiting for.
        flight = asyncio.ensure_future(self._fly(key, refresh_token, proof, proof_key))
        flight.add_done_callback(mark_retrieved)
        self._flights[key] = flight
        return await asyncio.shield(flight)

    async def _fly(
        self,
        key: str,
        refresh_token: str,
        proof: Mapping[str, Any] | None,
        proof_key: str | None,
    ) -> RefreshResult:
        try:
            result = await self._call_issuer(refresh_token, proof)
        except RefreshFailed as exc:
            self._remember_failure(key, exc)
            self._release_proof(proof_key, key, failed=True)
            raise
        else:
            self._kept[key] = Kept(result, self.now() + self.grace)
            self._remember_spent(key)
            self._release_proof(proof_key, key, failed=False)
            return result
        finally:
            self._flights.pop(key, None)

    def _remember_failure(self, key: str, exc: RefreshFailed) -> None:
        """Never send this token again when the issuer refused or rotated it."""
        reason = exc.context.get("reason")
        if reason == "invalid_grant":
            self._remember(self._failed, key, self.failed_memory)
        elif reason in ("bad_tokens", "spent"):
            # The issuer answered 200 (or another process spent it): it has rotated
            # the token, and a replay could only revoke the whole family.
            self._remember_spent(key)

    def _from_memory(self, key: str, proof: Mapping[str, Any] | None) -> RefreshResult | None:
        """A result kept for the grace window, a refusal for a spent or refused
        token, or ``None``."""
        self._forget_expired()
        kept = self._kept.get(key)
        if kept is not None:
            return self._hand_out(kept.result, proof)
        if key in self._spent:
            self.stats.reuse_refused += 1
            raise RefreshFailed("this refresh token was already spent", reason="spent")
        if key in self._failed:
            self.stats.reuse_refused += 1
            # The issuer's own answer, remembered: the middleware treats it the same.
            raise RefreshFailed(
                "the issuer already refused this refresh token",
                reason="invalid_grant",
                remembered=True,
            )
        return None

    # -- the proof cooldown ---------------------------------------------------

    def _claim_proof(self, proof_key: str | None, key: str) -> None:
        """Let this proof drive an issuer call for ``key``, or refuse (``cooldown``).

        Refused while the proof cools down after a failed flight, and while
        it drives a call for another refresh token: a browser sends one refresh
        token with its tokens, so one proof with many refresh tokens is a
        stranger guessing, and each guess would be a call at the issuer.
        """
        if proof_key is None:
            return
        self._forget_cooled()
        if proof_key in self._cooling:
            raise RefreshFailed(
                "a refresh with this token failed a moment ago; try again later",
                reason="cooldown",
            )
        holder = self._proof_flights.get(proof_key)
        if holder is not None and holder != key:
            raise RefreshFailed("a refresh with this token is already under way", reason="cooldown")
        self._proof_flights[proof_key] = key

    def _release_proof(self, proof_key: str | None, key: str, *, failed: bool) -> None:
        if proof_key is None:
            return
        if self._proof_flights.get(proof_key) == key:
            del self._proof_flights[proof_key]
        if failed:
            self._cool_down(proof_key)

    def _cool_down(self, proof_key: str) -> None:
        """Refuse refreshes carrying this proof for ``cooldown`` seconds from now."""
        self._cooling.pop(proof_key, None)
        self._cooling[proof_key] = self.now() + self.cooldown
        while len(self._cooling) > COOLDOWN_MEMORY:
            self._cooling.popitem(last=False)

    def _forget_cooled(self) -> None:
        now = self.now()
        cooling = self._cooling
        while cooling:
            proof_key, until = next(iter(cooling.items()))
            if until > now:
                return
            del cooling[proof_key]

    def _hand_out(
        self, result: RefreshResult, proof: Mapping[str, Any] | None, *, joined: bool = False
    ) -> RefreshResult:
        if not _proof_matches(proof, result.claims, self.verifier):
            self.stats.reuse_refused += 1
            raise RefreshFailed("the old refresh token alone does not get the new tokens")
        if not joined:
            self.stats.grace_reused += 1
        return result

    def _forget_expired(self) -> None:
        now = self.now()
        for key in [key for key, kept in self._kept.items() if kept.until <= now]:
            del self._kept[key]

    def _remember_spent(self, key: str) -> None:
        self._remember(self._spent, key, self.spent_memory)
        # Spent outranks refused: the entry moves to the memory failures cannot touch.
        self._failed.pop(key, None)

    @staticmethod
    def _remember(memory: OrderedDict[str, None], key: str, size: int) -> None:
        memory[key] = None
        memory.move_to_end(key)
        while len(memory) > size:
            memory.popitem(last=False)

    async def _call_issuer(
        self, refresh_token: str, proof: Mapping[str, Any] | None
    ) -> RefreshResult:
        self.stats.calls += 1
        form: dict[str, str | list[str]] = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
        }
        if self.resource:
            # Without it an issuer with resource indicators (oidc-provider) mints an
            # opaque, userinfo-only access token at the first refresh.
            form["resource"] = list(self.resource)
        headers = {"Accept": "application/json"}
        if self.client_auth == "client_secret_basic" and self._client_secret:
            # RFC 6749 §2.3.1: form-encode both parts before Basic.
            pair = f"{quote_plus(self.client_id)}:{quote_plus(self._client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = self.client_id
            if self.client_auth == "client_secret_post" and self._client_secret:
                form["client_secret"] = self._client_secret
        try:
            status, body = await post_form(
                self.client, self.token_endpoint, form, headers, timeout=self.timeout
            )
        except TokenEndpointUnavailable as exc:
            self.stats.failed += 1
            # The message names the failure class, never the form.
            raise RefreshFailed(
                f"token endpoint unreachable ({exc.cause})", reason="unavailable"
            ) from None
        if status != 200 or not isinstance(body, dict):
            self.stats.failed += 1
            error = oauth_error(body)
            reason = "invalid_grant" if error == "invalid_grant" else "issuer_error"
            raise RefreshFailed(
                f"token endpoint answered HTTP {status}" + (f" ({error})" if error else ""),
                reason=reason,
                status=status,
            )
        try:
            result = self._verify(body, proof)
        except VerifierError as exc:
            self.stats.failed += 1
            raise RefreshFailed(
                f"the issuer returned tokens that do not verify ({exc.code})", reason="bad_tokens"
            ) from None
        self.stats.ok += 1
        return result

    def _verify(self, body: Mapping[str, Any], proof: Mapping[str, Any] | None) -> RefreshResult:
        access = body.get("access_token")
        if not isinstance(access, str):
            raise RefreshFailed("the token response has no access_token", reason="bad_tokens")
        claims = self.verifier.verify_access(access)
        if proof is not None:
            if not self.verifier.same_subject(proof, claims):
                raise RefreshFailed("the new tokens are for another subject", reason="bad_tokens")
            if proof.get("sid") is not None and proof.get("sid") != claims.get("sid"):
                raise RefreshFailed("the new tokens are for another session", reason="bad_tokens")
        id_token = body.get("id_token")
        if id_token is not None:
            if not isinstance(id_token, str):
                raise RefreshFailed("the token response id_token is not a string")
            self.verifier.verify_id(id_token, access_claims=claims)
        refresh_token = body.get("refresh_token")
        if refresh_token is not None and not isinstance(refresh_token, str):
            raise RefreshFailed("the token response refresh_token is not a string")
        tokens = TokenSet(access=access, id=id_token, refresh=refresh_token)
        return RefreshResult(tokens=tokens, claims=claims)
