"""The shared store of many hosts: Redis or Valkey, configured as LiteLLM's router is.

Connection (LiteLLM's ``Router`` and ``_get_redis_client_logic``): Redis is used
when ``router_settings.redis_url`` is set, or ``redis_host`` and ``redis_port``;
a URL wins over host, port and password (``rediss://`` is TLS, ``/N`` the
database); ``os.environ/NAME`` works in each. The client is redis-py's
synchronous one, called from a worker thread.

Keys (prefix ``rtgate:``)::

    c:SCOPE   sorted set: live lease entries, score = expiry (ms, Redis TIME)
    r:SCOPE   sorted set: session starts of the last minute, score = start
    h:DEP     hash {until, level}: the deployment is ejected until ``until``;
              present with ``until`` passed = half-open
    t:DEP     string: the entry holding DEP's one half-open trial (PX = lease time)
    m         sorted set: live members (processes), score = expiry

An entry is ``MEMBER|LEASE``, so the admin view can say which process holds
what. Admission is one Lua script (atomic in Redis): purge what expired,
check every claim, then add the entry to every scope, or to none. Lua-built
key names keep the store to one Redis node (no Redis Cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
import redis.exceptions

from rtgate.config.model import RouterSettings
from rtgate.pool.quota import WINDOW_SECONDS, Claim, Refusal
from rtgate.shared.store import Grant, SharedView, StoreUnavailable, Verdict

PREFIX = "rtgate:"
CONNECT_TIMEOUT = 1.0
"""Seconds to connect or to wait for an answer: an outage must not hold a handshake long."""

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_TAKE = (
    _NOW
    + """
local prefix, entry = ARGV[1], ARGV[2]
local ttl, window, dep, n = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local trial = 0
if dep ~= '' then
  local until_ms = redis.call('HGET', prefix .. 'h:' .. dep, 'until')
  if until_ms then
    until_ms = tonumber(until_ms)
    if now < until_ms then return {'cooling', 'deployment:' .. dep, until_ms - now, 0} end
    if not redis.call('SET', prefix .. 't:' .. dep, entry, 'NX', 'PX', ttl) then
      return {'cooling', 'deployment:' .. dep, 1000, 0}
    end
    trial = 1
  end
end
for i = 0, n - 1 do
  local scope = ARGV[7 + 3 * i]
  local conc, rate = tonumber(ARGV[8 + 3 * i]), tonumber(ARGV[9 + 3 * i])
  local ckey, rkey = prefix .. 'c:' .. scope, prefix .. 'r:' .. scope
  redis.call('ZREMRANGEBYSCORE', ckey, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', rkey, '-inf', now - window)
  local refused = nil
  if conc >= 0 and redis.call('ZCARD', ckey) >= conc then
    refused = {'concurrent', scope, 1000, 0}
  elseif rate >= 0 then
    local count = redis.call('ZCARD', rkey)
    if count >= rate then
      local oldest = redis.call('ZRANGE', rkey, count - rate, count - rate, 'WITHSCORES')
      refused = {'per_minute', scope, math.max(tonumber(oldest[2]) + window - now, 1), 0}
    end
  end
  if refused then
    if trial == 1 then redis.call('DEL', prefix .. 't:' .. dep) end
    return refused
  end
end
for i = 0, n - 1 do
  local scope = ARGV[7 + 3 * i]
  local ckey, rkey = prefix .. 'c:' .. scope, prefix .. 'r:' .. scope
  redis.call('ZADD', ckey, now + ttl, entry)
  redis.call('PEXPIRE', ckey, 2 * ttl + window)
  redis.call('ZADD', rkey, now, entry)
  redis.call('PEXPIRE', rkey, 2 * window)
end
return {'ok', '', 0, trial}
"""
)

_RENEW = (
    _NOW
    + """
local prefix, member, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local mkey = prefix .. 'm'
redis.call('ZADD', mkey, now + ttl, member)
redis.call('ZREMRANGEBYSCORE', mkey, '-inf', now)
-- An upsert: a lease the store lost (restart, partition, taken during an outage) is
-- added back, since its session still runs. (The caller never renews an ended lease.)
for i = 4, #ARGV, 2 do
  local ckey = prefix .. 'c:' .. ARGV[i + 1]
  redis.call('ZADD', ckey, now + ttl, ARGV[i])
  redis.call('PEXPIRE', ckey, 2 * ttl + 60000)
end
return redis.call('ZCARD', mkey)
"""
)

_EJECT = (
    _NOW
    + """
local prefix, dep, ms, level = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
redis.call('HSET', prefix .. 'h:' .. dep, 'until', now + ms, 'level', level)
redis.call('PEXPIRE', prefix .. 'h:' .. dep, ms + 3600000)
redis.call('DEL', prefix .. 't:' .. dep)
"""
)

_END_TRIAL = """
if redis.call('GET', ARGV[1]) == ARGV[2] then redis.call('DEL', ARGV[1]) end
"""

_VERDICTS = (
    _NOW
    + """
local out = {}
for i = 2, #ARGV do
  local h = redis.call('HMGET', ARGV[1] .. 'h:' .. ARGV[i], 'until', 'level')
  if h[1] then
    table.insert(out, ARGV[i]); table.insert(out, math.max(tonumber(h[1]) - now, 0))
    table.insert(out, tonumber(h[2]) or 0)
  end
end
table.insert(out, now)
return out
"""
)


def client_from_settings(router: RouterSettings) -> redis.Redis:
    """The client LiteLLM would build from the same ``router_settings``."""
    common: dict[str, Any] = {
        "socket_timeout": CONNECT_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": 10,
    }
    if router.redis_url is not None:
        return redis.Redis.from_url(router.redis_url.value, **common)
    password = router.redis_password.value if router.redis_password else None
    return redis.Redis(host=router.redis_host or "localhost", port=router.redis_port or 6379,
                       password=password, **common)  # fmt: skip


class RedisStore:
    """:class:`rtgate.shared.store.SharedStore` on one Redis (or Valkey) server."""

    kind = "redis"

    def __init__(self, client: redis.Redis, member: str, prefix: str = PREFIX) -> None:
        self.client = client
        self.member = member
        self.prefix = prefix
        self._take = self._script(_TAKE)
        self._renew = self._script(_RENEW)
        self._eject = self._script(_EJECT)
        self._end_trial = self._script(_END_TRIAL)
        self._verdicts = self._script(_VERDICTS)

    def _script(self, source: str) -> Callable[..., Any]:
        script = self.client.register_script(source)

        def run(*args: str | int | float) -> Any:
            try:
                return script(keys=[], args=list(args))
            except redis.exceptions.RedisError as exc:
                raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

        return run

    def _entry(self, lease: str) -> str:
        return f"{self.member}|{lease}"

    def take(
        self, lease: str, claims: Sequence[Claim], ttl: float, deployment: str | None = None
    ) -> Grant:
        args: list[str | int | float] = [
            self.prefix, self._entry(lease), _ms(ttl), _ms(WINDOW_SECONDS),
            deployment or "", len(claims),
        ]  # fmt: skip
        for claim in claims:
            args += [claim.scope, _cap(claim.concurrent), _cap(claim.per_minute)]
        outcome, scope, retry_ms, trial = self._take(*args)
        outcome = outcome.decode() if isinstance(outcome, bytes) else outcome
        if outcome == "ok":
            return Grant(None, trial == 1)
        scope = scope.decode() if isinstance(scope, bytes) else scope
        return Grant(Refusal(scope, outcome, int(retry_ms) / 1000))

    def give_back(self, lease: str, scopes: Sequence[str], started: bool) -> None:
        self.give_back_many([(lease, scopes, started)])

    def give_back_many(self, ends: Sequence[tuple[str, Sequence[str], bool]]) -> None:
        try:
            with self.client.pipeline(transaction=True) as pipe:
                for lease, scopes, started in ends:
                    entry = self._entry(lease)
                    for scope in scopes:
                        pipe.zrem(f"{self.prefix}c:{scope}", entry)
                        if not started:
                            pipe.zrem(f"{self.prefix}r:{scope}", entry)
                pipe.execute()
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    def renew(self, leases: Mapping[str, Sequence[str]], ttl: float) -> int:
        args: list[str | int | float] = [self.prefix, self.member, _ms(ttl)]
        for lease, scopes in leases.items():
            for scope in scopes:
                args += [self._entry(lease), scope]
        return int(self._renew(*args))

    def eject(self, deployment: str, seconds: float, level: int) -> None:
        self._eject(self.prefix, deployment, _ms(seconds), level)

    def restore(self, deployment: str) -> None:
        try:
            self.client.delete(f"{self.prefix}h:{deployment}", f"{self.prefix}t:{deployment}")
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    def end_trial(self, deployment: str, lease: str) -> None:
        self._end_trial(f"{self.prefix}t:{deployment}", self._entry(lease))

    def verdicts(self, deployments: Sequence[str]) -> list[Verdict]:
        found = self._verdicts(self.prefix, *deployments)
        out = []
        for i in range(0, len(found) - 1, 3):
            dep = found[i].decode() if isinstance(found[i], bytes) else found[i]
            out.append(Verdict(dep, int(found[i + 1]) / 1000, int(found[i + 2])))
        return out

    def view(self) -> SharedView:
        try:
            seconds, micros = self.client.time()
            now = seconds * 1000 + micros // 1000
            active: dict[str, int] = {}
            by_member: dict[str, dict[str, int]] = {}
            head = f"{self.prefix}c:"
            for key in self.client.scan_iter(match=head + "*", count=500):
                name = key.decode() if isinstance(key, bytes) else key
                scope = name[len(head) :]
                entries: list[bytes] = self.client.zrangebyscore(name, now + 1, "+inf")  # type: ignore[assignment]
                for entry in entries:
                    member = entry.decode().split("|")[0]
                    active[scope] = active.get(scope, 0) + 1
                    per = by_member.setdefault(member, {})
                    per[scope] = per.get(scope, 0) + 1
            members = int(self.client.zcount(f"{self.prefix}m", now + 1, "+inf"))
            deployments = [
                (k.decode() if isinstance(k, bytes) else k)[len(self.prefix) + 2 :]
                for k in self.client.scan_iter(match=f"{self.prefix}h:*", count=500)
            ]
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        return SharedView(active, by_member, self.verdicts(deployments), members)

    def close(self) -> None:
        self.client.close()


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


def _cap(value: int | None) -> int:
    return -1 if value is None else value
