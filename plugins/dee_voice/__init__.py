"""Built-in voice channel: the `sendVoice` step type and a deterministic simulated adapter."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from dee.kernel.context import StepContext
from dee.kernel.effects import DispatchRequest
from dee.kernel.inputs import ChannelResult
from dee.kernel.outcomes import Done, Fail, Send, StepOutcome
from dee.plan.model import Duration, Voicemail
from dee.plugin import hookimpl
from dee.plugin.contracts import DispatchResponse, StepType, TemplateStore
from dee.plugin.ledger import MemoryLedger, RedisLedger, ledger_for

CALL_OUTCOMES = ("answered", "voicemail", "no_answer", "busy", "failed", "declined")


class SendVoiceParams(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    script_id: str
    caller_id: str | None = None
    max_duration: Duration | None = None
    voicemail: Voicemail | None = None


class SendVoiceStep(StepType):
    """Places a call running a stored script; the call's outcome becomes the step's outcome."""

    name = "sendVoice"
    params_type = SendVoiceParams
    channel = "voice"

    def check(self, params: SendVoiceParams, templates: TemplateStore) -> list[str]:
        problems = []
        if templates.get("voice", params.script_id) is None:
            problems.append(f"unknown call script {params.script_id!r}")
        vm = params.voicemail
        if vm and vm.message_id and templates.get("voicemail", vm.message_id) is None:
            problems.append(f"unknown voicemail message {vm.message_id!r}")
        return problems

    def enter(self, ctx: StepContext, params: SendVoiceParams) -> StepOutcome:
        if not ctx.contact.phone:
            return Fail("contact has no phone number")
        script = ctx.templates.get("voice", params.script_id)
        if script is None:
            return Fail(f"unknown call script {params.script_id!r}")
        vm = params.voicemail
        voicemail = None
        if vm is not None:
            doc = ctx.templates.get("voicemail", vm.message_id) if vm.message_id else None
            voicemail = {"detect": vm.detect, "messageId": vm.message_id, "message": dict(doc) if doc else None}
        settings = ctx.settings.get("voice", {})
        message: dict[str, Any] = {
            "to": ctx.contact.phone,
            "from": params.caller_id or settings.get("caller_id"),
            "scriptId": params.script_id,
            "script": dict(script),
            "maxDurationMs": params.max_duration.total_ms() if params.max_duration else None,
            "voicemail": voicemail,
            "callId": ctx.message_id,
        }
        digest = hashlib.sha256(msgspec.json.encode(message, order="sorted")).hexdigest()
        return Send("voice", message, digest)

    def on_result(self, ctx: StepContext, params: SendVoiceParams, result: ChannelResult) -> StepOutcome:
        outcome = result.outcome or "answered"
        if outcome not in CALL_OUTCOMES:
            return Fail(f"unknown call outcome {outcome!r}")
        return Done(outcome)


class SimulatedVoiceAdapter:
    """Deterministic call outcomes derived from the idempotency key; repeated keys answer the same."""

    name = "simulated"
    channel = "voice"
    OUTCOMES = ("answered", "voicemail", "no_answer", "busy")

    def __init__(self, ledger: MemoryLedger | RedisLedger | None = None) -> None:
        self.ledger = ledger or MemoryLedger()

    async def send(self, request: DispatchRequest) -> DispatchResponse:
        outcome = self.OUTCOMES[int(request.idempotency_key[:8], 16) % len(self.OUTCOMES)]
        return await self.ledger.record(request.idempotency_key, lambda: DispatchResponse("delivered", outcome=outcome))


@hookimpl
def dee_step_types() -> list[StepType]:
    return [SendVoiceStep()]


@hookimpl
def dee_channel_adapters(config: Any) -> list[Any]:
    return [SimulatedVoiceAdapter(ledger_for(config, "voice"))]
