"""How fast a principal may start conversations, beyond how many may run at once.

A failed start stops counting against the live limits the moment it fails, so
those limits alone let a user start without bound. Two more rules, per
principal, checked by :meth:`Admission.admit` before a create registers:

- recent failures: more than ``max_failed_starts`` failed starts within the last
  ``failed_start_window`` seconds refuse further creates until the oldest ages out;
- a token bucket: ``create_burst`` creates at once, then ``create_rate`` per second.

Both refuse with :class:`~gateway.errors.LimitReached` (429) naming the rule.
Memory is bounded: one bucket and at most ``max_failed_starts`` timestamps per
principal, and principals are the configured keys (or ``local``).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from gateway.errors import LimitReached
from gateway.settings import Settings


@dataclass
class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; starts full."""

    capacity: float
    rate: float
    tokens: float = field(init=False)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.capacity

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait_time(self, now: float) -> float:
        """Seconds until one token is there (0: now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1


class Admission:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._buckets: dict[str, TokenBucket] = {}
        self._failures: dict[str, deque[float]] = {}

    def _recent_failures(self, owner: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(owner, deque(maxlen=self._settings.max_failed_starts))
        while failures and now - failures[0] >= self._settings.failed_start_window:
            failures.popleft()
        return failures

    def admit(self, owner: str) -> None:
        """Takes one create from ``owner``'s allowance, or raises :class:`LimitReached`."""
        settings, now = self._settings, time.monotonic()
        failures = self._recent_failures(owner, now)
        if len(failures) >= settings.max_failed_starts:
            wait = settings.failed_start_window - (now - failures[0])
            raise LimitReached(
                f"{owner!r} had {len(failures)} failed starts in the last "
                f"{settings.failed_start_window:g} seconds, the maximum; retry in {wait:.1f} seconds"
            )
        bucket = self._buckets.setdefault(owner, TokenBucket(settings.create_burst, settings.create_rate))
        wait = bucket.wait_time(now)
        if wait > 0:
            raise LimitReached(
                f"{owner!r} creates conversations too fast: at most {settings.create_burst} at once, "
                f"then {settings.create_rate:g} per second; retry in {wait:.1f} seconds"
            )
        bucket.take(now)

    def failed(self, owner: str) -> None:
        """Counts one failed start of ``owner``."""
        now = time.monotonic()
        self._recent_failures(owner, now).append(now)
