"""Do-not-call lists on both backends (`engine.suppress_numbers`): a listed number's waiting run
stops calling and keeps emailing; contacts enrolled after the import, one by one or in bulk (the
daemon's COPY path), never get a call; a listing of every channel cancels runs and refuses
enrolments; importing a list again changes nothing; the compliance report lists each contact's
regulatory suppression; a regulatory suppression naming its channel acts like a channel one."""

from __future__ import annotations

from typing import Any

import pytest

from dee import ContactSuppressedError, DeeError, Engine, InvalidNumberError, NumberImport
from dee.plan.model import Plan
from tests.contract.scenarios import DAY, VARS, channels_dispatched, contact, may_call, outputs, refusal, view

END = 10 * DAY
NO_CALL = ["email", "email", "email"]  # the outreach plan's cold path with its call refused
COLD_PATH = ["email", "email", "voice", "email"]
DNC = "do-not-call list"


def caller(cid: str, phone: str) -> dict[str, Any]:
    return {**contact(cid), "phone": phone}


def phone(i: int) -> str:
    return f"+1202555{i:04d}"


async def skipped(engine: Engine, run_id: str) -> list[tuple[str | None, str]]:
    return [(step, (out or {})["reason"]) for step, _, out in await outputs(engine, run_id, "step.skipped")]


async def test_a_listed_numbers_waiting_run_stops_calling_and_keeps_emailing(engine: Engine, outreach: Plan) -> None:
    await may_call(engine, "c-listed", "c-free")
    listed = (await engine.execute(outreach, caller("c-listed", "+1 202-555-0101"), VARS)).id
    free = (await engine.execute(outreach, caller("c-free", phone(102)), VARS)).id
    await engine.run_until_idle()
    await engine.advance_clock(100)  # both wait on wait-1, their first email sent
    done = await engine.suppress_numbers([phone(101), phone(999)], source="ftc", reason="national registry")
    assert done == NumberImport(read=2, new=2, listed=0, contacts=1, suppressed=1, runs_cancelled=0, runs_restricted=1)
    await engine.advance_clock(END)
    assert await channels_dispatched(engine, listed) == NO_CALL
    assert await skipped(engine, listed) == [("call-attempt", "contact suppressed on voice")]
    assert await channels_dispatched(engine, free) == COLD_PATH
    assert [await view(engine, r) for r in (listed, free)] == [("completed", "no_response", "end-no-reply")] * 2
    assert (await engine.replay(listed)).identical


async def test_a_contact_enrolled_after_the_import_never_gets_a_call(engine: Engine, outreach: Plan) -> None:
    assert await engine.suppress_numbers([phone(103), "+44 20 7946 0958"]) == NumberImport(read=2, new=2)
    await may_call(engine, "c-late", "c-uk", "c-free")
    late = (await engine.execute(outreach, caller("c-late", "+1 (202) 555-0103"), VARS)).id  # written otherwise, the same number
    uk = (await engine.execute(outreach, caller("c-uk", "+442079460958"), VARS)).id
    free = (await engine.execute(outreach, caller("c-free", phone(104)), VARS)).id
    await engine.advance_clock(END)
    assert [await channels_dispatched(engine, r) for r in (late, uk, free)] == [NO_CALL, NO_CALL, COLD_PATH]
    assert (await engine.replay(late)).identical
    report = await engine.compliance.report(0, END)
    assert sorted((s.contact_id, s.level, s.channel, s.source, s.reason, s.tick) for s in report.suppressions) == [
        ("c-late", "regulatory", "voice", "dnc", DNC, 0), ("c-uk", "regulatory", "voice", "dnc", DNC, 0)]  # fmt: skip
    assert report.sends_by_channel == {"email": 9, "voice": 1}


async def test_contacts_enrolled_in_bulk_after_the_import_never_get_a_call(engine: Engine, outreach: Plan) -> None:
    # 1,000 contacts: the daemon enrols so many with COPY, and the listed ones through their partitions
    await engine.suppress_numbers([phone(i) for i in (0, 250, 500)])
    await engine.suppress_numbers([phone(750)], channel=None)  # and one on every channel
    watched = ("c0000", "c0250", "c0500", "c0001")
    await may_call(engine, *watched)
    result = await engine.bulk_execute(outreach, [caller(f"c{i:04d}", phone(i)) for i in range(1000)], VARS)
    assert (result.created, result.skipped, result.errors) == (999, 1, [])
    await engine.advance_clock(END)
    runs = {r.contact_id: r.id for r in (await engine.list_runs(limit=2000)).runs}
    assert "c0750" not in runs
    assert [await channels_dispatched(engine, runs[c]) for c in watched] == [NO_CALL, NO_CALL, NO_CALL, COLD_PATH]
    report = await engine.compliance.report(0, END)
    assert sorted((s.contact_id, s.channel) for s in report.suppressions) == [
        ("c0000", "voice"), ("c0250", "voice"), ("c0500", "voice"), ("c0750", None)]  # fmt: skip


async def test_a_listing_of_every_channel_cancels_the_runs_and_refuses_enrolments(
    engine: Engine, outreach: Plan, welcome: Plan
) -> None:  # fmt: skip
    number = phone(105)
    runs = [(await engine.execute(plan, caller("c-all", number), VARS)).id for plan in (outreach, welcome)]
    await engine.run_until_idle()
    done = await engine.suppress_numbers([number], channel=None, source="state")
    assert done == NumberImport(read=1, new=1, contacts=1, suppressed=1, runs_cancelled=2)
    await engine.run_until_idle()
    assert [(await engine.get_run(r)).status for r in runs] == ["cancelled", "cancelled"]
    assert (await outputs(engine, runs[0], "run.cancelled"))[0][2] == {"reason": f"suppressed (regulatory): {DNC}"}
    refused = ("ContactSuppressedError", {"contact_id": "c-other", "level": "regulatory", "reason": DNC})
    assert await refusal(engine.execute(outreach, caller("c-other", number), VARS)) == refused
    assert await refusal(engine.execute(welcome, caller("c-other", "+12025550106"), VARS)) == refused  # suppressed on record now
    with pytest.raises(ContactSuppressedError):
        await engine.execute(outreach, caller("c-all", phone(107)), VARS)


async def test_importing_a_list_again_changes_nothing(engine: Engine, outreach: Plan) -> None:
    await may_call(engine, "c1", "c2")
    for cid, number in (("c1", phone(108)), ("c2", phone(109))):
        await engine.execute(outreach, caller(cid, number), VARS)
    await engine.run_until_idle()
    numbers = [phone(108), "+1 202 555 0108", phone(109), phone(110)]  # one twice: listed once
    assert await engine.suppress_numbers(numbers) == NumberImport(read=4, new=3, listed=1, contacts=2, suppressed=2,
                                                                  runs_restricted=2)  # fmt: skip
    assert await engine.suppress_numbers(numbers) == NumberImport(read=4, new=0, listed=4, contacts=2, suppressed=0)
    assert len((await engine.compliance.report(0, engine.current_tick)).suppressions) == 2
    # the same numbers on another list of the same level and channel: listed already
    assert await engine.suppress_numbers(numbers[:1], source="state list") == NumberImport(read=1, listed=1, contacts=1)


async def test_a_regulatory_suppression_naming_its_channel_stops_that_channel_only(engine: Engine, outreach: Plan) -> None:
    await may_call(engine, "c1")
    run = (await engine.execute(outreach, contact("c1"), VARS)).id
    assert await engine.suppress("c1", "regulatory", DNC, "crm", channel="voice") == 0  # cancels nothing
    await engine.advance_clock(END)
    assert await channels_dispatched(engine, run) == NO_CALL
    assert await view(engine, run) == ("completed", "no_response", "end-no-reply")
    assert (await engine.execute(outreach, contact("c1"), VARS)).status == "pending"  # a new enrolment is not refused


async def test_a_list_that_is_not_one_lists_nothing(engine: Engine) -> None:
    with pytest.raises(InvalidNumberError) as raised:
        await engine.suppress_numbers([phone(111), "2025550112"])  # no country code
    assert (raised.value.number, raised.value.why) == ("2025550112", "no country code (and no region for national numbers)")
    assert await engine.suppress_numbers([phone(111)]) == NumberImport(read=1, new=1)  # the batch was not listed
    for level, channel, why in (("plan", "voice", "numbers are listed at level regulatory, channel, global, not 'plan'"),
                                ("global", "voice", "a global listing covers every channel"),
                                ("regulatory", "sms", "unknown channel 'sms' (channels: email, voice)"),
                                ("channel", None, "a channel-level listing needs a channel")):  # fmt: skip
        with pytest.raises(DeeError, match=why.replace("(", r"\(").replace(")", r"\)")):
            await engine.suppress_numbers([phone(111)], level=level, channel=channel)
