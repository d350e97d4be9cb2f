"""Redis implementation of :class:`registration.otp.rules.OtpStore`.

``issue`` and ``check`` are Lua scripts: Redis runs a script as one atomic step, so no other
command (another guess, another request) runs between its reads and writes. Times are passed
in by the worker (``now``) and stored in the values, so the rules do not depend on when Redis
expires a key; the keys' TTLs only clean up.

Keys (``<e>`` is the normalised e-mail, ``<s>`` a source, ``<a>`` a client address):

* ``otp:eligible`` set of e-mails
* ``otp:code:<e>`` ``<hmac hex>:<expires_at>`` (TTL otp_ttl); for an address not on the list too
  (a code nobody is mailed), so that every answer is the same
* ``otp:fail:<e>:src:<s>`` / ``otp:fail:<e>:client:<a>`` / ``otp:fail:<e>`` wrong codes of a source,
  of a client address, of everyone, since the last success or lock (TTL lock_seconds)
* ``otp:lock:<e>:src:<s>`` / ``otp:lock:<e>:client:<a>`` / ``otp:lock:<e>`` ``<until>`` (TTL lock_seconds)
* ``otp:auth:<e>`` ``<until>`` the "authenticated" marker (TTL auth_ttl)
* ``otp:sent:<e>`` ``<key>|<until>`` the request that mailed the live OTP (TTL resend_window)
* ``otp:issuereq:<e>:<key>`` ``<attempt>|<answer>``: the first attempt of request ``key`` and its
  answer (TTL otp_ttl or resend_window, the longer): another attempt with the key gets that answer
  (``already_sent`` for ``created``), and nothing is counted or issued
* ``otp:authreq:<e>:<key>`` the answer to a check, for its repetitions (TTL otp_ttl)
* ``otp:rate:email:<e>:<n>`` / ``otp:rate:client:<a>:<n>`` / ``otp:rate:authen:<a>:<n>`` request
  counters of window ``n``
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Final

import redis.asyncio as aioredis

from registration.otp.rules import OtpPolicy

ELIGIBLE_KEY: Final = "otp:eligible"


def _k(kind: str, email: str) -> str:
    return f"otp:{kind}:{email}"


# KEYS: eligible, lock, sent, code, rate_client, rate_email, issuereq
# ARGV: email, now, key, digest, otp_ttl, resend_window, rate_window, per_client, per_email, attempt
_ISSUE: Final = """
local now = tonumber(ARGV[2])
local key = ARGV[3]
local otp_ttl = tonumber(ARGV[5])
local window = tonumber(ARGV[6])
-- A request replayed with its key gets the first answer, and nothing new once its code was mailed
-- ('mailed': the gateway said so after sending it). That attempt repeated (a lost reply) goes on with
-- a fresh code and no count; so does another attempt while the code is only 'created' (the first
-- gateway died between issuing and mailing it, and HAProxy or the client sent the key again): it
-- takes the key over, and the first attempt's code is replaced.
local first = redis.call('GET', KEYS[7])
local replay = false
if first then
  local attempt, answer = string.match(first, '^(.*)|(.*)$')
  if attempt ~= ARGV[10] then
    if answer == 'mailed' or not answer then return {'already_sent', ''} end
    if answer ~= 'created' then return {answer, ''} end
  end
  replay = true
end
local function done(answer, why)
  redis.call('SET', KEYS[7], ARGV[10] .. '|' .. answer, 'EX', math.max(otp_ttl, window))
  return {answer, why}
end
local other_claim = false
local sent = redis.call('GET', KEYS[3])
if sent then
  local owner, till = string.match(sent, '^(.*)|([%d%.]+)$')
  if owner and tonumber(till) > now and owner ~= key then other_claim = true end
end
local function over(counter, limit)
  if limit <= 0 or replay then return false end
  local n = redis.call('INCR', counter)
  if n == 1 then redis.call('EXPIRE', counter, ARGV[7]) end
  return n > limit
end
if over(KEYS[5], tonumber(ARGV[8])) then return done('rate_limited', 'client') end
local lock = redis.call('GET', KEYS[2])
if lock and (lock == '1' or tonumber(lock) > now) then return done('locked', '') end
if over(KEYS[6], tonumber(ARGV[9])) then return done('rate_limited', 'email') end
if other_claim then return done('already_sent', '') end
redis.call('SET', KEYS[4], ARGV[4] .. ':' .. string.format('%.3f', now + otp_ttl), 'EX', otp_ttl)
if window > 0 then
  redis.call('SET', KEYS[3], key .. '|' .. string.format('%.3f', now + window), 'EX', window)
end
-- Everything above applies to an address not on the list alike; only the mail does not.
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return done('unknown_email', '') end
return done('created', '')
"""

# KEYS: eligible, lock, code, fail, auth, authreq, sent, fail_source, lock_source, fail_client,
#       lock_client, rate_authen
# ARGV: email, now, digest, max_attempts, lock_seconds, auth_ttl, otp_ttl, per_client_rate, rate_window,
#       max_attempts_per_client, max_attempts_per_email
_CHECK: Final = """
local now = tonumber(ARGV[2])
local earlier = redis.call('GET', KEYS[6])
if earlier then return earlier end
local rate = tonumber(ARGV[8])
if rate > 0 then
  local n = redis.call('INCR', KEYS[12])
  if n == 1 then redis.call('EXPIRE', KEYS[12], ARGV[9]) end
  if n > rate then return 'rate_limited' end
end
local function locked(k)
  local lock = redis.call('GET', k)
  return lock and (lock == '1' or tonumber(lock) > now)
end
if locked(KEYS[2]) or locked(KEYS[9]) or locked(KEYS[11]) then return 'locked' end
local stored = redis.call('GET', KEYS[3])
if not stored then return 'expired' end
local digest, expires = string.match(stored, '^(%x+):([%d%.]+)$')
if not digest or #digest ~= 64 or tonumber(expires) <= now then
  redis.call('DEL', KEYS[3])
  return 'expired'
end
local answer
if digest == ARGV[3] and redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  local auth_ttl = tonumber(ARGV[6])
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[7], KEYS[8])
  redis.call('SET', KEYS[5], string.format('%.3f', now + auth_ttl), 'EX', auth_ttl)
  answer = 'ok'
else
  local lock_seconds = tonumber(ARGV[5])
  -- counts a failure; at the limit, locks and starts the count again
  local function count(fail, lock, limit)
    local failures = redis.call('INCR', fail)
    if failures == 1 then redis.call('EXPIRE', fail, lock_seconds) end
    if failures < limit then return false end
    redis.call('SET', lock, string.format('%.3f', now + lock_seconds), 'EX', lock_seconds)
    redis.call('DEL', fail)
    return true
  end
  count(KEYS[8], KEYS[9], tonumber(ARGV[4]))
  count(KEYS[10], KEYS[11], tonumber(ARGV[10]))
  -- the e-mail's own ceiling: locked for everyone, and its code is gone
  if count(KEYS[4], KEYS[2], tonumber(ARGV[11])) then redis.call('DEL', KEYS[3]) end
  answer = 'invalid_otp'
end
redis.call('SET', KEYS[6], answer, 'EX', tonumber(ARGV[7]))
return answer
"""

# KEYS: sent, issuereq; ARGV: key
# KEYS: issuereq; ARGV: attempt. Only the attempt that holds the key marks it: a stale one (taken over) cannot.
_MAILED: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. '|created' then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. '|mailed', 'PX', ttl)
return 1
"""

_RELEASE: Final = """
local sent = redis.call('GET', KEYS[1])
if sent and string.sub(sent, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then redis.call('DEL', KEYS[1]) end
redis.call('DEL', KEYS[2])
return 0
"""


def _live(value: Any, now: float) -> bool:
    """A marker holding its end time ("1": written by the previous version, bounded by its TTL)."""
    if value is None:
        return False
    text = str(value)
    if text == "1":
        return True
    try:
        return float(text) > now
    except ValueError:
        return False


def _bucket(now: float, window: int) -> int:
    return math.floor(now / window)


class RedisOtpStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self._r = client
        self._issue = client.register_script(_ISSUE)
        self._check = client.register_script(_CHECK)
        self._release = client.register_script(_RELEASE)
        self._mailed = client.register_script(_MAILED)

    async def add_eligible(self, emails: Iterable[str]) -> int:
        members = list(emails)
        if not members:
            return 0
        return int(await self._r.sadd(ELIGIBLE_KEY, *members))

    async def count_eligible(self) -> int:
        return int(await self._r.scard(ELIGIBLE_KEY))

    async def is_eligible(self, email: str) -> bool:
        return bool(await self._r.sismember(ELIGIBLE_KEY, email))

    async def issue(
        self, email: str, *, digest: str, key: str, attempt: str, client: str, now: float, policy: OtpPolicy
    ) -> tuple[str, int]:
        bucket = _bucket(now, policy.rate_window)
        keys = [
            ELIGIBLE_KEY,
            _k("lock", email),
            _k("sent", email),
            _k("code", email),
            f"otp:rate:client:{client or '-'}:{bucket}",
            f"otp:rate:email:{email}:{bucket}",
            f"otp:issuereq:{email}:{key}",
        ]
        args: list[Any] = [
            email,
            f"{now:.3f}",
            key,
            digest,
            policy.otp_ttl,
            policy.resend_window,
            policy.rate_window,
            policy.rate_per_client if client else 0,
            policy.rate_per_email,
            attempt,
        ]
        status, _ = await self._issue(keys=keys, args=args)
        retry_after = 0
        if str(status) == "rate_limited":
            retry_after = max(1, math.ceil((bucket + 1) * policy.rate_window - now))
        return str(status), retry_after

    async def check(
        self, email: str, *, digest: str, key: str, source: str, client: str, now: float, policy: OtpPolicy
    ) -> str:
        keys = [
            ELIGIBLE_KEY,
            _k("lock", email),
            _k("code", email),
            _k("fail", email),
            _k("auth", email),
            f"otp:authreq:{email}:{key}",
            _k("sent", email),
            f"otp:fail:{email}:src:{source}",
            f"otp:lock:{email}:src:{source}",
            f"otp:fail:{email}:client:{client or '-'}",
            f"otp:lock:{email}:client:{client or '-'}",
            f"otp:rate:authen:{client or '-'}:{_bucket(now, policy.rate_window)}",
        ]
        args: list[Any] = [
            email,
            f"{now:.3f}",
            digest,
            policy.max_attempts,
            policy.lock_seconds,
            policy.auth_ttl,
            policy.otp_ttl,
            policy.rate_per_client if client else 0,
            policy.rate_window,
            policy.max_attempts_per_client,
            policy.max_attempts_per_email,
        ]
        return str(await self._check(keys=keys, args=args))

    async def release_sent(self, email: str, key: str) -> None:
        await self._release(keys=[_k("sent", email), f"otp:issuereq:{email}:{key}"], args=[key])

    async def mark_mailed(self, email: str, key: str, attempt: str) -> bool:
        return bool(await self._mailed(keys=[f"otp:issuereq:{email}:{key}"], args=[attempt]))

    async def is_authenticated(self, email: str, now: float) -> bool:
        return _live(await self._r.get(_k("auth", email)), now)

    async def consume_authenticated(self, email: str, now: float) -> bool:
        # GETDEL: of two concurrent calls only one gets the value.
        return _live(await self._r.getdel(_k("auth", email)), now)

    async def forget(self, email: str) -> None:
        """otp.delete(email): drop every per-e-mail key (OTP, failures, marker; not the lock)."""
        await self._r.delete(_k("code", email), _k("fail", email), _k("auth", email), _k("sent", email))
