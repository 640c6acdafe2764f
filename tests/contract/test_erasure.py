"""Erasing a contact (`engine.erase_contact`) on both backends: its running run is cancelled
(outcome `erased`) and journaled, its chains still verify, readers (entries, timelines,
exports, the compliance report) show `{"erased": true}` in place of its data, replay says
erased, the context and the debugger refuse with ContactErasedError, a second erasure changes
nothing, and a later enrolment of the same id is a new contact with a key of its own."""

from __future__ import annotations

import json

import pytest

from dee import Engine
from dee.config import PrivacyConfig
from dee.errors import ContactErasedError, ErasureReasonError
from dee.plan.model import Plan
from dee.records import Erasure
from tests.contract.conftest import open_engine
from tests.contract.scenarios import DAY, VARS, contact

EMAIL = "erin.erasable@acme.test"


async def test_erasing_a_contact_cancels_its_run_and_leaves_verifiable_chains_that_read_as_erased(
    engine: Engine, outreach: Plan
) -> None:
    erin = contact("c-erin", EMAIL)
    run = (await engine.execute(outreach, erin, VARS)).id
    other = (await engine.execute(outreach, contact("c-otto"), VARS)).id
    await engine.run_until_idle()
    await engine.advance_clock(DAY)
    before = await engine.audit.get_by_run(run)
    assert EMAIL in json.dumps([e.input for e in before] + [e.output for e in before] + [e.context for e in before])

    erasure = await engine.erase_contact("c-erin", "gdpr-art17")
    assert erasure == Erasure("c-erin", False, 1, [run])
    view = await engine.get_run(run)
    assert (view.status, view.outcome) == ("cancelled", "erased")
    verdict = await engine.verify_audit_chain(run)
    assert verdict.valid and verdict.entries == len(before) + 2

    after = await engine.audit.get_by_run(run)
    assert [e.checksum for e in after[: len(before)]] == [e.checksum for e in before]
    assert after[0].input == {"erased": True}
    assert [(e.action, e.output) for e in after[-2:]] == [
        ("run.cancelled", {"reason": "erased", "outcome": "erased"}),
        ("contact.erased", {"contactId": "c-erin", "reason": "gdpr-art17", "cancelled": True, "outcome": "erased", "planVersion": 1,
                            "epochMs": after[-1].output["epochMs"] if after[-1].output else None}),
    ]  # fmt: skip
    timeline = await engine.get_timeline(run)
    assert timeline[0].data == {"erased": True} and timeline[-1].action == "contact.erased"
    for shown in (json.dumps([[e.input, e.output, e.context] for e in after]), repr(timeline)):
        assert EMAIL not in shown and "C-ERIN" not in shown

    document = await engine.audit.export(run, "json")
    assert EMAIL.encode() not in document
    exported = json.loads(document)
    assert exported["chain"]["valid"] and exported["opened"]["1"]["input"] == {"erased": True}
    assert EMAIL.encode() not in await engine.audit.export(run, "pdf")

    replayed = await engine.replay(run)
    assert (replayed.erased, replayed.identical, replayed.diffs) == (True, False, [])
    with pytest.raises(ContactErasedError):
        await engine.audit.get_context_at(run, "initial-email")
    with pytest.raises(ContactErasedError):
        await engine.debug(run)
    report = await engine.compliance.report(0, 2 * DAY)
    assert report.chains.runs == 2 and report.chains.valid == 2  # the erased run is still counted

    # the other contact is untouched
    assert (await engine.replay(other)).identical
    assert EMAIL not in json.dumps([e.input for e in await engine.audit.get_by_run(other)])
    assert (await engine.audit.get_context_at(other, "initial-email")) is not None


async def test_a_second_erasure_changes_nothing_and_a_later_enrolment_is_a_new_contact(engine: Engine, outreach: Plan) -> None:
    run = (await engine.execute(outreach, contact("c-erin", EMAIL), VARS)).id
    await engine.run_until_idle()
    first = await engine.erase_contact("c-erin", "request")
    entries = (await engine.verify_audit_chain(run)).entries
    assert await engine.erase_contact("c-erin", "request") == Erasure("c-erin", True, 0, [])
    assert (await engine.verify_audit_chain(run)).entries == entries and first.runs == 1

    again = (await engine.execute(outreach, contact("c-erin", EMAIL), VARS)).id
    await engine.run_until_idle()
    await engine.advance_clock(DAY)
    assert (await engine.audit.get_by_run(again))[0].input["contact"]["email"] == EMAIL  # type: ignore[index]
    assert (await engine.replay(again)).identical
    assert (await engine.replay(run)).erased  # the erased run stays erased: its key is gone for good
    erased_again = await engine.erase_contact("c-erin", "request")
    assert erased_again == Erasure("c-erin", False, 2, [again])  # both runs journal it; only the new one was running
    assert all(v.valid for v in (await engine.verify_audit_chains([run, again])).values())


async def test_an_erasure_reason_is_a_code_and_never_free_text(engine: Engine) -> None:
    with pytest.raises(ErasureReasonError):
        await engine.erase_contact("c-erin", "asked by erin.erasable@acme.test")
    assert await engine.erase_contact("c-nobody", "gdpr-art17") == Erasure("c-nobody", False, 0, [])


async def test_with_encryption_off_an_erasure_still_scrubs_and_a_contact_enrolled_again_can_be_erased_again(
    backend: str, outreach: Plan
) -> None:  # fmt: skip
    async with open_engine(backend, privacy=PrivacyConfig(encrypt_contact_data=False)) as engine:
        first = (await engine.execute(outreach, contact("c-erin", EMAIL), VARS)).id
        await engine.run_until_idle()
        assert await engine.erase_contact("c-erin", "request") == Erasure("c-erin", False, 1, [first])
        assert (await engine.get_run(first)).outcome == "erased" and (await engine.verify_audit_chain(first)).valid
        again = (await engine.execute(outreach, contact("c-erin", EMAIL), VARS)).id
        await engine.run_until_idle()
        assert await engine.erase_contact("c-erin", "request") == Erasure("c-erin", False, 2, [again])
        assert (await engine.erase_contact("c-erin", "request")).already_erased
