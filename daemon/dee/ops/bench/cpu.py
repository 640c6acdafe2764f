"""CPU time by process group, from /proc: where a workload's cycles went (Linux only).

Summed per group: the daemons (by pid), PostgreSQL and Redis (every process of that name,
children that already exited included, so a finished backend still counts), and this process.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def process_seconds(pid: int) -> float:
    """utime + stime + the same of its waited-for children."""
    fields = _fields(pid)
    if fields is None:
        return 0.0
    # after the ")": state is field 3 of stat, so utime (14) .. cstime (17) are at 11..14
    return sum(int(v) for v in fields[11:15]) / _TICKS


def named_seconds(name: str) -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    total += process_seconds(int(entry.name))
            except OSError:
                continue
    return total


def snapshot(daemon_pids: list[int]) -> dict[str, float]:
    """Cumulative CPU seconds now, per group (subtract two snapshots for an interval)."""
    me = os.times()
    return {
        "daemons": sum(process_seconds(pid) for pid in daemon_pids),
        "postgres": named_seconds("postgres"),
        "redis": named_seconds("redis-server"),
        "bench": me.user + me.system,
    }
