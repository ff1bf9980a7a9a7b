"""Warnings that repeat while a service is down are logged once per interval, with a count."""

from __future__ import annotations

import logging

from pipelines.log_throttle import Throttle, ThrottleRepeats


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("dramatiq.worker", logging.CRITICAL, __file__, 1, msg, ("x",), None)


def test_throttle_lets_one_event_through_per_interval_and_counts_the_rest() -> None:
    clock = _Clock()
    throttle = Throttle(30.0, clock)
    assert throttle.allow() == 0
    clock.now += 10
    assert [throttle.allow(), throttle.allow()] == [None, None]
    clock.now += 20
    assert throttle.allow() == 2
    assert throttle.allow() is None


def test_repeated_templates_pass_once_per_interval_and_say_how_many_were_held() -> None:
    clock = _Clock()
    noise = ThrottleRepeats(["Consumer encountered a connection error: %s"], 30.0, clock)
    passed = [noise.filter(_record("Consumer encountered a connection error: %s"))
              for _ in range(100)]
    assert passed.count(True) == 1 and passed[0]
    clock.now += 30
    record = _record("Consumer encountered a connection error: %s")
    assert noise.filter(record)
    assert record.getMessage().endswith("[99 more like this since the last one logged]")
    assert record.__dict__["repeats_suppressed"] == 99


def test_other_records_are_never_held_back() -> None:
    noise = ThrottleRepeats(["Restarting consumer in %0.2f seconds."], 30.0, _Clock())
    assert all(noise.filter(_record("Failed to process message %s with unhandled exception."))
               for _ in range(10))
