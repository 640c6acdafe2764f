"""The `twilio` adapter against a local server speaking Twilio's Calls REST shape: the request
as Twilio sees it (auth, fields, TwiML, the status callback), at most one call per key, the
answer mapping (429, 5xx, 4xx, a timeout), and a call step that waits for its final status."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest

from dee import Engine, EngineConfig, SchedulerConfig, load_plan
from dee.config import ChannelsConfig, MetricsConfig, VoiceChannelConfig
from dee.kernel.effects import DispatchRequest
from dee.ops import consents
from dee_voice.twilio import TwilioAdapter
from tests.peers.twilio import ACCOUNT, TOKEN, fake_twilio

CALLBACK = "https://in.example.test/voice/twilio/status"


def config(api_url: str, **voice: Any) -> EngineConfig:
    channel = VoiceChannelConfig(adapter="twilio", api_url=api_url, account_sid=ACCOUNT, auth_token=TOKEN,
                                 status_callback_url=CALLBACK, caller_id="+15550009999", **voice)  # fmt: skip
    return EngineConfig(database="memory://", channels=ChannelsConfig(voice=channel), scheduler=SchedulerConfig(clock="manual"),
                        metrics=MetricsConfig(enabled=False))  # fmt: skip


def request(key: str = "c" * 64, detect: bool = True) -> DispatchRequest:
    message = {"to": "+15550100", "from": "+15550009999", "twiml": "<Response><Say>Hi</Say></Response>",
               "voicemail": {"detect": detect}, "maxDurationMs": 120_000}  # fmt: skip
    return DispatchRequest("run-7", "call-attempt", "voice", key, f"<{key[:32]}@dee.test>", 1, message, 0, contact_id="c-7")


async def test_a_call_as_twilio_receives_it_and_once_per_key() -> None:
    async with fake_twilio() as fake:
        adapter = TwilioAdapter(config(fake.url))
        first, again = await adapter.send(request()), await adapter.send(request())
        await adapter.close()
    assert first == again and first.status == "delivered" and first.data["callSid"].startswith("CA")
    [call] = fake.calls
    assert (call["To"], call["From"], call["Twiml"]) == ("+15550100", "+15550009999", "<Response><Say>Hi</Say></Response>")
    assert (call["MachineDetection"], call["TimeLimit"], call["StatusCallbackMethod"]) == ("DetectMessageEnd", "120", "POST")
    callback = urlsplit(call["StatusCallback"])
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == CALLBACK
    assert parse_qs(callback.query) == {"run": ["run-7"], "step": ["call-attempt"], "contact": ["c-7"], "call": [f"<{'c' * 32}@dee.test>"]}


@pytest.mark.parametrize(("answer", "kind"), [
    ((429, '{"code": 20429, "message": "Too Many Requests"}'), "rate_limited"),
    ((500, '{"message": "internal"}'), "transient"),
    ((503, "unavailable"), "transient"),
    ((400, '{"code": 21211, "message": "Invalid To number"}'), "permanent"),
    ((201, '{"no": "sid"}'), "transient"),
])  # fmt: skip
async def test_the_answers_map_to_error_kinds_and_a_failed_call_is_placed_again(answer: tuple[int, str], kind: str) -> None:
    async with fake_twilio() as fake:
        fake.answers.append(answer)
        adapter = TwilioAdapter(config(fake.url))
        failed = await adapter.send(request())
        retried = await adapter.send(request())
        await adapter.close()
    assert (failed.status, failed.error_kind) == ("failed", kind)
    if kind == "permanent":  # settled for the key: not placed again
        assert retried == failed and len(fake.calls) == 1
    else:
        assert retried.status == "delivered" and len(fake.calls) == 2


async def test_a_provider_that_does_not_answer_in_time_is_transient() -> None:
    async with fake_twilio() as fake:
        fake.delay_s = 2.0
        adapter = TwilioAdapter(config(fake.url, http_timeout_ms=300))
        response = await adapter.send(request())
        await adapter.close()
    assert (response.status, response.error_kind) == ("failed", "transient")


async def test_an_unconfigured_adapter_fails_its_calls_permanently() -> None:
    bare = msgspec.structs.replace(config("http://127.0.0.1:1"), channels=ChannelsConfig(voice=VoiceChannelConfig(adapter="twilio")))
    response = await TwilioAdapter(bare).send(request())
    assert (response.status, response.error_kind) == ("failed", "permanent") and "api_url" in (response.error or "")


async def test_the_call_step_waits_for_the_final_status_and_times_out_without_it() -> None:
    async with fake_twilio() as fake, Engine(config(fake.url, status_timeout_ms=600_000)) as engine:
        plan = load_plan("config/plans/sales-outreach-v2.yaml")
        people = [{"id": f"v{i}", "email": f"v{i}@example.com", "phone": f"+1555010{i}", "attributes": {"company": "Acme"}}
                  for i in range(2)]  # fmt: skip
        await consents.grant(engine, [str(p["id"]) for p in people], "voice", "web form")  # they agreed to be called
        runs = (await engine.bulk_execute(plan, people, {"product": "DEE"})).run_ids
        await engine.advance_clock(7 * 86_400)  # the cold path reaches the call after a week
        assert [(await engine.get_run(r)).current_step for r in runs] == ["call-attempt", "call-attempt"]
        assert len(fake.calls) == 2
        call = parse_qs(urlsplit(fake.calls[0]["StatusCallback"]).query)
        answered = call["run"][0]
        await engine.ingest_event("call.ringing", call["contact"][0], {}, run_id=answered, message_id=call["call"][0])
        await engine.ingest_event("call.completed", call["contact"][0], {"outcome": "voicemail", "duration": 31},
                                  run_id=answered, message_id=call["call"][0])  # fmt: skip
        await engine.advance_clock(600)  # the other's wait runs out
        done = {r: await engine.get_run(r) for r in runs}
        other = next(r for r in runs if r != answered)
        executed = await engine.audit.query(run_id=answered, actions=["step.executed"])
        results = {e.step_id: e.output["result"] for e in executed if e.output and "result" in e.output}
        assert results["call-attempt"]["outcome"] == "voicemail"
        assert results["call-attempt"]["idempotencyKey"] and results["call-attempt"]["contentHash"]
        assert (done[answered].status, done[answered].current_step) == ("waiting", "wait-4")  # on to the breakup email
        assert (done[other].status, done[other].current_step) == ("failed", "call-attempt")
        replay = await engine.replay(answered)
        assert replay.identical, replay.diffs
