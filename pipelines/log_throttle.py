"""One log line per interval for warnings that repeat while a service is down.

While Redis or Postgres restarts, every reconnect attempt logs: the API's pub/sub hub a few
times a second, each Dramatiq consumer thread every 3 s, presence every 5 s — hundreds of
lines (with tracebacks) that bury the one that matters. `Throttle` lets the first through
and counts the rest; `ThrottleRepeats` applies it to named message templates of loggers we
do not own (a `logging.Filter` on the handler), leaving every other record alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

# How often a warning that repeats while Redis or Postgres is unreachable is logged.
RECONNECT_LOG_INTERVAL_S = 30.0


class Throttle:
    """Lets one event through per `interval_s` and counts the ones it holds back."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._next_s = float("-inf")
        self._held = 0

    def allow(self) -> int | None:
        """None while throttled; else how many events were held back since the last one."""
        with self._lock:
            now = self._clock()
            if now < self._next_s:
                self._held += 1
                return None
            held, self._held = self._held, 0
            self._next_s = now + self.interval_s
            return held


class ThrottleRepeats(logging.Filter):
    """Passes each of `templates` (a record's unformatted `msg`) once per `interval_s`."""

    def __init__(self, templates: Iterable[str], interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._throttles = {template: Throttle(interval_s, clock) for template in templates}

    def filter(self, record: logging.LogRecord) -> bool:
        throttle = self._throttles.get(record.msg) if isinstance(record.msg, str) else None
        if throttle is None:
            return True
        held = throttle.allow()
        if held is None:
            return False
        if held:
            record.repeats_suppressed = held
            record.msg = f"{record.msg} [{held} more like this since the last one logged]"
        return True
