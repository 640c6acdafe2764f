"""Built-in voice channel: the `sendVoice` step type, a deterministic simulated adapter and the
`twilio` adapter (calls over Twilio's REST API)."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from dee.kernel.clock import ms_to_ticks
from dee.kernel.context import StepContext
from dee.kernel.effects import DispatchRequest
from dee.kernel.inputs import ChannelResult, Event
from dee.kernel.outcomes import Done, Fail, Send, Sleep, StepOutcome
from dee.plan.model import Duration, Voicemail
from dee.plugin import hookimpl
from dee.plugin.contracts import DispatchResponse, StepType, TemplateStore, template_namespace
from dee.plugin.ledger import MemoryLedger, RedisLedger, ledger_for
from dee_voice import twiml
from dee_voice.twilio import TwilioAdapter

CALL_OUTCOMES = ("answered", "voicemail", "no_answer", "busy", "failed", "declined")
# the events that end a call, and the outcome they mean when their data names none
FINAL_EVENTS = {"call.completed": "answered", "call.voicemail": "voicemail", "call.failed": "failed"}
DEFAULT_STATUS_TIMEOUT_MS = 3_600_000


class SendVoiceParams(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    script_id: str
    caller_id: str | None = None
    max_duration: Duration | None = None
    voicemail: Voicemail | None = None


class SendVoiceStep(StepType):
    """Places a call running a stored script, rendered to TwiML here (in the kernel, so the
    content hash covers what is said). The call's outcome becomes the step's outcome: at once
    when the adapter knows it (the simulated one), else from the call's status events
    (`call.completed`, `call.failed`), waited for at most `channels.voice.status_timeout_ms`."""

    name = "sendVoice"
    params_type = SendVoiceParams
    channel = "voice"

    def check(self, params: SendVoiceParams, templates: TemplateStore) -> list[str]:
        problems = []
        script = templates.get("voice", params.script_id)
        if script is None:
            problems.append(f"unknown call script {params.script_id!r}")
        else:
            problems += twiml.problems(script, f"call script {params.script_id}")
        vm = params.voicemail
        if vm and vm.message_id:
            message = templates.get("voicemail", vm.message_id)
            if message is None:
                problems.append(f"unknown voicemail message {vm.message_id!r}")
            else:
                problems += twiml.problems({**message, "kind": "voicemail"}, f"voicemail {vm.message_id}")
        return problems

    def enter(self, ctx: StepContext, params: SendVoiceParams) -> StepOutcome:
        if not ctx.contact.phone:
            return Fail("contact has no phone number")
        script = ctx.templates.get("voice", params.script_id)
        if script is None:
            return Fail(f"unknown call script {params.script_id!r}")
        settings = ctx.settings.get("voice", {})
        namespace = template_namespace(ctx)
        rendered = twiml.render_script(script, namespace, f"call script {params.script_id}", settings.get("gather_url"))
        vm = params.voicemail
        voicemail = None
        if vm is not None:
            doc = ctx.templates.get("voicemail", vm.message_id) if vm.message_id else None
            voicemail = {
                "detect": vm.detect, "messageId": vm.message_id,
                "twiml": twiml.render_voicemail(doc, namespace, f"voicemail {vm.message_id}") if doc else None,
            }  # fmt: skip
        message: dict[str, Any] = {
            "to": ctx.contact.phone,
            "from": params.caller_id or settings.get("caller_id"),
            "scriptId": params.script_id,
            "twiml": rendered["twiml"],
            "branches": rendered["branches"],
            "maxDurationMs": params.max_duration.total_ms() if params.max_duration else None,
            "voicemail": voicemail,
            "callId": ctx.message_id,
        }
        digest = hashlib.sha256(msgspec.json.encode(message, order="sorted")).hexdigest()
        return Send("voice", message, digest)

    def on_result(self, ctx: StepContext, params: SendVoiceParams, result: ChannelResult) -> StepOutcome:
        if result.outcome is None:  # the call is placed; its outcome arrives as status events
            timeout = int(ctx.settings.get("voice", {}).get("status_timeout_ms", DEFAULT_STATUS_TIMEOUT_MS))
            return Sleep(ctx.tick + ms_to_ticks(timeout, ctx.tick_interval_ms))
        return _outcome(result.outcome, dict(result.data))

    def on_event(self, ctx: StepContext, params: SendVoiceParams, event: Event) -> StepOutcome | None:
        if event.type not in FINAL_EVENTS:
            return None  # initiated, ringing, answered: the call goes on
        return _outcome(str(event.data.get("outcome") or FINAL_EVENTS[event.type]), dict(event.data))

    def on_timer(self, ctx: StepContext, params: SendVoiceParams) -> StepOutcome:
        return Fail("the call's final status did not arrive in time (channels.voice.status_timeout_ms)")


def _outcome(outcome: str, data: dict[str, Any]) -> StepOutcome:
    if outcome not in CALL_OUTCOMES:
        return Fail(f"unknown call outcome {outcome!r}")
    return Done(outcome, data=data)


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
    return [SimulatedVoiceAdapter(ledger_for(config, "voice")), TwilioAdapter(config)]
