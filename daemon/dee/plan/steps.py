"""Builders for the built-in step types: `steps.send_email(...)`, `steps.wait(...)`, ...

Each returns a plain `Step(id, type, params)` whose params are exactly what a plan file would
hold, so a plan built in Python and the same plan loaded from YAML have the same checksum.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dee.plan.model import Condition, Duration, Step, Tracking, Voicemail


def camel(name: str) -> str:
    """`snake_case` as `camelCase`, the spelling of plan files and the wire format."""
    return name.split("_")[0] + "".join(part.title() for part in name.split("_")[1:])


def _params(**values: Any) -> dict[str, Any]:
    return {camel(key): msgspec.to_builtins(value) for key, value in values.items() if value is not None}


def send_email(
    id: str, template_id: str, subject: str, reply_to: str | None = None, tracking: Tracking | None = None
) -> Step:
    return Step(id, "sendEmail", _params(template_id=template_id, subject=subject, reply_to=reply_to, tracking=tracking))


def send_voice(
    id: str,
    script_id: str,
    caller_id: str | None = None,
    max_duration: Duration | None = None,
    voicemail: Voicemail | None = None,
) -> Step:
    return Step(
        id,
        "sendVoice",
        _params(script_id=script_id, caller_id=caller_id, max_duration=max_duration, voicemail=voicemail),
    )


def wait(id: str, duration: Duration) -> Step:
    return Step(id, "wait", _params(duration=duration))


def branch(id: str, conditions: list[Condition]) -> Step:
    return Step(id, "branch", _params(conditions=list(conditions)))


def end(id: str, outcome: str) -> Step:
    return Step(id, "end", _params(outcome=outcome))


def custom(id: str, type: str, **params: Any) -> Step:
    """A step of a plugin-provided type; `params` are passed through as written (camelCase)."""
    return Step(id, type, msgspec.to_builtins(params))
