"""The timeline projection of a run's audit log (SPEC `get_timeline`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from dee.kernel.audit import AuditEntry


class TimelineEntry(msgspec.Struct, frozen=True):
    tick: int
    timestamp: str
    step: str | None
    action: str
    outcome: str | None
    data: dict[str, Any]


def timeline(entries: Sequence[AuditEntry]) -> list[TimelineEntry]:
    """One line per audit entry, in chain order, with the outcome pulled to the front."""
    out: list[TimelineEntry] = []
    for e in entries:
        output = dict(e.output or {})
        result = output.pop("result", None)
        outcome = (result or {}).get("outcome") or output.get("outcome") or output.get("status") or output.get("verdict")
        data = {**output, **({k: v for k, v in result.items() if k not in ("outcome", "stepId")} if result else {})}
        if e.action == "event.received" and e.input:
            data["event"] = e.input.get("type") or e.input.get("kind")
        out.append(TimelineEntry(e.tick, e.timestamp, e.step_id, e.action, outcome, data))
    return out
