"""The audit hash chain (SPEC 8, DESIGN 3; dee.kernel.audit).

Every test starts from a small sealed chain of five entries and breaks exactly one thing, so it
can only pass when verification points at the entry that was broken. The encoding test recomputes
the checksum with hashlib + json alone, pinning the documented encoding rather than the code's.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dee import ChainVerification, Engine, EngineConfig, SchedulerConfig, load_plan
from dee.kernel.audit import (
    AuditEntry,
    AuditRow,
    EntryDraft,
    canonical,
    chain_checksum,
    entry_of,
    row_checksum,
    seal,
    seal_rows,
    verify_chain,
)  # fmt: skip

ZEROS = "0" * 64
HEX64 = re.compile(r"[0-9a-f]{64}")
STAMP = "2026-01-02T03:04:05.678+00:00"
RUN = "01RUN0000000000000000000000"


def _ids() -> Any:
    counter = itertools.count(1)
    return lambda: f"01ENTRY{next(counter):019d}"


def drafts(start_seq: int = 1) -> list[EntryDraft]:
    """Five entries shaped like a real run's: start, enter, dispatch, result, wait."""
    s = start_seq
    return [
        EntryDraft(RUN, s, "plan-a", None, 0, "run.started",
                   input={"kind": "start", "tick": 0, "runId": RUN, "variables": {"product": "DEE"}},
                   output={"status": "pending", "planChecksum": "c" * 64}),
        EntryDraft(RUN, s + 1, "plan-a", "hello", 0, "step.entered",
                   context={"tick": 0, "contact": {"id": "c1", "name": "Zoë → Ärger"}, "events": []}),
        EntryDraft(RUN, s + 2, "plan-a", "hello", 0, "step.dispatched",
                   output={"channel": "email", "idempotencyKey": "k" * 64, "attempt": 1}),
        EntryDraft(RUN, s + 3, "plan-a", "hello", 2, "step.executed",
                   input={"kind": "result", "tick": 2, "idempotencyKey": "k" * 64, "status": "delivered"},
                   output={"result": {"stepId": "hello", "type": "sendEmail", "tick": 0, "outcome": "delivered"}}),
        EntryDraft(RUN, s + 4, "plan-a", "pause", 2, "wait.started", output={"targetTick": 86402}),
    ]  # fmt: skip


def chain() -> list[AuditEntry]:
    return seal(drafts(), ZEROS, STAMP, _ids())


def replace(entry: AuditEntry, **changes: Any) -> AuditEntry:
    return msgspec.structs.replace(entry, **changes)


# ---- sealing --------------------------------------------------------------------------------


def test_a_sealed_chain_verifies() -> None:
    entries = chain()
    assert verify_chain(entries).valid is True
    result = verify_chain(entries, head_seq=5, head_checksum=entries[-1].checksum)
    assert result.valid is True
    assert result.entries == 5
    assert result.first_tick == 0
    assert result.last_tick == 2
    assert result.broken_at is None
    assert result.reason is None


def test_the_first_entry_chains_from_64_zeros_and_each_next_from_the_one_before() -> None:
    entries = chain()
    assert entries[0].previous_checksum == ZEROS
    assert len(entries[0].previous_checksum) == 64
    for before, after in itertools.pairwise(entries):
        assert after.previous_checksum == before.checksum
    assert all(HEX64.fullmatch(e.checksum) for e in entries)
    assert len({e.checksum for e in entries}) == 5


def test_sealing_copies_the_draft_fields_and_stamps_id_and_timestamp() -> None:
    entries = chain()
    third = entries[2]
    assert (third.id, third.run_id, third.seq, third.plan_id, third.step_id, third.tick, third.timestamp, third.action) == (
        "01ENTRY0000000000000000003", RUN, 3, "plan-a", "hello", 0, STAMP, "step.dispatched",
    )  # fmt: skip
    assert third.output == {"channel": "email", "idempotencyKey": "k" * 64, "attempt": 1}
    assert third.input is None and third.context is None


def test_a_second_batch_sealed_from_the_head_continues_the_chain() -> None:
    first = chain()
    more = seal(drafts(start_seq=6)[:2], first[-1].checksum, STAMP, _ids())
    whole = [*first, *more]
    assert more[0].previous_checksum == first[-1].checksum
    result = verify_chain(whole, head_seq=7, head_checksum=more[-1].checksum)
    assert (result.valid, result.entries) == (True, 7)


def test_an_empty_chain_without_a_recorded_head_is_valid() -> None:
    assert verify_chain([]) == ChainVerification(True, 0, None, None, None, None)


# ---- the documented encoding ----------------------------------------------------------------


def documented_checksum(entry: AuditEntry) -> str:
    """sha256(previous_checksum || canonical JSON of every other field), by hand."""
    fields = {
        "id": entry.id, "runId": entry.run_id, "seq": entry.seq, "planId": entry.plan_id,
        "stepId": entry.step_id, "tick": entry.tick, "timestamp": entry.timestamp, "action": entry.action,
        "input": entry.input, "output": entry.output, "context": entry.context,
        "previousChecksum": entry.previous_checksum,
    }  # fmt: skip
    encoded = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(entry.previous_checksum.encode("ascii") + encoded).hexdigest()


def test_checksum_is_sha256_of_previous_checksum_and_sorted_compact_utf8_json() -> None:
    for entry in chain():
        assert entry.checksum == documented_checksum(entry)
        assert chain_checksum(entry) == entry.checksum


def test_canonical_bytes_are_sorted_compact_utf8_json_without_the_checksum() -> None:
    entry = chain()[1]
    raw = canonical(entry)
    assert b'"checksum"' not in raw
    assert b'"previousChecksum":"' + ZEROS.encode() not in raw  # second entry chains from the first
    assert b'"previousChecksum":"' + chain()[0].checksum.encode() + b'"' in raw
    assert "Zoë → Ärger".encode() in raw  # UTF-8, not \\u escapes
    assert b", " not in raw and b": " not in raw
    decoded = json.loads(raw)
    assert list(decoded) == sorted(decoded)
    assert list(decoded["context"]) == ["contact", "events", "tick"]


def test_canonical_encoding_does_not_depend_on_key_insertion_order() -> None:
    forward = {"zeta": 1, "alpha": {"b": [1, {"y": 2, "x": 1}], "a": "é"}, "mid": None}
    backward: dict[str, Any] = {}
    backward["mid"] = None
    backward["alpha"] = {"a": "é", "b": [1, {"x": 1, "y": 2}]}
    backward["zeta"] = 1
    assert list(forward) != list(backward)
    one = AuditEntry("id1", RUN, 1, "p", "s", 3, STAMP, "step.executed", None, forward, None, ZEROS, "")
    two = AuditEntry("id1", RUN, 1, "p", "s", 3, STAMP, "step.executed", None, backward, None, ZEROS, "")
    assert canonical(one) == canonical(two)
    assert chain_checksum(one) == chain_checksum(two)
    assert canonical(one).startswith(b'{"action":"step.executed","context":null,"id":"id1","input":null,')
    assert b'"output":{"alpha":{"a":"\xc3\xa9","b":[1,{"x":1,"y":2}]},"mid":null,"zeta":1}' in canonical(one)


_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)  # any str but lone surrogates
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=8,
)
_objects = st.none() | st.dictionaries(_texts, _json, max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    run_id=_texts, seq=st.integers(1, 2**31), plan_id=_texts, step_id=st.none() | _texts, tick=st.integers(0, 2**62),
    action=_texts, given_input=_objects, output=_objects, context=_objects, stamp=_texts, entry_id=_texts,
)  # fmt: skip
def test_rows_are_sealed_with_exactly_the_canonical_encoding_of_their_entry(
    run_id: str, seq: int, plan_id: str, step_id: str | None, tick: int, action: str, given_input: Any,
    output: Any, context: Any, stamp: str, entry_id: str,
) -> None:  # fmt: skip
    """Sealing and row verification join the canonical bytes by hand (for speed); whatever the
    strings hold (quotes, backslashes, control characters, any script), the checksum is the
    one over `canonical(entry)` and over the documented json.dumps encoding."""
    draft = EntryDraft(run_id, seq, plan_id, step_id, tick, action, given_input, output, context)
    [row] = seal_rows([draft], ZEROS, stamp, lambda: entry_id)
    entry = entry_of(row)
    assert row.checksum == chain_checksum(entry) == documented_checksum(entry) == row_checksum(row)


def test_the_checksum_field_itself_is_not_covered() -> None:
    entry = chain()[0]
    assert canonical(entry) == canonical(replace(entry, checksum="f" * 64))


# ---- tampering ------------------------------------------------------------------------------

TAMPERING = {
    "output": {"output": {"channel": "sms", "idempotencyKey": "k" * 64, "attempt": 1}},
    "output-nested-value": {"output": {"channel": "email", "idempotencyKey": "k" * 64, "attempt": 2}},
    "tick": {"tick": 1},
    "action": {"action": "step.skipped"},
    "timestamp": {"timestamp": "2026-01-02T03:04:05.679+00:00"},
    "step_id": {"step_id": "other"},
    "step_id-none": {"step_id": None},
    "input": {"input": {"kind": "event"}},
    "context": {"context": {"tick": 0}},
    "plan_id": {"plan_id": "plan-b"},
    "run_id": {"run_id": "01RUN0000000000000000000001"},
    "id": {"id": "01ENTRY9999999999999999999"},
}


@pytest.mark.parametrize("changes", TAMPERING.values(), ids=TAMPERING.keys())
def test_tampering_with_any_field_breaks_the_chain_at_that_entry(changes: dict[str, Any]) -> None:
    entries = chain()
    entries[2] = replace(entries[2], **changes)
    result = verify_chain(entries, head_seq=5, head_checksum=entries[-1].checksum)
    assert result.valid is False
    assert result.broken_at == 3
    assert result.reason == "checksum does not match the entry's content"
    assert result.entries == 5


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4])
def test_tampering_is_located_wherever_it_happens(index: int) -> None:
    entries = chain()
    entries[index] = replace(entries[index], output={"forged": True})
    result = verify_chain(entries)
    assert (result.valid, result.broken_at) == (False, index + 1)


def test_tampering_with_the_first_entrys_input_is_caught() -> None:
    entries = chain()
    forged = dict(entries[0].input or {})
    forged["variables"] = {"product": "Something else"}
    entries[0] = replace(entries[0], input=forged)
    assert (verify_chain(entries).valid, verify_chain(entries).broken_at) == (False, 1)


def test_a_forged_checksum_is_caught_at_that_entry() -> None:
    entries = chain()
    entries[3] = replace(entries[3], checksum="a" * 64)
    result = verify_chain(entries)
    assert (result.valid, result.broken_at) == (False, 4)


def test_a_forged_previous_checksum_is_caught_at_that_entry() -> None:
    entries = chain()
    forged = replace(entries[3], previous_checksum="b" * 64)
    entries[3] = replace(forged, checksum=chain_checksum(forged))  # self-consistent, wrong link
    result = verify_chain(entries)
    assert (result.valid, result.broken_at) == (False, 4)
    assert result.reason == "previous_checksum does not match the entry before it"


def test_a_first_entry_not_chained_from_zeros_is_caught() -> None:
    entries = seal(drafts(), "1" * 64, STAMP, _ids())
    result = verify_chain(entries)
    assert (result.valid, result.broken_at) == (False, 1)


def test_rewriting_a_middle_entry_and_resealing_everything_after_it_needs_the_head_to_be_caught() -> None:
    entries = chain()
    head = entries[-1].checksum
    forged_drafts = drafts()
    forged_drafts[1] = msgspec.structs.replace(forged_drafts[1], context={"tick": 0, "forged": True})
    forged = seal(forged_drafts, ZEROS, STAMP, _ids())
    assert verify_chain(forged).valid is True  # a chain alone cannot show a full rewrite ...
    result = verify_chain(forged, head_seq=5, head_checksum=head)  # ... the recorded head can
    assert (result.valid, result.broken_at) == (False, 5)
    assert result.reason == "the last entry is not the run's recorded chain head"


# ---- stored rows ------------------------------------------------------------------------------


def rows() -> list[AuditRow]:
    return seal_rows(drafts(), ZEROS, STAMP, _ids())


def test_rows_are_the_entries_with_their_json_as_canonical_text() -> None:
    entries, stored = chain(), rows()
    assert [r.checksum for r in stored] == [e.checksum for e in entries]
    for row, entry in zip(stored, entries, strict=True):
        assert entry_of(row) == entry
        for text in (row.input, row.output, row.context):
            assert text is None or text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert entry_of(stored[1], with_context=False) == replace(entries[1], context=None)
    assert verify_chain(stored, head_seq=5, head_checksum=stored[-1].checksum).valid is True


ROW_TAMPERING = {
    "input": {"input": '{"kind":"start","runId":"other","tick":0,"variables":{"product":"DEE"}}'},
    "output": {"output": '{"planChecksum":"cc","status":"pending"}'},
    "context": {"context": '{"contact":{"id":"c1"},"events":[],"tick":0}'},
    "not-json": {"output": '{"status": '},
    "unrepresentable-number": {"output": '{"planChecksum":"' + "c" * 64 + '","status":1e400}'},
    "action": {"action": "run.cancelled"},
}


@pytest.mark.parametrize("changes", ROW_TAMPERING.values(), ids=ROW_TAMPERING.keys())
def test_tampering_with_a_stored_row_breaks_the_chain_at_that_row(changes: dict[str, Any]) -> None:
    stored = rows()
    stored[0] = stored[0]._replace(**changes)
    result = verify_chain(stored)
    assert (result.valid, result.broken_at, result.reason) == (False, 1, "checksum does not match the entry's content")


def test_a_row_whose_json_is_not_in_canonical_form_is_judged_by_its_values() -> None:
    """Rows written before JSON was stored canonically: same values, other key order and spacing."""
    stored = rows()
    reordered = json.dumps(dict(reversed(list(json.loads(stored[0].input or "{}").items()))), indent=1)
    assert reordered != stored[0].input
    stored[0] = stored[0]._replace(input=reordered)
    assert verify_chain(stored, head_seq=5, head_checksum=stored[-1].checksum).valid is True


# ---- deletions and reordering ---------------------------------------------------------------


@pytest.mark.parametrize("index", [1, 2, 3])
def test_deleting_a_middle_entry_names_the_missing_seq(index: int) -> None:
    entries = chain()
    del entries[index]
    result = verify_chain(entries, head_seq=5, head_checksum=chain()[-1].checksum)
    assert result.valid is False
    assert result.broken_at == index + 1
    assert result.reason == f"entry seq {index + 2} where {index + 1} was expected (missing entry)"
    assert result.entries == 4


def test_deleting_the_first_entry_is_caught_at_seq_1() -> None:
    entries = chain()[1:]
    result = verify_chain(entries)
    assert (result.valid, result.broken_at) == (False, 1)


def test_deleting_the_newest_entries_is_not_visible_in_the_chain_alone() -> None:
    assert verify_chain(chain()[:3]).valid is True


def test_deleting_the_newest_entries_is_caught_by_the_recorded_head_seq() -> None:
    entries = chain()
    head = entries[-1].checksum
    result = verify_chain(entries[:3], head_seq=5, head_checksum=head)
    assert result.valid is False
    assert result.broken_at == 4
    assert result.reason == "the run's chain head is at seq 5 but 3 entries exist"
    assert (result.entries, result.first_tick, result.last_tick) == (3, 0, 0)


def test_deleting_the_newest_entries_is_caught_by_the_recorded_head_checksum_alone() -> None:
    entries = chain()
    head = entries[-1].checksum
    result = verify_chain(entries[:4], head_checksum=head)
    assert (result.valid, result.broken_at) == (False, 4)


def test_deleting_every_entry_is_caught_by_the_recorded_head_seq() -> None:
    result = verify_chain([], head_seq=5, head_checksum=chain()[-1].checksum)
    assert (result.valid, result.broken_at, result.entries) == (False, 1, 0)


def test_deleting_every_entry_is_caught_by_the_recorded_head_checksum_alone() -> None:
    # The run row says the chain ends with a real checksum; an empty chain cannot end there.
    result = verify_chain([], head_checksum=chain()[-1].checksum)
    assert result.valid is False
    assert result.broken_at == 1


def test_swapping_two_entries_is_caught_at_the_first_of_them() -> None:
    entries = chain()
    entries[1], entries[2] = entries[2], entries[1]
    result = verify_chain(entries)
    assert (result.valid, result.broken_at) == (False, 2)


def test_renumbering_after_a_swap_is_still_caught() -> None:
    entries = chain()
    a, b = entries[1], entries[2]
    entries[1], entries[2] = replace(b, seq=2), replace(a, seq=3)
    result = verify_chain(entries)
    assert (result.valid, result.broken_at) == (False, 2)


def test_inserting_a_foreign_entry_is_caught() -> None:
    entries = chain()
    stranger = seal(drafts()[:1], entries[1].checksum, STAMP, _ids())[0]
    stranger = replace(stranger, seq=3)
    stranger = replace(stranger, checksum=chain_checksum(stranger))
    entries.insert(2, stranger)
    result = verify_chain(entries)
    assert (result.valid, result.broken_at) == (False, 4)


# ---- through the engine ---------------------------------------------------------------------


async def test_the_engine_verifies_a_finished_run_and_catches_a_tampered_stored_entry() -> None:
    async with Engine(EngineConfig(database="memory://", scheduler=SchedulerConfig(clock="manual"))) as engine:
        plan = load_plan("config/plans/sales-outreach-v2.yaml")
        run = await engine.execute(plan, {"id": "c1", "email": "a@x.com", "phone": "+1", "attributes": {"company": "Acme"}},
                                   {"product": "DEE"})  # fmt: skip
        await engine.advance_clock(8 * 86400)
        entries = await engine.audit.get_by_run(run.id)
        ok = await engine.verify_audit_chain(run.id)
        assert (ok.valid, ok.entries, ok.first_tick, ok.last_tick) == (True, len(entries), 0, entries[-1].tick)
        assert entries[0].previous_checksum == ZEROS
        stored = engine._backend.store.audit[run.id]  # as stored: the checksums cover the sealed contact data
        assert all(e.checksum == documented_checksum(e) for e in stored)

        target = next(e for e in stored if e.action == "step.executed" and e.step_id == "initial-email")
        index = stored.index(target)
        other = next(e for e in stored if e.seq != target.seq and e.output is not None)
        stored[index] = replace(target, output=other.output)  # another entry's (sealed) output moved here
        broken = await engine.verify_audit_chain(run.id)
        assert (broken.valid, broken.broken_at) == (False, target.seq)

        stored[index] = target
        del stored[-2:]
        cut = await engine.verify_audit_chain(run.id)
        assert (cut.valid, cut.broken_at) == (False, len(entries) - 1)
