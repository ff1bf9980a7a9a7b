"""The worker supervisor's rules that need no processes: restart delays, throttled noise."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from workers.supervise import restart_delay_s
from workers.worker_process import RECONNECT_NOISE


def test_a_dead_worker_process_is_replaced_at_once_then_later_each_time_it_dies_young() -> None:
    assert [restart_delay_s(n) for n in range(8)] == [0, 1, 2, 4, 8, 16, 32, 60]
    assert restart_delay_s(10_000) == 60


def test_the_throttled_reconnect_warnings_are_still_logged_by_their_modules() -> None:
    # A reworded message upstream would silently escape the throttle: fail the build instead.
    for module, templates in RECONNECT_NOISE.items():
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None, module
        source = Path(spec.origin).read_text()
        for template in templates:
            assert f'"{template}"' in source, (module, template)
