"""Channel actions to adapters, and adapters' answers back as `result` messages.

Shared by the daemon's dispatcher (which reads the dispatch streams) and the memory engine: an
adapter that raises is a failed send (transient), a failure without an error kind is
permanent, and the result's commandId is derived from the idempotency key and the dispatch
number, so a re-delivered action gives a duplicate result, which intake drops. An action the
deliverability limits or budgets refused (`dee.limits`) is answered as a failure without being
sent; a rate limit's wait travels in the result's data as `retryAfterMs`, which the kernel
reads (`ChannelResult.retry_after_ms`) and journals with the result.
"""

from __future__ import annotations

import logging

from dee.bus import messages as wire
from dee.limits.rules import Refusal
from dee.plugin.contracts import ChannelAdapter, DispatchResponse
from dee.shell.store import OutboxItem

log = logging.getLogger("dee.dispatch")


async def send(adapter: ChannelAdapter, item: OutboxItem) -> DispatchResponse:
    """The adapter's answer to one action; whatever it raises is a transient failure (recorded
    and retried by the kernel), never the dispatcher's end: adapters are third-party code."""
    try:
        return await adapter.send(item.request)
    except Exception as exc:
        log.warning("adapter %s failed: %r", adapter.name, exc)
        return DispatchResponse("failed", "transient", f"{type(exc).__name__}: {exc}")


def refused(refusal: Refusal) -> DispatchResponse:
    """A refused action's answer: `budget_exhausted`, or `rate_limited` with its wait."""
    if refusal.kind == "budget":
        return DispatchResponse("failed", "budget_exhausted", refusal.reason, data={"limit": refusal.kind})
    return DispatchResponse("failed", "rate_limited", refusal.reason, data={"limit": refusal.kind}, retry_after_ms=refusal.retry_after_ms)


def result_message(item: OutboxItem, response: DispatchResponse, key: bytes) -> wire.Result:
    """The adapter's answer as a `result` message, signed with the deployment's result key."""
    request = item.request
    failed = response.status != "delivered"
    return wire.sign_result(wire.Result(
        command_id=f"result:{request.idempotency_key}:{request.dispatch_no}",
        run_id=request.run_id, idempotency_key=request.idempotency_key, attempt=request.attempt,
        status="failed" if failed else "delivered",
        error_kind=(response.error_kind or "permanent") if failed else None,  # type: ignore[arg-type]
        error=response.error, outcome=response.outcome,
        data=response.data if response.retry_after_ms is None else {**response.data, "retryAfterMs": response.retry_after_ms},
    ), key)  # fmt: skip
