"""CPU time of named process groups, read from /proc, for "CPU seconds per request".

A group is a set of root pids, optionally with every descendant (an API server's workers,
Postgres's backends, a Dramatiq supervisor's children). The tree is resolved at each
snapshot, so a process started during a measurement counts from zero; one that exits
during it loses what it used since the first snapshot (the kernel gives it to its parent
only when reaped, as cutime/cstime, which we do not read).

`machine_busy_s` reads /proc/stat so a report can tell how much of the machine's CPU
the measured groups account for; the rest is other programs on the machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessGroup:
    """Processes counted together: `roots`, and their descendants when `tree` is true."""

    name: str
    roots: tuple[int, ...]
    tree: bool = True


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces and parentheses)."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _members(group: ProcessGroup, children: Mapping[int, list[int]]) -> set[int]:
    members = set(group.roots)
    if group.tree:
        pending = list(group.roots)
        while pending:
            for child in children.get(pending.pop(), ()):
                if child not in members:
                    members.add(child)
                    pending.append(child)
    return members


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of one process in clock ticks, or None if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # After the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime ...
    return int(fields[11]) + int(fields[12])


Snapshot = dict[str, dict[int, int]]


def snapshot(groups: Iterable[ProcessGroup]) -> Snapshot:
    """{group name: {pid: CPU ticks}} for every live member of every group."""
    groups = list(groups)
    children = _children_by_parent() if any(g.tree for g in groups) else {}
    result: Snapshot = {}
    for group in groups:
        ticks: dict[int, int] = {}
        for pid in _members(group, children):
            value = cpu_ticks(pid)
            if value is not None:
                ticks[pid] = value
        result[group.name] = ticks
    return result


def cpu_seconds_between(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds each group used between two snapshots (new processes from zero)."""
    used: dict[str, float] = {}
    for name, ticks in after.items():
        earlier = before.get(name, {})
        delta = sum(value - earlier.get(pid, 0) for pid, value in ticks.items())
        used[name] = delta / _TICKS_PER_S
    return used


def busiest_process_s(before: Snapshot, after: Snapshot, group: str) -> float:
    """CPU seconds of the group's busiest process between two snapshots (is one saturated?)."""
    earlier = before.get(group, {})
    deltas = [value - earlier.get(pid, 0) for pid, value in after.get(group, {}).items()]
    return max(deltas, default=0) / _TICKS_PER_S


def machine_busy_s() -> float:
    """CPU seconds all cores have spent not idle since boot (user+nice+system+irq+steal)."""
    first = (_PROC / "stat").read_text().splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS_PER_S
