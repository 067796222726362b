"""Sign-in throttling that slows guessing without letting anyone lock the owner out.

Three limits, all checked before the password:
- per account and client address: `login_failures_allowed` failures in the window, then 429. An
  attacker holds only their own pair, never the owner's;
- per client address, across accounts (password spraying from one address);
- per account, across addresses: past `login_account_ceiling` failures (counted until an hour passes without one), every further
  attempt from an address the account has not signed in from (in the last 30 days) must wait a
  delay that doubles with each failure (capped): guessing from many addresses slows to a crawl,
  while the owner, signing in from a known address, is never held.

Client addresses come from `o2o.users.dependencies.client_ip` (trusted proxies only). Like the
other limits, Redis being down fails open (logged).
"""

import logging
import math
import time

from o2o import ratelimit
from o2o.config import get_settings
from o2o.errors import RateLimited
from o2o.redis import get_redis

log = logging.getLogger(__name__)

MESSAGE = "Too many failed sign-in attempts; wait and try again."
KNOWN_DAYS = 30
ACCOUNT_WINDOW_S = 3600
MAX_DELAY_S = 15 * 60


def _pair_limit() -> ratelimit.RateLimitItem:
    settings = get_settings()
    spec = f"{settings.login_failures_allowed}/{settings.login_failure_window_seconds} seconds"
    return ratelimit.limit(spec)


def _known_key(account: str) -> str:
    return f"o2o:login:known:{account}"


def _failures_key(account: str) -> str:
    return f"o2o:login:failures:{account}"


def _last_failure_key(account: str) -> str:
    return f"o2o:login:last-failure:{account}"


def check(account: str, ip: str) -> None:
    """Refuse (429) an attempt that one of the limits holds back; count nothing."""
    pair = _pair_limit()
    ratelimit.check(pair, "login-pair", account, ip, message=MESSAGE)
    ratelimit.check(pair, "login-ip", ip, message=MESSAGE)
    try:
        redis = get_redis()
        if redis.sismember(_known_key(account), ip):
            return
        failures, last = redis.mget(_failures_key(account), _last_failure_key(account))
        excess = int(failures or 0) - get_settings().login_account_ceiling
        if excess < 0:
            return
        delay = min(MAX_DELAY_S, 2**excess)
        wait = float(last or 0) + delay - time.time()
    except Exception:
        log.warning("sign-in throttle storage unavailable; allowing the attempt")
        return
    if wait > 0:
        raise RateLimited(MESSAGE, retry_after_s=max(1, math.ceil(wait)))


def failed(account: str, ip: str) -> None:
    """Count a failed attempt against the pair, the address and the account."""
    pair = _pair_limit()
    ratelimit.record(pair, "login-pair", account, ip)
    ratelimit.record(pair, "login-ip", ip)
    try:
        # The account's failures count until an hour passes without one.
        with get_redis().pipeline() as pipe:
            pipe.incr(_failures_key(account))
            pipe.expire(_failures_key(account), ACCOUNT_WINDOW_S)
            pipe.set(_last_failure_key(account), str(time.time()), ex=ACCOUNT_WINDOW_S)
            pipe.execute()
    except Exception:
        log.warning("sign-in throttle storage unavailable; not recorded")


def succeeded(account: str, ip: str) -> None:
    """Forget the pair's failures and remember the address as the account's own."""
    ratelimit.clear(_pair_limit(), "login-pair", account, ip)
    try:
        redis = get_redis()
        redis.sadd(_known_key(account), ip)
        redis.expire(_known_key(account), KNOWN_DAYS * 86400)
    except Exception:
        log.warning("sign-in throttle storage unavailable; address not remembered")
