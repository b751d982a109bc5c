"""The Redis side of shared refresh: key names, Lua scripts, sealed token sets.

What :class:`~verifier.redis_refresher.RedisRefresher` keeps in Redis and
how (the layout is drawn in that module's docstring): the keys of one
refresh token under a cluster hash tag, the scripts that take, renew and
settle a lease and hold a proof, and the AES-GCM sealing of stored token
sets under a key derived from ``refresh.store_key``. No flight logic here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.backoff import AbstractBackoff, NoBackoff
from redis.exceptions import RedisError

from .errors import ConfigInvalid
from .inprocess_refresher import RefreshResult

__all__ = [
    "ACQUIRE",
    "CLAIM_PROOF",
    "FAILED_TTL",
    "HELD",
    "MIN_STORE_KEY_BYTES",
    "NO_BACKOFF",
    "OURS",
    "REDIS_ERRORS",
    "RELEASE_PROOF",
    "RENEW",
    "SETTLE",
    "SETTLED",
    "SPENT_TTL_CAP",
    "STORE_KEY_SETTING",
    "Sealer",
    "StoreKeys",
    "encode_result",
    "ms",
    "store_key_bytes",
]

#: ``refresh.store_key`` must hold at least this many bytes.
MIN_STORE_KEY_BYTES = 32
#: Spent markers live at most this long (and never longer than the refresh cookie).
SPENT_TTL_CAP = 86400.0
#: Refused-token markers live this long: shorter than spent ones, which matter more.
FAILED_TTL = 3600.0
STORE_KEY_SETTING = "APP_CONFIG_REFRESH__STORE_KEY"
_SEAL_VERSION = b"\x01"
_NONCE_BYTES = 12
_HKDF_INFO = b"jwtedge refresh store v1"
#: Typed alias: older redis-py releases leave NoBackoff unannotated.
NO_BACKOFF: Callable[[], AbstractBackoff] = NoBackoff
#: Everything a Redis outage raises: redis-py's tree, socket errors, timeouts.
REDIS_ERRORS = (RedisError, OSError, TimeoutError)

# KEYS: lease, result, spent, failed. ARGV: owner, lease ms.
# 1: the lease is ours; 0: another flight holds it; 2: the token is settled.
ACQUIRE = """
if redis.call('exists', KEYS[2]) == 1 or redis.call('exists', KEYS[3]) == 1
    or redis.call('exists', KEYS[4]) == 1 then
  return 2
end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""
# KEYS: lease. ARGV: owner, lease ms. Extends the lease only while it is ours.
RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: lease, result, spent, failed. ARGV: owner, sealed result or '', result ms,
# spent ms or '', channel, message, failed ms or ''. Returns 1 when the lease was still ours.
SETTLE = """
local owned = redis.call('get', KEYS[1]) == ARGV[1]
if owned then
  redis.call('del', KEYS[1])
end
if ARGV[2] ~= '' then
  redis.call('set', KEYS[2], ARGV[2], 'PX', ARGV[3], 'NX')
end
if ARGV[4] ~= '' then
  redis.call('set', KEYS[3], '1', 'PX', ARGV[4])
end
if ARGV[7] ~= '' then
  redis.call('set', KEYS[4], '1', 'PX', ARGV[7])
end
redis.call('publish', ARGV[5], ARGV[6])
if owned then
  return 1
end
return 0
"""
# KEYS: proof hold. ARGV: refresh-token key, hold ms. 1: this proof may drive
# the call for that token (free, or already held for it); 0: cooling down or busy.
CLAIM_PROOF = """
local held = redis.call('get', KEYS[1])
if not held then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if held == ARGV[1] then
  return 1
end
return 0
"""
# KEYS: proof hold. ARGV: refresh-token key. Drops the hold only while it is for that token.
RELEASE_PROOF = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
OURS, HELD, SETTLED = 1, 0, 2


@dataclass(frozen=True, slots=True)
class StoreKeys:
    lease: str
    result: str
    spent: str
    failed: str
    channel: str

    @classmethod
    def of(cls, namespace: str, key: str) -> StoreKeys:
        base = f"{namespace}:{{{key}}}"
        return cls(
            f"{base}:lease", f"{base}:result", f"{base}:spent", f"{base}:failed", f"{base}:done"
        )

    @property
    def settled(self) -> list[str]:
        """The lease and the keys that settle a token, in the scripts' order."""
        return [self.lease, self.result, self.spent, self.failed]


class Sealer:
    """AES-256-GCM under a key derived from ``store_key``; the Redis key name is
    the associated data, so a sealed value moved to another key does not open."""

    def __init__(self, store_key: bytes) -> None:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
        self._aead = AESGCM(hkdf.derive(store_key))

    def seal(self, name: str, plain: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _SEAL_VERSION + nonce + self._aead.encrypt(nonce, plain, name.encode())

    def open(self, name: str, sealed: bytes) -> bytes:
        if not sealed.startswith(_SEAL_VERSION):
            raise InvalidTag
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        return self._aead.decrypt(nonce, body, name.encode())


def store_key_bytes(store_key: str | bytes) -> bytes:
    raw = store_key.encode() if isinstance(store_key, str) else store_key
    if len(raw) < MIN_STORE_KEY_BYTES:
        raise ConfigInvalid(
            f"invalid configuration: {STORE_KEY_SETTING}: must be at least "
            f"{MIN_STORE_KEY_BYTES} bytes",
            problems=[STORE_KEY_SETTING],
        )
    return raw


def ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def encode_result(result: RefreshResult) -> bytes:
    tokens = result.tokens
    body = {"access_token": tokens.access, "id_token": tokens.id, "refresh_token": tokens.refresh}
    return orjson.dumps({name: value for name, value in body.items() if value is not None})
