"""The city block's virtual clock: a day in minutes, but never ahead of the city.

Virtual time runs `rate` virtual seconds per real second. The scheduler passes a `limit` on
every step: the wake-up time of a node that is due but cannot start yet (too many lives
running), or how far a node still awake may fall behind. The clock stops there rather than run
ahead, so every node wakes at its exact virtual time even when the two cores are busy; the
story then takes a little longer in real time, never a different course.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable


class CityClock:
    def __init__(
        self, start_s: float, rate: float, real: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError("the clock's rate must be positive")
        self.now = float(start_s)
        self.rate = float(rate)
        self._real = real
        self._last = real()
        self.stalled_s = 0.0  # real seconds the clock waited for the city

    def advance(self, limit: float | None = None) -> float:
        """Move to where real time says, but not past `limit` (nor backwards)."""
        real = self._real()
        elapsed = real - self._last
        self._last = real
        target = self.now + elapsed * self.rate
        if limit is not None and target > limit:
            allowed = max(self.now, limit)
            if elapsed > 0:
                self.stalled_s += elapsed * (target - allowed) / (target - self.now)
            target = allowed
        self.now = target
        return self.now

    def set_rate(self, rate: float) -> None:
        """Change speed from here on; call it right after `advance()` (the real time since
        then is not counted, so a change at a limit cannot overshoot it)."""
        if rate <= 0:
            raise ValueError("the clock's rate must be positive")
        self._last = self._real()
        self.rate = float(rate)

    def resume(self) -> None:
        """Start counting real time from now (after a set-up the clock must not skip)."""
        self._last = self._real()


class ClockHistory:
    """Recent (wall time, city time) pairs, to date what the gateway stamped in wall time."""

    def __init__(self, keep: int = 5000) -> None:
        self._walls: deque[float] = deque(maxlen=keep)
        self._cities: deque[float] = deque(maxlen=keep)

    def record(self, wall: float, city: float) -> None:
        if not self._walls or wall > self._walls[-1]:
            self._walls.append(wall)
            self._cities.append(city)

    def at(self, wall: float) -> float | None:
        """The city time at `wall` (the nearest recorded moment not after it)."""
        if not self._walls:
            return None
        i = bisect.bisect_right(self._walls, wall)
        return self._cities[max(0, i - 1)]
