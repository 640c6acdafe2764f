"""What a log record is about: the instance, partition and run, as context variables.

The scheduler sets them where it works (a partition worker's task holds its partition for
every record it logs); `dee.ops.logs` puts them into each record, as JSON fields or as
`key=value` after the message. Context variables follow asyncio tasks, so two partitions
logging in one process never mix their fields.
"""

from __future__ import annotations

import contextvars
from typing import Any

instance: contextvars.ContextVar[str | None] = contextvars.ContextVar("dee_instance", default=None)
partition: contextvars.ContextVar[int | None] = contextvars.ContextVar("dee_partition", default=None)
run_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("dee_run_id", default=None)


def current() -> dict[str, Any]:
    """The fields set in this context (only those that are set)."""
    found = {"instance": instance.get(), "partition": partition.get(), "run_id": run_id.get()}
    return {k: v for k, v in found.items() if v is not None}
