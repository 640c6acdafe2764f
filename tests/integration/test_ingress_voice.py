"""Twilio's call status callbacks over real HTTP: calls placed by the `twilio` adapter against a
local server speaking Twilio's Calls shape, then the StatusCallback URL the adapter gave it POSTed
to the ingress as Twilio would (the form, `X-Twilio-Signature` over the full URL and the sorted
parameters with the auth token): each final status becomes the call step's outcome and the run
goes on; a bad signature is refused and the step keeps waiting; a repeated callback is applied
once; a callback for a run the engine does not know is taken and ignored."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yarl

from dee import EngineConfig, load_plan
from dee.config import VoiceChannelConfig
from dee.ops import consents
from tests.integration.ingress_helpers import OUTREACH, VARS, Deployment, running
from tests.integration.ingress_signing import twilio_signature
from tests.peers.twilio import ACCOUNT, TOKEN, FakeTwilio, fake_twilio

PUBLIC = "https://in.example.test"  # what Twilio is told; a proxy forwards it to the ingress on loopback
CALLBACK = f"{PUBLIC}/voice/twilio/status"
# the run's contact -> the final status Twilio reports, and the outcome the call step must take
FINALS: dict[str, tuple[dict[str, str], str]] = {
    "answered": ({"CallStatus": "completed", "CallDuration": "31", "AnsweredBy": "human"}, "answered"),
    "voicemail": ({"CallStatus": "completed", "CallDuration": "24", "AnsweredBy": "machine_end_beep"}, "voicemail"),
    "no-answer": ({"CallStatus": "no-answer", "CallDuration": "0"}, "no_answer"),
    "busy": ({"CallStatus": "busy", "CallDuration": "0"}, "busy"),
    "failed": ({"CallStatus": "failed", "CallDuration": "0"}, "failed"),
}


def voice(fake: FakeTwilio) -> VoiceChannelConfig:
    return VoiceChannelConfig(adapter="twilio", api_url=fake.url, account_sid=ACCOUNT, auth_token=TOKEN, status_callback_url=CALLBACK,
                              caller_id="+15550009999")  # fmt: skip


async def at_the_call(d: Deployment, fake: FakeTwilio, names: list[str]) -> dict[str, tuple[str, dict[str, str]]]:
    """Runs for contacts `names` (with phones) brought to their call step: name -> (run, call request)."""
    people = [{"id": name, "email": f"{name}@acme.test", "phone": f"+1555010{i:04d}", "attributes": {"company": "Acme"}}
              for i, name in enumerate(names)]  # fmt: skip
    await consents.grant(d.engine, names, "voice", "web form")  # they agreed to be called
    runs = (await d.engine.bulk_execute(load_plan(OUTREACH), people, VARS)).run_ids
    await d.engine.advance_clock(7 * 86_400)  # no open, so the cold path: the call comes after a week
    await d.engine.run_until_idle()
    by_run = {parse_qs(urlsplit(call["StatusCallback"]).query)["run"][0]: call for call in fake.calls}
    assert sorted(by_run) == sorted(runs) and len(fake.calls) == len(runs)
    found = {}
    for run_id in runs:
        run = await d.engine.get_run(run_id)
        assert (run.status, run.current_step) == ("waiting", "call-attempt")
        sid = f"CA{fake.calls.index(by_run[run_id]) + 1:032x}"  # the sid the server answered the call with
        found[run.contact_id] = (run_id, {**by_run[run_id], "Sid": sid})
    return found


def status_form(call: dict[str, str], status: dict[str, str], sequence: int) -> dict[str, str]:
    """The form of a status callback, with the fields Twilio documents for it."""
    return {"AccountSid": ACCOUNT, "ApiVersion": "2010-04-01", "CallSid": call["Sid"], "To": call["To"],
            "From": call["From"], "Direction": "outbound-api", "CallbackSource": "call-progress-events",
            "SequenceNumber": str(sequence), "Timestamp": format_datetime(datetime.now(UTC), usegmt=True), **status}  # fmt: skip


async def callback(d: Deployment, url: str, form: dict[str, str], signature: str | None = None) -> int:
    """POST a status callback the way Twilio does, to `url` (the public one) through the loopback."""
    parts = urlsplit(url)
    local = yarl.URL(f"{d.base}{parts.path}?{parts.query}", encoded=True)  # the query's bytes as the adapter made them
    headers = {"X-Twilio-Signature": twilio_signature(url, form, TOKEN) if signature is None else signature,
               "User-Agent": "TwilioProxy/1.1"}  # fmt: skip
    async with d.http.post(local, data=form, headers=headers) as response:
        await response.read()
        return response.status


async def call_events(d: Deployment, run_id: str) -> list[tuple[str, str | None, Any]]:
    entries = [e for e in await d.engine.audit.get_by_run(run_id) if e.action == "event.received" and e.output and "eventType" in e.output]
    return [(str(e.output["eventType"]), e.output.get("stepId"), ((e.input or {}).get("data") or {}).get("outcome")) for e in entries]


async def call_result(d: Deployment, run_id: str) -> dict[str, Any] | None:
    """What the call step ended with: its result's outcome and the data of the status that ended it."""
    executed = await d.engine.audit.query(run_id=run_id, actions=["step.executed"])
    found = [e.output for e in executed if e.step_id == "call-attempt" and e.output and "result" in e.output]
    return {**found[-1], "outcome": found[-1]["result"]["outcome"]} if found else None


async def test_each_final_status_is_the_call_steps_outcome_and_the_run_goes_on(deployment: EngineConfig) -> None:
    async with fake_twilio() as fake, running(deployment, voice=voice(fake), public_url=PUBLIC) as d:
        calls = await at_the_call(d, fake, [*FINALS, "waiting"])
        for name, (status, _) in FINALS.items():
            run_id, call = calls[name]
            url = call["StatusCallback"]
            assert url.startswith(CALLBACK + "?")
            for sequence, progress in enumerate(("initiated", "ringing")):
                assert await callback(d, url, status_form(call, {"CallStatus": progress}, sequence)) == 204
            if status["CallStatus"] == "completed":
                assert await callback(d, url, status_form(call, {"CallStatus": "in-progress"}, 2)) == 204
            assert await callback(d, url, status_form(call, status, 3)) == 204
        await d.engine.run_until_idle()
        for name, (status, outcome) in FINALS.items():
            run_id, _ = calls[name]
            run = await d.engine.get_run(run_id)
            assert (run.status, run.current_step) == ("waiting", "wait-4"), name  # on to the breakup email
            result = await call_result(d, run_id)
            assert result is not None and result["outcome"] == outcome, (name, result)
            assert (result["callSid"], result.get("answeredBy")) == (calls[name][1]["Sid"], status.get("AnsweredBy")), result
            final = "call.voicemail" if outcome == "voicemail" else "call.completed" if outcome == "answered" else "call.failed"
            progress = ["call.initiated", "call.ringing"] + (["call.answered"] if status["CallStatus"] == "completed" else [])
            assert await call_events(d, run_id) == [(t, "call-attempt", None) for t in progress] + [(final, "call-attempt", outcome)]
        # the run that heard nothing still waits for its call
        waiting = await d.engine.get_run(calls["waiting"][0])
        assert (waiting.status, waiting.current_step) == ("waiting", "call-attempt")
        await d.engine.advance_clock(2 * 86_400)  # and the others' breakup emails go out
        assert [(await d.engine.get_run(calls[name][0])).current_step for name in FINALS] == ["end-no-reply"] * len(FINALS)


async def test_a_bad_signature_is_refused_and_the_step_keeps_waiting(deployment: EngineConfig) -> None:
    async with fake_twilio() as fake, running(deployment, voice=voice(fake), public_url=PUBLIC) as d:
        calls = await at_the_call(d, fake, ["c1"])
        run_id, call = calls["c1"]
        url = call["StatusCallback"]
        form = status_form(call, FINALS["answered"][0], 3)
        other_run = url.replace(f"run={run_id}", "run=01OTHERRUN0000000000000000")
        for why, target, signed_url, signed_form, signature in (
            ("another auth token", url, url, form, twilio_signature(url, form, "not-the-token")),
            ("the status altered", url, url, {**form, "CallStatus": "busy"}, None),
            ("signed for another URL", url, other_run, form, None),
            ("the URL altered", other_run, url, form, None),
            ("the local URL signed, not the public one", url, url.replace(PUBLIC, d.base), form, None),
            ("no signature", url, url, form, ""),
            ("not base64", url, url, form, "***"),
        ):  # fmt: skip
            sig = twilio_signature(signed_url, signed_form, TOKEN) if signature is None else signature
            assert await callback(d, target, form, sig) == 403, why
        await d.engine.run_until_idle()
        assert await call_events(d, run_id) == []
        run = await d.engine.get_run(run_id)
        assert (run.status, run.current_step) == ("waiting", "call-attempt") and await call_result(d, run_id) is None
        # the genuine callback still counts afterwards
        assert await callback(d, url, form) == 204
        await d.engine.run_until_idle()
        assert (await d.engine.get_run(run_id)).current_step == "wait-4"


async def test_a_repeated_callback_is_applied_once_and_an_unknown_run_is_ignored(deployment: EngineConfig) -> None:
    async with fake_twilio() as fake, running(deployment, voice=voice(fake), public_url=PUBLIC) as d:
        calls = await at_the_call(d, fake, ["c1"])
        run_id, call = calls["c1"]
        url = call["StatusCallback"]
        ringing, completed = (status_form(call, {"CallStatus": "ringing"}, 1), status_form(call, FINALS["voicemail"][0], 2))
        for form in (ringing, ringing, completed, completed, ringing):  # Twilio retries; a late duplicate
            assert await callback(d, url, form) == 204
        await d.engine.run_until_idle()
        assert await call_events(d, run_id) == [("call.ringing", "call-attempt", None), ("call.voicemail", "call-attempt", "voicemail")]
        executed = await d.engine.audit.query(run_id=run_id, actions=["step.executed"])
        assert [e.output["result"]["outcome"] for e in executed if e.step_id == "call-attempt" and "result" in (e.output or {})] == [
            "voicemail"]  # fmt: skip
        # a run the engine does not know (a call placed by another deployment): 2xx, nothing recorded
        unknown = url.replace(f"run={run_id}", "run=01NOSUCHRUN000000000000000")
        assert await callback(d, unknown, completed) == 204
        # a callback URL that names no run at all is not one the adapter made
        bare = CALLBACK + "?call=x"
        assert await callback(d, bare, completed) == 400
        await d.engine.run_until_idle()
        assert len(await call_events(d, run_id)) == 2
        assert (await d.engine.get_run(run_id)).current_step == "wait-4"
