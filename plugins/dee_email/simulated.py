"""A simulated email adapter: deterministic outcomes, never a real send.

Outcomes come from the recipient address: `...@bounce.test` hard-bounces, `...@soft.test`
soft-bounces, `...@fail.test` fails permanently, `...@flaky.test` fails transiently on the first
attempt; everything else is delivered. It remembers every idempotency key it has answered and
returns the first answer again for a repeated key, as a real adapter must; with a Redis ledger
that memory survives process crashes.
"""

from __future__ import annotations

from dee.kernel.effects import DispatchRequest
from dee.plugin.contracts import DispatchResponse
from dee.plugin.ledger import MemoryLedger, RedisLedger

RULES = {
    "bounce.test": DispatchResponse("failed", "hard_bounce", "550 mailbox does not exist"),
    "soft.test": DispatchResponse("failed", "soft_bounce", "452 mailbox full"),
    "fail.test": DispatchResponse("failed", "permanent", "554 rejected"),
}


class SimulatedEmailAdapter:
    name = "simulated"
    channel = "email"

    def __init__(self, ledger: MemoryLedger | RedisLedger | None = None) -> None:
        self.ledger = ledger or MemoryLedger()

    def respond(self, request: DispatchRequest) -> DispatchResponse:
        to = str(request.message.get("to") or "")
        domain = to.rsplit("@", 1)[-1].lower()
        if domain == "flaky.test" and request.attempt == 1:
            return DispatchResponse("failed", "transient", "connection reset")
        return RULES.get(domain, DispatchResponse("delivered", data={"messageId": request.message_id}))

    async def send(self, request: DispatchRequest) -> DispatchResponse:
        # a retry (next attempt) of the same key may get another answer, as a flaky server would
        return await self.ledger.record(f"{request.idempotency_key}#{request.attempt}", lambda: self.respond(request))
