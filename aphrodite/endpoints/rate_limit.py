"""Per-caller rate limits and daily quotas on the learning writes (feedback, manual + learn).

Each caller (key identity, or client address without a key) has a token bucket per limit (``rate`` requests a
second, ``burst`` at once) and a count per UTC day. Over either, the request is refused with 429 and a
``Retry-After`` header. The table of callers is bounded (least recently seen forgotten first).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aphrodite.endpoints.openai.errors import APIError

_DAY = 86_400.0


@dataclass(frozen=True)
class RateRule:
    """One limit: a token bucket (``rate`` per second, ``burst`` at once; rate 0 = none) and a daily quota
    (0 = none)."""

    rate: float
    burst: int
    daily_quota: int


@dataclass
class _Account:
    tokens: float
    refilled: float
    day: int
    used_today: int = 0


class RateLimiter:
    """Token buckets and daily quotas, per caller, for one named limit."""

    def __init__(self, name: str, rule: RateRule, max_callers: int = 100_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.rule = rule
        self.max_callers = max_callers
        self.clock = clock
        self._accounts: OrderedDict[str, _Account] = OrderedDict()

    def take(self, caller: str, units: int = 1) -> None:
        """Charge one request (and ``units`` to the daily quota), or raise the 429 to answer with."""
        now = self.clock()
        day = int(now // _DAY)
        account = self._account(caller, now, day)
        if account.day != day:
            account.day, account.used_today = day, 0
        rule = self.rule
        if rule.daily_quota and account.used_today + units > rule.daily_quota:
            retry = math.ceil((day + 1) * _DAY - now)
            raise _limited(f"Daily quota of {rule.daily_quota} for {self.name} reached; it resets at 00:00 UTC.",
                           retry)
        if rule.rate:
            account.tokens = min(float(rule.burst), account.tokens + (now - account.refilled) * rule.rate)
            account.refilled = now
            if account.tokens < 1.0:
                retry = math.ceil((1.0 - account.tokens) / rule.rate)
                raise _limited(f"Too many {self.name} requests; at most {rule.rate:g} a second.", retry)
            account.tokens -= 1.0
        account.used_today += units

    def _account(self, caller: str, now: float, day: int) -> _Account:
        account = self._accounts.get(caller)
        if account is None:
            account = _Account(tokens=float(self.rule.burst), refilled=now, day=day)
            self._accounts[caller] = account
            while len(self._accounts) > self.max_callers:
                self._accounts.popitem(last=False)
        else:
            self._accounts.move_to_end(caller)
        return account


def _limited(message: str, retry_after_s: int) -> APIError:
    return APIError(message, 429, code="rate_limit_exceeded", headers={"Retry-After": str(max(1, retry_after_s))})


class LearningLimits:
    """The limits of the learning writes, looked up by the routes as ``app.state.learning_limits``."""

    def __init__(self, feedback: RateRule, examples: RateRule, clock: Callable[[], float] = time.time) -> None:
        self.feedback = RateLimiter("feedback", feedback, clock=clock)
        self.examples = RateLimiter("manual/learn", examples, clock=clock)
