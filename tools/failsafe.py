"""Fail-safes around one tool: a circuit breaker and a rate limit.

* :class:`CircuitBreaker` - after ``failures`` transient failures in a row the circuit
  *opens*: calls fail at once (no waiting on a dead service) for ``reset_s``; then it is
  *half-open*: one probe call goes through; success closes it, failure opens it again.
* :class:`RateLimit` - a token bucket: ``rate_per_s`` sustained, ``burst`` at once; a call
  over the limit waits for a token up to ``max_wait_s``, then is refused as unavailable.

Both take a clock, so tests can drive time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BreakerSettings", "CircuitBreaker", "RateLimit", "RateLimitSettings"]

BreakerState = Literal["closed", "open", "half_open"]


class BreakerSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    failures: int = Field(5, ge=1, description="Transient failures in a row that open it.")
    reset_s: float = Field(30.0, gt=0, description="Open this long before one probe call.")


class RateLimitSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    rate_per_s: float = Field(gt=0)
    burst: int = Field(1, ge=1)
    max_wait_s: float = Field(5.0, ge=0, description="Wait this long for a token at most.")


class CircuitBreaker:
    def __init__(self, settings: BreakerSettings | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or BreakerSettings()
        self.clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.opened = 0  # times it opened

    @property
    def state(self) -> BreakerState:
        if self._state == "open" and self.clock() - self._opened_at >= self.settings.reset_s:
            return "half_open"
        return self._state

    def allow(self) -> bool:
        """May a call go through now? (A half-open breaker lets one probe through.)"""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def retry_in(self) -> float:
        return max(0.0, self.settings.reset_s - (self.clock() - self._opened_at))

    def success(self) -> BreakerState:
        before = self.state
        self._state, self._failures, self._probing = "closed", 0, False
        return before

    def failure(self) -> bool:
        """Count a transient failure; ``True`` if the breaker opened because of it."""
        self._failures += 1
        was_probe = self._probing
        self._probing = False
        if was_probe or self._failures >= self.settings.failures:
            if self._state != "open" or was_probe:
                self.opened += 1
            self._state, self._opened_at = "open", self.clock()
            return True
        return False


class RateLimit:
    def __init__(self, settings: RateLimitSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._tokens = float(settings.burst)
        self._at = clock()
        self._lock = asyncio.Lock()
        self.waited = 0
        self.refused = 0

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(float(self.settings.burst),
                           self._tokens + (now - self._at) * self.settings.rate_per_s)
        self._at = now

    async def acquire(self) -> bool:
        """Take a token, waiting up to ``max_wait_s``; ``False`` if none came in time."""
        async with self._lock:
            self._refill()
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            wait = (1 - self._tokens) / self.settings.rate_per_s
            if wait > self.settings.max_wait_s:
                self.refused += 1
                return False
            self.waited += 1
            await asyncio.sleep(wait)
            self._refill()
            self._tokens = max(0.0, self._tokens - 1)
            return True
