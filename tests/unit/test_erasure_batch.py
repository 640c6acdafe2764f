"""An erasure that arrives in the same stream batch as an enrolment of its contact: the run the
batch enrolled (not stored yet when the erasure is applied) is scrubbed and journaled too, so
it neither runs on with the contact's data nor keeps it in its state."""

from __future__ import annotations

import msgspec

from dee import Engine, EngineConfig, SchedulerConfig, load_plan
from dee.bus import messages as wire
from dee.kernel.contact import Contact
from dee.routing import partition_for

EMAIL = "batch.erased@example.com"


async def test_an_enrolment_and_an_erasure_in_one_batch_leave_a_scrubbed_cancelled_run() -> None:
    async with Engine(EngineConfig(database="memory://", scheduler=SchedulerConfig(clock="manual", partitions=2))) as engine:
        plan = load_plan("config/plans/welcome-sequence.yaml")
        version = await engine._backend.register(plan)
        backend = engine._backend
        partition = partition_for("c-b", 2)
        enrol = wire.Execute(command_id="cmd-1", reply_to="memory", run_id="run-b", plan_id=plan.id, plan_version=version,
                             contact=Contact(id="c-b", email=EMAIL, attributes={"first_name": "B"}))  # fmt: skip
        erase = wire.EraseContact(command_id="cmd-2", reply_to="memory", contact_id="c-b", reason="gdpr-art17")
        answers = await backend._take_in(partition, [enrol, erase])  # type: ignore[attr-defined]
        assert answers["cmd-1"].ok and answers["cmd-2"].ok
        await engine.run_until_idle()
        state = backend.store.runs["run-b"]  # type: ignore[attr-defined]
        assert (state.status, state.outcome) == ("cancelled", "erased")
        assert EMAIL.encode() not in msgspec.msgpack.encode(state)
        assert [e.action for e in await engine.audit.get_by_run("run-b")][-1] == "contact.erased"
        assert (await engine.verify_audit_chain("run-b")).valid
        assert (await engine.replay("run-b")).erased
