"""Reports (SPEC 3.1, 8): a run's audit export as JSON and PDF, and the compliance report, on the
in-memory engine; the PDF writer checked structurally (every offset in its cross-reference table)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dee import ConsentRecord, Engine, EngineConfig, SchedulerConfig, load_plan
from dee.config import ChannelsConfig, VoiceChannelConfig
from dee.errors import ConfigError
from dee.kernel.audit import AuditEntry, verify_chain
from dee.reports.compliance import consent_at
from dee.reports.pdf import LINES_PER_PAGE, text_pdf

OUTREACH = "config/plans/sales-outreach-v2.yaml"
DAY = 86400


def contact(cid: str, timezone: str = "America/New_York") -> dict[str, Any]:
    return {"id": cid, "email": f"{cid}@acme.test", "phone": "+15550001", "timezone": timezone,
            "attributes": {"company": "Acme", "first_name": cid.upper()}}  # fmt: skip


@pytest.fixture
async def engine() -> Any:
    async with Engine(EngineConfig(database="memory://", scheduler=SchedulerConfig(clock="manual"))) as e:
        yield e


async def completed_run(engine: Engine, cid: str = "c1", timezone: str = "America/New_York") -> str:
    """An outreach run without a reaction: the cold path (three emails, a call, the end at day 9);
    the contact agreed to be called."""
    await engine.record_consent(ConsentRecord(contact_id=cid, channel="voice", status="granted", source="form"))
    run = await engine.execute(load_plan(OUTREACH), contact(cid, timezone), {"product": "DEE"})
    await engine.advance_clock(10 * DAY)
    assert (await engine.get_run(run.id)).status == "completed"
    return run.id


# ---- the PDF writer ----------------------------------------------------------------------------


def pdf_objects(document: bytes) -> dict[int, bytes]:
    """Every object by number, found through the xref table (which must point at each exactly)."""
    assert document.startswith(b"%PDF-1.4\n") and document.endswith(b"%%EOF\n")
    xref_at = int(re.search(rb"startxref\n(\d+)\n%%EOF\n$", document).group(1))  # type: ignore[union-attr]
    assert document[xref_at:].startswith(b"xref\n0 ")
    count = int(document[xref_at:].split(b"\n")[1].split()[1])
    rows = document[xref_at:].split(b"\n")[3 : 3 + count - 1]
    objects = {}
    for number, row in enumerate(rows, start=1):
        offset = int(row[:10])
        assert document[offset:].startswith(b"%d 0 obj\n" % number)
        objects[number] = document[offset : document.index(b"\nendobj\n", offset)]
    return objects


def test_a_text_pdf_has_an_exact_xref_table_and_stream_lengths() -> None:
    document = text_pdf([f"line {i} (with parentheses) and a \\ backslash" for i in range(LINES_PER_PAGE + 5)], "T")
    objects = pdf_objects(document)
    streams = [o for o in objects.values() if b"stream\n" in o]
    assert len(streams) == 2  # two pages
    for obj in streams:
        length = int(re.search(rb"/Length (\d+)", obj).group(1))  # type: ignore[union-attr]
        body = obj[obj.index(b"stream\n") + 7 : obj.rindex(b"\nendstream")]
        assert len(body) == length
    assert b"(line 0 \\(with parentheses\\) and a \\\\ backslash) Tj" in streams[0]
    assert b"/Count 2" in objects[2] and b"(T - page 2 of 2)" in streams[1]


def test_text_outside_latin_1_is_shown_as_a_question_mark_and_long_lines_wrap() -> None:
    objects = pdf_objects(text_pdf(["Zoë → " + "x" * 200], "T"))
    page = next(o for o in objects.values() if b"stream\n" in o)
    assert b"(Zo\xeb ? " in page
    assert page.count(b") Tj T*") == 3  # 206 characters over three lines


# ---- audit export ------------------------------------------------------------------------------


async def test_a_json_export_holds_the_run_the_chain_and_every_entry_to_verify_it_again(engine: Engine, tmp_path: Path) -> None:
    run_id = await completed_run(engine)
    path = tmp_path / "run.json"
    document = await engine.audit.export(run_id, "json", path)
    assert path.read_bytes() == document
    data = json.loads(document)
    assert data["format"] == "dee.audit-export/1"
    assert (data["run"]["id"], data["run"]["status"], data["run"]["planId"]) == (run_id, "completed", "sales-outreach-v2")
    # the call (day 7, noon UTC: 07:00 in New York) waited an hour for the calling window to open
    assert data["chain"] == {"valid": True, "entries": len(data["entries"]), "firstTick": 0, "lastTick": 9 * DAY + 3600,
                             "brokenAt": None, "reason": None}  # fmt: skip
    entries = [msgspec.convert(e, AuditEntry) for e in data["entries"]]  # as stored: contact data sealed
    assert data["opened"] and all(set(parts) <= {"input", "output", "context"} for parts in data["opened"].values())
    shown = [msgspec.structs.replace(e, **data["opened"].get(str(e.seq), {})) for e in entries]
    assert msgspec.json.encode(shown) == msgspec.json.encode(await engine.audit.get_by_run(run_id))
    assert verify_chain(entries).valid  # without the engine: the export alone is enough
    entries[3] = msgspec.structs.replace(entries[3], tick=entries[3].tick + 1)
    assert verify_chain(entries).broken_at == 4


async def test_a_pdf_export_shows_the_run_its_chain_status_and_its_timeline(engine: Engine) -> None:
    run_id = await completed_run(engine)
    text = b"".join(o for o in pdf_objects(await engine.audit.export(run_id, "pdf")).values() if b"stream" in o)
    entries = await engine.audit.get_by_run(run_id)
    assert f"run {run_id}".encode() in text
    assert f"chain: VALID - {len(entries)} entries".encode() in text
    for entry in entries:
        assert entry.checksum[:16].encode() in text
    assert b"run.completed" in text and b"no_response" in text


async def test_a_pdf_export_of_a_tampered_run_says_where_the_chain_breaks(engine: Engine) -> None:
    run_id = await completed_run(engine)
    chain = engine._backend.store.audit[run_id]
    chain[2] = msgspec.structs.replace(chain[2], output={"forged": True})
    text = b"".join(o for o in pdf_objects(await engine.audit.export(run_id, "pdf")).values() if b"stream" in o)
    assert b"chain: BROKEN at entry 3 of" in text


async def test_an_unknown_export_format_is_refused(engine: Engine) -> None:
    run_id = await completed_run(engine)
    with pytest.raises(ValueError, match="json or pdf"):
        await engine.audit.export(run_id, "xml")  # type: ignore[arg-type]


# ---- consent and calling hours -----------------------------------------------------------------


def consent(status: str, tick: int, channel: str = "voice", expires: int | None = None) -> ConsentRecord:
    return ConsentRecord(contact_id="c1", channel=channel, status=status, source="test", tick=tick, expires_tick=expires)  # type: ignore[arg-type]


@pytest.mark.parametrize(("records", "tick", "expected"), [
    ([], 10, "none"),
    ([consent("granted", 5)], 10, "granted"),
    ([consent("granted", 5)], 4, "none"),  # given after the send
    ([consent("granted", 5), consent("revoked", 8)], 10, "revoked"),
    ([consent("granted", 5), consent("revoked", 8)], 7, "granted"),
    ([consent("granted", 5, expires=9)], 10, "expired"),
    ([consent("granted", 5, expires=11)], 10, "granted"),
    ([consent("revoked", 5), consent("granted", 5)], 10, "granted"),  # same tick: the later record
    ([consent("granted", 8), consent("revoked", 5)], 10, "granted"),  # recorded later, but older
    ([consent("granted", 5, channel="email")], 10, "none"),  # another channel
])  # fmt: skip
def test_the_consent_at_a_send_is_the_latest_record_up_to_its_tick(records: list[ConsentRecord], tick: int, expected: str) -> None:
    assert consent_at(records, "c1", "voice", tick) == expected


@pytest.mark.parametrize("hours", [("9", "17:00"), ("18:00", "09:00"), ("09:00", "09:00")])
def test_calling_hours_must_be_two_times_in_order(hours: tuple[str, str]) -> None:
    with pytest.raises(ConfigError, match="calling_hours"):
        EngineConfig.from_dict({"channels": {"voice": {"calling_hours": list(hours)}}})


# ---- the compliance report ---------------------------------------------------------------------


async def test_the_report_lists_every_send_with_its_consent_and_every_call_with_its_local_time() -> None:
    voice = VoiceChannelConfig(calling_hours=("00:00", "23:59:59"))
    cfg = EngineConfig(database="memory://", scheduler=SchedulerConfig(clock="manual"), channels=ChannelsConfig(voice=voice))
    async with Engine(cfg) as engine:
        await engine.record_consent(ConsentRecord(contact_id="c1", channel="email", status="granted", source="form"))
        ny = await completed_run(engine, "c1", "America/New_York")
        await engine.record_consent(ConsentRecord(contact_id="c1", channel="email", status="revoked", source="form"))
        nowhere = await completed_run(engine, "c2", "Mars/Olympus_Mons")
        report = await engine.compliance.report(0, engine.current_tick)
    assert report.sends_by_channel == {"email": 6, "voice": 2}  # three emails and a call per run
    by_run = {r: [s for s in report.sends if s.run_id == r] for r in (ny, nowhere)}
    assert [s.consent for s in by_run[ny] if s.channel == "email"] == ["granted"] * 3
    assert [(s.channel, s.consent) for s in by_run[nowhere]] == [  # c2 gave only its voice consent
        ("email", "none"), ("email", "none"), ("voice", "granted"), ("email", "none")]  # fmt: skip
    assert report.consent_at_send == {"granted": 5, "none": 3}
    assert [(c.contact_id, list(c.local_times), c.zones_from) for c in report.calls] == [
        ("c1", ["America/New_York"], "contact"), ("c2", ["Mars/Olympus_Mons"], "contact")]  # fmt: skip
    assert report.calls[0].local_times["America/New_York"] == "2026-01-12T07:00:00-05:00"  # day 7 at noon UTC
    assert (report.calls[1].within_hours, report.calls[1].reason) == (None, "unknown time zone Mars/Olympus_Mons")
    assert report.calls_outside_hours == sum(1 for c in report.calls if c.within_hours is not True) >= 1
    assert (report.chains.runs, report.chains.valid, report.chains.broken) == (2, 2, {})


async def test_a_calls_local_time_comes_from_its_tick_and_the_runs_epoch_not_its_wall_clock_stamp(engine: Engine) -> None:
    run_id = await completed_run(engine, "c1", "America/New_York")  # its call waited for 08:00 in New York
    chain = engine._backend.store.audit[run_id]
    at = next(i for i, e in enumerate(chain) if e.action == "step.dispatched" and e.step_id == "call-attempt")
    chain[at] = msgspec.structs.replace(chain[at], timestamp="2026-01-12T07:30:00.000+00:00")  # 02:30 in New York
    report = await engine.compliance.report(0, engine.current_tick)
    [call] = report.calls
    assert (call.tick, call.timestamp, call.moment) == (7 * DAY + 3600, "2026-01-12T07:30:00.000+00:00", "2026-01-12T13:00:00+00:00")
    assert (call.local_times, call.within_hours) == ({"America/New_York": "2026-01-12T08:00:00-05:00"}, True)
    assert report.chains.broken == {run_id: at + 1}  # the stamp is covered by the chain: the edit shows there


async def test_the_report_covers_only_its_period(engine: Engine) -> None:
    run_id = await completed_run(engine)
    report = await engine.compliance.report(1, 4 * DAY)  # the first email went out at tick 0
    assert [(s.step_id, s.tick) for s in report.sends] == [("cold-follow-up", 3 * DAY)]
    assert report.sends[0].run_id == run_id and (report.period_from, report.period_to) == (1, 4 * DAY)
    with pytest.raises(ValueError, match="before it begins"):
        await engine.compliance.report(10, 9)


async def test_the_report_shows_suppressions_unsubscribe_processing_and_broken_chains(engine: Engine) -> None:
    plan = load_plan(OUTREACH)
    a = await engine.execute(plan, contact("c1"), {"product": "DEE"})
    b = await engine.execute(plan, contact("c2"), {"product": "DEE"})
    await engine.advance_clock(100)
    await engine.ingest_event("email.unsubscribed", "c1", {}, occurred_at="2026-01-01T00:00:00+00:00")
    await engine.advance_clock(100)
    await engine.suppress("c2", "global", "complaint", "support")
    await engine.run_until_idle()
    chain = engine._backend.store.audit[b.id]
    chain[1] = msgspec.structs.replace(chain[1], tick=99)
    report = await engine.compliance.report(0, engine.current_tick)
    assert [(u.run_id, u.contact_id, u.received_tick, u.stopped_by, u.ticks) for u in report.unsubscribes] == [
        (a.id, "c1", 100, "run.completed", 0)]  # the plan's exit condition contact.unsubscribed  # fmt: skip
    assert report.unsubscribes[0].seconds is not None and report.unsubscribes[0].seconds >= 0
    # from the recipient's request (the event's occurredAt) until the run stopped
    unsubscribe = report.unsubscribes[0]
    assert unsubscribe.requested_at == "2026-01-01T00:00:00+00:00"
    assert unsubscribe.seconds_from_request is not None and unsubscribe.seconds_from_request > 86_400
    # the unsubscribe is on record as a suppression too
    assert [(s.contact_id, s.level, s.reason, s.source, s.tick) for s in report.suppressions] == [
        ("c1", "global", "unsubscribe", "email.unsubscribed", 100), ("c2", "global", "complaint", "support", 200)]
    assert (report.chains.runs, report.chains.valid, report.chains.broken) == (2, 1, {b.id: 2})
    assert [s.contact_id for s in (await engine.compliance.report(0, 150)).suppressions] == ["c1"]
