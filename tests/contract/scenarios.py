"""What the contract tests share besides fixtures: contacts, plans' ids, summaries of runs that
compare across backends (no run ids, entry ids or timestamps), and throwaway channel adapters.

A summary is built only through the public Engine API, so the same function describes a run
of the memory backend and one of the daemon backend, and a test compares both with one literal.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable
from typing import Any

from dee import DeeError, Engine, partition_for
from dee.plan.model import Plan
from dee.plugin import hookimpl
from dee.plugin.contracts import DispatchRequest, DispatchResponse
from dee.records import ConsentRecord

DAY = 86_400
OUTREACH = "config/plans/sales-outreach-v2.yaml"
WELCOME = "config/plans/welcome-sequence.yaml"
OUTREACH_ID = "sales-outreach-v2"
WELCOME_ID = "welcome-sequence"
VARS = {"product": "DEE"}
PARTITIONS = 4  # both backends are built with this many partitions

Line = tuple[int, str | None, str, str | None]  # a timeline line: tick, step, action, outcome


def contact(cid: str, email: str | None = None) -> dict[str, Any]:
    """A contact of Acme; `email` picks the simulated adapter's outcome by its domain."""
    return {
        "id": cid, "email": email or f"{cid}@acme.test", "phone": "+15550001",
        "attributes": {"company": "Acme", "first_name": cid.upper()},
    }  # fmt: skip


def same_partition(count: int, prefix: str = "c") -> list[str]:
    """`count` contact ids that all live in one partition (so a per-partition cap bites)."""
    names = (f"{prefix}{i}" for i in itertools.count())
    return list(itertools.islice((n for n in names if partition_for(n, PARTITIONS) == 0), count))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---- summaries ------------------------------------------------------------------------------


CALLED = "<called>"  # a simulated call's outcome in a trace (see `trace`)
CALL_OUTCOMES = ("answered", "voicemail", "no_answer", "busy")  # what the simulated voice adapter answers


async def trace(engine: Engine, run_id: str) -> list[Line]:
    """The run's timeline without timestamps: (tick, step, action, outcome) per entry.

    The simulated voice adapter draws a call's outcome from the idempotency key, hence from the
    run id, which differs between runs of a test: a call's outcome shows as CALLED once it is
    checked to be one of the adapter's outcomes (each of them continues the plan the same way)."""
    lines: list[Line] = []
    for t in await engine.get_timeline(run_id):
        outcome = t.outcome
        if t.action == "step.executed" and t.step == "call-attempt":
            assert outcome in CALL_OUTCOMES, outcome
            outcome = CALLED
        lines.append((t.tick, t.step, t.action, outcome))
    return lines


async def view(engine: Engine, run_id: str) -> tuple[str, str | None, str | None]:
    """(status, outcome, current step) of a run."""
    run = await engine.get_run(run_id)
    return run.status, run.outcome, run.current_step


async def actions(engine: Engine, run_id: str, *names: str) -> list[tuple[str, str | None, int]]:
    """(action, step, tick) of the run's entries, only those named when names are given."""
    entries = await engine.audit.query(run_id=run_id, actions=list(names)) if names else await engine.audit.get_by_run(run_id)
    return [(e.action, e.step_id, e.tick) for e in entries]


async def outputs(engine: Engine, run_id: str, action: str) -> list[tuple[str | None, int, dict[str, Any] | None]]:
    """(step, tick, output) of the run's entries of one action."""
    return [(e.step_id, e.tick, e.output) for e in await engine.audit.query(run_id=run_id, actions=[action])]


async def channels_dispatched(engine: Engine, run_id: str) -> list[str]:
    return [str((e.output or {}).get("channel")) for e in await engine.audit.query(run_id=run_id, actions=["step.dispatched"])]


async def by_contact(engine: Engine, plan_id: str | None = None) -> dict[str, tuple[str, str | None, str | None]]:
    """(status, outcome, current step) of every run (of a plan), keyed `plan/contact`."""
    page = await engine.list_runs(plan_id=plan_id, limit=1000)
    return {f"{r.plan_id}/{r.contact_id}": (r.status, r.outcome, r.current_step) for r in page.runs}


def error_of(exc: BaseException) -> tuple[str, dict[str, Any]]:
    """An exception as a comparable value: its class and public attributes."""
    return type(exc).__name__, {k: v for k, v in vars(exc).items() if not k.startswith("_")}


async def refusal(call: Awaitable[Any]) -> tuple[str, dict[str, Any]] | str:
    """What awaiting `call` raised (a DeeError, as `error_of`), or "accepted"."""
    try:
        await call
    except DeeError as exc:
        return error_of(exc)
    return "accepted"


# ---- expected traces of the outreach plan ----------------------------------------------------


def started(tick: int = 0) -> list[Line]:
    return [(tick, None, "run.started", "pending")]


def sent(tick: int, step: str, outcome: str = "delivered") -> list[Line]:
    """A channel step: entered, allowed by the policy gates, dispatched, answered."""
    return [(tick, step, "step.entered", None), (tick, step, "policy.evaluated", "allow"), (tick, step, "step.dispatched", None),
            (tick, step, "step.executed", outcome)]  # fmt: skip


def waits(tick: int, step: str) -> list[Line]:
    return [(tick, step, "step.entered", None), (tick, step, "wait.started", None)]


def waited(tick: int, step: str) -> list[Line]:
    return [(tick, step, "wait.completed", "completed")]


def branched(tick: int, step: str, to: str) -> list[Line]:
    return [(tick, step, "step.entered", None), (tick, step, "step.evaluated", f"branch:{to}")]


def heard(tick: int, step: str | None = "initial-email") -> list[Line]:
    return [(tick, step, "event.received", None)]


def ended(tick: int, step: str, outcome: str) -> list[Line]:
    return [(tick, step, "step.entered", None), (tick, step, "step.executed", outcome), (tick, step, "run.completed", outcome)]


def first_email(t0: int = 0) -> list[Line]:
    """Enrolled at `t0`: started, the first email delivered, waiting on wait-1."""
    return started(t0) + sent(t0, "initial-email") + waits(t0, "wait-1")


def cold_path(t0: int = 0) -> list[Line]:
    """Nothing heard: the cold follow-up at +3 days, the call at +7, the breakup email at +9."""
    return (first_email(t0) + waited(t0 + 3 * DAY, "wait-1") + branched(t0 + 3 * DAY, "check-email-1", "cold-follow-up")
            + sent(t0 + 3 * DAY, "cold-follow-up") + waits(t0 + 3 * DAY, "wait-3") + waited(t0 + 7 * DAY, "wait-3")
            + sent(t0 + 7 * DAY, "call-attempt", CALLED) + waits(t0 + 7 * DAY, "wait-4") + waited(t0 + 9 * DAY, "wait-4")
            + sent(t0 + 9 * DAY, "breakup-email") + ended(t0 + 9 * DAY, "end-no-reply", "no_response"))  # fmt: skip


def warm_path(opened: int, t0: int = 0) -> list[Line]:
    """Opened at tick `opened`: the warm follow-up at +3 days, the call at +5, the breakup at +7."""
    return (first_email(t0) + heard(opened) + waited(t0 + 3 * DAY, "wait-1")
            + branched(t0 + 3 * DAY, "check-email-1", "warm-follow-up") + sent(t0 + 3 * DAY, "warm-follow-up")
            + waits(t0 + 3 * DAY, "wait-2") + waited(t0 + 5 * DAY, "wait-2")
            + branched(t0 + 5 * DAY, "check-email-2", "call-attempt")
            + sent(t0 + 5 * DAY, "call-attempt", CALLED) + waits(t0 + 5 * DAY, "wait-4") + waited(t0 + 7 * DAY, "wait-4")
            + sent(t0 + 7 * DAY, "breakup-email") + ended(t0 + 7 * DAY, "end-no-reply", "no_response"))  # fmt: skip


def replied_path(replied: int, t0: int = 0) -> list[Line]:
    """A reply to the first email at tick `replied` (while on wait-1): the exit condition ends it."""
    return first_email(t0) + heard(replied) + [(replied, "wait-1", "run.completed", "replied")]


def hard_bounce_path(t0: int = 0) -> list[Line]:
    return started(t0) + sent(t0, "initial-email", "bounced") + [(t0, "initial-email", "run.completed", "undeliverable")]


def welcome_bounced(t0: int, bounced: int) -> list[Line]:
    """A welcome run on wait-1-day when another run of its contact hard-bounced at `bounced`."""
    return (started(t0) + sent(t0, "welcome-email") + waits(t0, "wait-1-day") + heard(bounced, None)
            + [(bounced, "wait-1-day", "run.completed", "bounced")])  # fmt: skip


# ---- the outreach plan's main paths, in one deployment -----------------------------------------


async def may_call(engine: Engine, *contact_ids: str) -> None:
    """Record that these contacts agreed to be called: voice needs a granted consent."""
    for contact_id in contact_ids:
        await engine.record_consent(ConsentRecord(contact_id=contact_id, channel="voice", status="granted", source="form"))


async def main_paths(engine: Engine, outreach: Plan, welcome: Plan,
                     callers: tuple[str, ...] = ("c-replied", "c-warm", "c-cold", "c-bounced")) -> dict[str, str]:  # fmt: skip
    """Runs of the outreach plan down each main path, to their end (ten days on): a reply at
    tick 100 (`replied`), an open at 100 (`warm`), nothing (`cold`), a hard bounce of a run
    enrolled at tick 10 (`bounced`), which ends its contact's welcome run (`bounced-welcome`).
    `callers` agreed to be called. Returns their run ids by those names."""
    await may_call(engine, *callers)
    ids = {
        "replied": (await engine.execute(outreach, contact("c-replied"), VARS)).id,
        "warm": (await engine.execute(outreach, contact("c-warm"), VARS)).id,
        "cold": (await engine.execute(outreach, contact("c-cold"), VARS)).id,
        "bounced-welcome": (await engine.execute(welcome, contact("c-bounced"), VARS)).id,
    }
    await engine.run_until_idle()
    await engine.advance_clock(10)
    ids["bounced"] = (await engine.execute(outreach, contact("c-bounced", "c-bounced@bounce.test"), VARS)).id
    await engine.run_until_idle()
    await engine.advance_clock(90)
    await engine.ingest_event("email.replied", "c-replied", {}, step_id="initial-email", event_id="reply-1")
    await engine.ingest_event("email.opened", "c-warm", {"ua": "mail"}, step_id="initial-email", event_id="open-1")
    await engine.advance_clock(10 * DAY)
    return ids


MAIN_PATHS: dict[str, tuple[tuple[str, str | None, str | None], list[Line]]] = {
    "replied": (("completed", "replied", "wait-1"), replied_path(100)),
    "warm": (("completed", "no_response", "end-no-reply"), warm_path(100)),
    "cold": (("completed", "no_response", "end-no-reply"), cold_path()),
    "bounced": (("completed", "undeliverable", "initial-email"), hard_bounce_path(10)),
    "bounced-welcome": (("completed", "bounced", "wait-1-day"), welcome_bounced(0, 10)),
}  # what `main_paths` leads to: each run's view and trace


# ---- throwaway channel adapters ------------------------------------------------------------


class AdapterPlugin:
    """A plugin providing one channel adapter (register it under a name unique to the test)."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter

    @hookimpl
    def dee_channel_adapters(self, config: Any) -> list[Any]:
        return [self.adapter]


class RaisingEmailAdapter:
    """Raises on every attempt for `...@raise.test`, on the first attempt only for
    `...@raise-once.test`, and delivers everything else."""

    channel = "email"

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, int]] = []

    async def send(self, request: DispatchRequest) -> DispatchResponse:
        to = str(request.message.get("to"))
        self.calls.append((to, request.attempt))
        if to.endswith("@raise.test") or (to.endswith("@raise-once.test") and request.attempt == 1):
            raise RuntimeError("smtp connection exploded")
        return DispatchResponse("delivered", data={"messageId": request.message_id})


class KindlessFailureEmailAdapter:
    """Answers every send with a failure that names no error kind (nor an error)."""

    channel = "email"

    def __init__(self, name: str) -> None:
        self.name = name

    async def send(self, request: DispatchRequest) -> DispatchResponse:
        return DispatchResponse("failed")
