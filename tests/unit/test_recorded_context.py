"""Step contexts in the audit log: recorded as what changed since the run's previous record, so
a run's log grows linearly in its steps, and folded back (`dee.kernel.recorded`) into exactly
the context each step saw."""

from __future__ import annotations

from typing import Any

import msgspec

from dee.kernel.context import StepContext
from dee.kernel.inputs import ContactChanged, Event
from dee.kernel.outcomes import Done, StepOutcome
from dee.kernel.recorded import entered_contexts
from dee.plan import steps
from dee.plan.model import Duration, Plan, Step
from dee.plan.prepare import prepare_plan
from dee.plugin import hookimpl
from dee.plugin.contracts import StepType
from dee.plugin.manager import PluginManager
from tests.unit.kernel_helpers import DAY, Driver, make_contact, template_store


class ProbeParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    label: str


class ProbeStep(StepType):
    """Finishes at once and journals the whole context it was given (as a step's output)."""

    name = "probe"
    params_type = ProbeParams

    def enter(self, ctx: StepContext, params: ProbeParams) -> StepOutcome:
        return Done("seen", data={"saw": {
            "tick": ctx.tick, "contact": msgspec.to_builtins(ctx.contact), "variables": dict(ctx.variables),
            "events": msgspec.to_builtins(ctx.events), "results": msgspec.to_builtins(ctx.results)}})  # fmt: skip


class ProbePlugin:
    @hookimpl
    def dee_step_types(self) -> list[StepType]:
        return [ProbeStep()]


def probe(step_id: str) -> Step:
    return Step(id=step_id, type="probe", params={"label": step_id})


def driver(step_list: list[Step], **kwargs: Any) -> Driver:
    manager = PluginManager.load(extra=[("probe", ProbePlugin())])
    plan = Plan(id="probe-plan", name="probe-plan", steps=tuple(step_list))
    compiled = prepare_plan(plan, manager.step_types(), template_store())
    return Driver(compiled, **kwargs)


def test_each_folded_context_is_the_one_its_step_saw() -> None:
    d = driver([
        probe("p1"), steps.send_email("mail", "tmpl_warm", "Hello"), probe("p2"), steps.wait("w1", Duration(days=1)),
        probe("p3"), steps.wait("w2", Duration(days=1)), probe("p4"), steps.end("done", "finished"),
    ], variables={"product": "DEE", "n": 2})  # fmt: skip
    d.run(until=0)
    d.feed(Event(DAY // 2, "r", "email.opened", step_id="mail"), now=DAY // 2)
    d.feed(ContactChanged(DAY + DAY // 2, attributes={"company": "Initech"}), now=DAY + DAY // 2)
    d.run()
    assert d.state.status == "completed"
    seen = {e.step_id: as_json(e.output["saw"]) for e in d.of("step.executed") if e.output and "saw" in e.output}
    folded = {e.step_id: as_json(context) for e, context in entered_contexts(d.entries)}
    assert list(seen) == ["p1", "p2", "p3", "p4"]
    for step_id, saw in seen.items():
        assert folded[step_id] == saw, step_id
    # what changed between probes reached them: the open, and the new attributes
    assert [ev["type"] for ev in seen["p4"]["events"]] == ["email.opened"]
    assert seen["p4"]["contact"]["attributes"] == {"company": "Initech"}
    assert seen["p1"]["contact"]["attributes"]["company"] == "Acme"


def as_json(value: Any) -> Any:
    """`value` as it reads back from the stored log."""
    return msgspec.json.decode(msgspec.json.encode(value))


def test_a_record_holds_only_what_is_new() -> None:
    d = driver([probe("p1"), probe("p2"), steps.wait("w", Duration(days=1)), probe("p3"), steps.end("done", "x")])
    d.run(until=0)
    d.feed(ContactChanged(10, attributes={"k": "v"}), now=10)
    d.run()
    records = [e.context for e in d.of("step.entered")]
    assert all(r is not None and "variables" not in r for r in records)
    # p1 saw no result, p2 saw p1's, the wait p2's, ...: each record carries only the newest one
    assert [(r["resultsFrom"], len(r["results"])) for r in records if r] == [(0, 0), (0, 1), (1, 1), (2, 1), (3, 1)]
    # the contact changed during the wait: carried once, by the next record only
    assert ["contact" in r for r in records if r] == [False, False, False, True, False]


def test_a_large_contact_attribute_is_written_once_not_once_per_step() -> None:
    big = "x" * 200_000
    n = 12
    d = driver([*(steps.wait(f"w{i}", Duration(hours=1)) for i in range(n)), steps.end("done", "x")],
               contact=make_contact(attributes={"company": "Acme", "blob": big}))  # fmt: skip
    d.run()
    written = sum(len(msgspec.json.encode([e.input, e.output, e.context])) for e in d.entries)
    assert len(d.of("step.entered")) == n + 1
    assert big in msgspec.json.encode(d.entries[0].input).decode()  # run.started has the contact
    assert written < 1.5 * len(big)  # the whole context in every record wrote 13 copies


def test_audit_bytes_grow_linearly_with_the_steps_of_a_run() -> None:
    # probes journal their whole context themselves (quadratic on purpose): count the records only
    def recorded(n: int) -> int:
        d = driver([*(probe(f"p{i}") for i in range(n)), steps.end("done", "x")])
        d.run()
        return sum(len(msgspec.json.encode(e.context)) for e in d.entries if e.action == "step.entered")

    assert recorded(80) < 2.2 * recorded(40)  # whole contexts: about 4 times as many bytes


def test_whole_context_records_of_older_logs_fold_the_same() -> None:
    d = driver([probe("p1"), steps.wait("w", Duration(days=1)), probe("p2"), steps.end("done", "x")])
    d.feed(Event(10, "r", "email.opened", step_id="p1"), now=10)
    d.run()
    folded = list(entered_contexts(d.entries))
    legacy = [msgspec.structs.replace(e, context=context) if e.action == "step.entered" else e
              for e, context in zip(d.entries, _aligned(d.entries, folded), strict=True)]  # fmt: skip
    assert [c for _, c in entered_contexts(legacy)] == [c for _, c in folded]
    assert all(e.context is not None and "variables" in e.context for e in legacy if e.action == "step.entered")


def _aligned(entries: list[Any], folded: list[tuple[Any, dict[str, Any]]]) -> list[dict[str, Any] | None]:
    """The whole context of each step.entered entry, None for the others."""
    by_seq = {e.seq: context for e, context in folded}
    return [by_seq.get(e.seq) for e in entries]
