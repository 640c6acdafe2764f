"""Hypothesis strategies for the kernel's property tests: valid plans, runs and a scripted world.

A `Scenario` is everything one run depends on: a plan (valid by construction, checked with
`prepare_plan`), the start input, a script of external inputs (events and commands at
non-decreasing ticks spread over the plan's wait horizon) and a `World` table that decides how
the channels answer each dispatch. The world is data, not code with state: the n-th email (or
voice) dispatch of a run always gets the n-th answer of the table, so the same draw gives the
same world, and `driver.drive` turns a scenario into the exact list of inputs the kernel saw.

Plans are built so that nearly every draw is valid:
- the first step never ends the run and the last step is never a branch;
- every step but the first gets a "parent" among the earlier steps that can reach it (the
  previous step in linear mode, or a branch target / an explicit edge), so nothing is
  unreachable;
- extra targets go forward, or back to a `wait` step (a cycle through a back edge therefore
  always contains a wait, as SPEC 3.2 requires); waits always last at least one minute.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import assume
from hypothesis import strategies as st

from dee.errors import PlanValidationError
from dee.kernel.contact import Contact
from dee.kernel.inputs import AnyInput, Cancel, ContactChanged, Event, Pause, Resume, Retry, Start, Suppressed
from dee.kernel.machine import KernelEnv
from dee.plan import steps as builders
from dee.plan import transitions as transition_builders
from dee.plan.compiled import CompiledPlan
from dee.plan.model import Condition, Duration, Edge, ExitCondition, Plan, Step, Tracking, Voicemail
from dee.plan.prepare import prepare_plan
from dee.plugin.manager import PluginManager
from dee.project.templates import MemoryTemplateStore

T = TypeVar("T")

EMAIL, VOICE, WAIT, BRANCH, END = "sendEmail", "sendVoice", "wait", "branch", "end"
SENDS = (EMAIL, VOICE)
PREFIX = {EMAIL: "email", VOICE: "voice", WAIT: "wait", BRANCH: "branch", END: "end"}

TEMPLATE_DOCUMENTS: dict[str, dict[str, dict[str, Any]]] = {
    "email": {
        "t_plain": {"text": "Hello {{ contact.id }}, a word about {{ product | default('us') }}."},
        "t_html": {
            "text": "Hello {{ contact.id }}",
            "html": '<p>Hi {{ contact.id }}, see <a href="https://example.com/offer">the offer</a></p>',
        },
        # Undefined when the run has no `x` variable: the step fails (fail-closed), which gives
        # the failed -> retry paths of the status machine something to do.
        "t_vars": {"text": "Your number is {{ variables.x }}"},
    },
    "voice": {"sc_call": {"kind": "script", "greeting": "Hi {{ contact.id }}", "steps": [{"say": "Bye"}]}},
    "voicemail": {"vm_msg": {"kind": "voicemail", "tts": "Please call us back"}},
}


def new_templates() -> MemoryTemplateStore:
    """A fresh store with the same content each time (runs must not depend on store identity)."""
    return MemoryTemplateStore(copy.deepcopy(TEMPLATE_DOCUMENTS), name="property-tests")


@functools.lru_cache(maxsize=1)
def plugins() -> PluginManager:
    return PluginManager.load()


def compile_plan(plan: Plan) -> CompiledPlan:
    """`prepare_plan` with the built-in plugins and the test templates."""
    return prepare_plan(plan, plugins().step_types(), new_templates())


def make_env(plan: Plan, tick_interval_ms: int) -> KernelEnv:
    """A fresh environment: plan compiled anew, a new template store."""
    return KernelEnv(plan=compile_plan(plan), templates=new_templates(), tick_interval_ms=tick_interval_ms)


# ---- conditions ------------------------------------------------------------------------------
# Plans are drawn imperatively with `pick` (one cached integer strategy per call) rather than by
# composing strategies per draw: building strategy objects dominated the run time otherwise.


def pick(draw: st.DrawFn, options: Sequence[T]) -> T:
    """One of `options` (shrinks towards the first)."""
    return options[draw(st.integers(0, len(options) - 1))]


def chance(draw: st.DrawFn, one_in: int) -> bool:
    """True with probability 1/one_in (shrinks towards False)."""
    return draw(st.integers(0, one_in - 1)) == one_in - 1


ATOM_KINDS = ("event", "count", "tier", "variable", "call")


def _atom(draw: st.DrawFn, send_ids: Sequence[str], voice_ids: Sequence[str]) -> str:
    """One condition from the pool SPEC 3.3 lists, naming only steps that exist."""
    kind = pick(draw, ATOM_KINDS if voice_ids else ATOM_KINDS[:-1])
    if kind == "event":
        ref = pick(draw, [*(f'"{s}"' for s in send_ids), "any"])
        return f"events.{pick(draw, ['hasReply', 'hasOpen', 'hasClick'])}({ref})"
    if kind == "count":
        return f'events.count("email.opened") >= {draw(st.integers(1, 3))}'
    if kind == "tier":
        return 'has(contact.attributes.tier) && contact.attributes.tier == "gold"'
    if kind == "variable":
        return f"variables.x > {draw(st.integers(0, 10))}"
    return f'call.outcome("{pick(draw, voice_ids)}") == "answered"'


def condition(draw: st.DrawFn, send_ids: Sequence[str], voice_ids: Sequence[str]) -> str:
    """An atom; now and then negated, or two combined with a boolean operator."""
    shape = pick(draw, ["atom", "atom", "atom", "not", "pair"])
    a = _atom(draw, send_ids, voice_ids)
    if shape == "not":
        return f"!({a})" if chance(draw, 2) else f"not {a}"
    if shape == "pair":
        return f"({a}) {pick(draw, ['&&', '||', 'and', 'or'])} ({_atom(draw, send_ids, voice_ids)})"
    return a


EXIT_POOL = (
    "events.hasReply(any)", "contact.bounced", "contact.unsubscribed", 'events.count("email.opened") >= 3',
    # Fails at run time when the contact has no `tier`: a legitimate runtime condition error
    # that must fail the run (fail-closed), never crash the kernel.
    'contact.attributes.tier == "platinum"',
)  # fmt: skip


def exit_conditions(draw: st.DrawFn, send_ids: Sequence[str], voice_ids: Sequence[str]) -> list[ExitCondition]:
    """Usually none; otherwise one or two, from a fixed pool or the branch condition pool."""
    if not chance(draw, 3):
        return []
    out = []
    for _ in range(draw(st.integers(1, 2))):
        when = pick(draw, EXIT_POOL) if chance(draw, 2) else condition(draw, send_ids, voice_ids)
        out.append(ExitCondition(when, pick(draw, ["exited", "replied", "stopped"])))
    return out


# ---- plans -----------------------------------------------------------------------------------

STEP_WEIGHTS = (EMAIL,) * 3 + (VOICE,) * 2 + (WAIT,) * 3 + (BRANCH,) * 2 + (END,)
NOT_END = tuple(t for t in STEP_WEIGHTS if t != END)
LAST = (END, END, END, EMAIL, VOICE, WAIT)  # never a branch: it would need somewhere to go


def _step_types(draw: st.DrawFn, n: int, linear: bool) -> list[str]:
    types: list[str] = []
    for index in range(n):
        if index == n - 1:
            options = LAST
        elif index == 0 or (linear and BRANCH not in types):
            options = NOT_END  # in linear mode nothing could reach the step after an early end
        else:
            options = STEP_WEIGHTS
        types.append(pick(draw, options))
    return types


def _duration(draw: st.DrawFn) -> Duration:
    unit = pick(draw, ["minutes", "hours", "days"])
    return Duration(**{unit: draw(st.integers(1, {"minutes": 59, "hours": 23, "days": 3}[unit]))})


def _step(draw: st.DrawFn, step_id: str, kind: str, arms: list[Condition]) -> Step:
    if kind == EMAIL:
        tracking = Tracking(opens=chance(draw, 2), clicks=chance(draw, 2)) if chance(draw, 2) else None
        subject = pick(draw, ["Hi {{ contact.id }}", "About {{ product | default('DEE') }}"])
        template = pick(draw, ["t_plain", "t_plain", "t_html", "t_vars"])
        return builders.send_email(step_id, template, subject, tracking=tracking)
    if kind == VOICE:
        voicemail = pick(draw, [None, Voicemail(detect=True, message_id="vm_msg"), Voicemail(detect=False)])
        return builders.send_voice(step_id, "sc_call", voicemail=voicemail)
    if kind == WAIT:
        return builders.wait(step_id, _duration(draw))
    if kind == BRANCH:
        return builders.branch(step_id, arms)
    return builders.end(step_id, pick(draw, ["done", "replied", "no_response"]))


def _extra_targets(draw: st.DrawFn, index: int, ids: list[str], types: list[str]) -> list[str]:
    """Forward jumps, and (rarely) a back edge to a wait step, which makes a cycle with a wait."""
    out = []
    forward = ids[index + 1:]
    back = [ids[j] for j in range(index + 1) if types[j] == WAIT]
    for _ in range(draw(st.integers(0, 2))):
        if back and chance(draw, 8):
            out.append(pick(draw, back))
        elif forward:
            out.append(pick(draw, forward))
    return out


@st.composite
def plans(draw: st.DrawFn, plan_id: str = "prop-plan") -> Plan:
    """A random plan of 2-12 steps that `prepare_plan` accepts (all of them, by construction;
    should one not be, it is discarded with `assume` and hypothesis' health check would say so
    if that happened often)."""
    n = draw(st.integers(2, 12))
    linear = chance(draw, 2)
    types = _step_types(draw, n, linear)
    ids = [f"{PREFIX[t]}-{i}" for i, t in enumerate(types)]
    send_ids = [i for i, t in zip(ids, types, strict=False) if t in SENDS]
    voice_ids = [i for i, t in zip(ids, types, strict=False) if t == VOICE]

    # Who reaches each step: step j > 0 needs a parent i < j that does not end the run.
    targets: dict[int, list[str]] = {i: [] for i in range(n)}
    for j in range(1, n):
        if linear and types[j - 1] in (EMAIL, VOICE, WAIT):
            continue  # reached by falling through
        if linear and types[j - 1] == BRANCH:
            parent = j - 1
        elif linear:
            parent = pick(draw, [i for i in range(j - 1) if types[i] == BRANCH])
        elif types[j - 1] != END and not chance(draw, 4):
            parent = j - 1
        else:
            parent = pick(draw, [i for i in range(j) if types[i] != END])
        targets[parent].append(ids[j])
    for i in range(n):
        if types[i] == BRANCH or (not linear and types[i] != END):
            targets[i] = list(dict.fromkeys(targets[i] + _extra_targets(draw, i, ids, types)))

    built: list[Step] = []
    edges: list[Edge] = []
    for i, (step_id, kind) in enumerate(zip(ids, types, strict=False)):
        earlier_sends = [s for s in send_ids if ids.index(s) < i]
        arms: list[Condition] = []
        if kind == BRANCH:
            out = targets[i] or [pick(draw, ids[i + 1:])]
            arms = [Condition(condition(draw, earlier_sends, voice_ids), goto) for goto in out[:-1]]
            arms.append(Condition("default", out[-1]))
        elif not linear:
            out = targets[i]
            edges += [Edge(step_id, goto, condition(draw, earlier_sends, voice_ids)) for goto in out[:-1]]
            edges += [Edge(step_id, goto) for goto in out[-1:]]
        built.append(_step(draw, step_id, kind, arms))

    plan = Plan(
        id=plan_id, name="property plan", steps=tuple(built),
        transitions=transition_builders.linear() if linear else transition_builders.explicit(edges),
        exit_conditions=tuple(exit_conditions(draw, send_ids, voice_ids)),
    )  # fmt: skip
    try:
        compiled = compile_plan(plan)
    except PlanValidationError:
        assume(False)
        raise  # unreachable: assume(False) raises
    return compiled.plan


# ---- the world -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """How a channel answers one dispatch: after `delay` ticks, with this status.

    `lost` answers never arrive; `duplicate` ones arrive twice (the second must be ignored);
    `follow_up` is an event the contact causes later, tied to the message by its message id.
    """

    delay: int
    status: str = "delivered"
    error_kind: str | None = None
    outcome: str | None = None
    lost: bool = False
    duplicate: bool = False
    follow_up: str | None = None
    follow_up_delay: int = 0


DELIVERED = Answer(delay=0)


@dataclass(frozen=True)
class World:
    """Answers for the n-th email and the n-th voice dispatch of a run (later ones: delivered),
    and the operator: `retries[n]` is how many ticks after the run's n-th failure someone calls
    `retry_run` (later failures are left alone). Scripted commands alone would rarely find a
    run in `failed`; an operator who reacts is what real deployments have anyway."""

    email: tuple[Answer, ...] = ()
    voice: tuple[Answer, ...] = ()
    retries: tuple[int, ...] = ()

    def answer(self, channel: str, index: int) -> Answer:
        table = self.email if channel == "email" else self.voice
        return table[index] if index < len(table) else DELIVERED


DELAYS = (0, 0, 0, 1, 2, 30, 600, 3600, 20_000)
EMAIL_FAILURES = ("transient", "permanent", "permanent", "rate_limited", "soft_bounce", "hard_bounce", "budget_exhausted")
VOICE_FAILURES = ("transient", "permanent", "permanent", "rate_limited", "budget_exhausted")
# What a delivered call reports; "martian" is no call outcome at all: the step must fail on it.
CALL_OUTCOMES = ("answered", "answered", "voicemail", "no_answer", "busy", "failed", "declined", "martian")
FOLLOW_UPS = (None, None, "email.opened", "email.clicked", "email.replied", "email.bounced")


def _answer(draw: st.DrawFn, channel: str) -> Answer:
    shape = pick(draw, ["delivered", "delivered", "failed", "failed", "lost"])
    if shape == "lost":
        return Answer(delay=0, lost=True)
    delay = pick(draw, DELAYS)
    if shape == "failed":
        kinds = EMAIL_FAILURES if channel == "email" else VOICE_FAILURES
        return Answer(delay, status="failed", error_kind=pick(draw, kinds))
    return Answer(
        delay, outcome=pick(draw, CALL_OUTCOMES) if channel == "voice" else None, duplicate=chance(draw, 3),
        follow_up=pick(draw, FOLLOW_UPS) if channel == "email" else None, follow_up_delay=pick(draw, DELAYS),
    )  # fmt: skip


@st.composite
def worlds(draw: st.DrawFn) -> World:
    email = tuple(_answer(draw, "email") for _ in range(draw(st.integers(0, 6))))
    voice = tuple(_answer(draw, "voice") for _ in range(draw(st.integers(0, 4))))
    retries = tuple(pick(draw, DELAYS) for _ in range(draw(st.integers(0, 3))))
    return World(email, voice, retries)


# ---- runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One run: plan, start input, external inputs (sorted by tick), world, time horizon.

    `late` inputs (sorted by tick) reach the run right after its first `advance` call at or
    after their tick, in a call of their own, stamped with that call's tick: a policy fact that
    comes in after the timers of its tick fired."""

    plan: Plan
    start: Start
    script: tuple[AnyInput, ...]
    world: World
    horizon: int
    tick_interval_ms: int
    late: tuple[AnyInput, ...] = ()

    def env(self) -> KernelEnv:
        return make_env(self.plan, self.tick_interval_ms)


EXTERNAL_KINDS = ("event",) * 6 + ("pause", "resume", "retry") * 2 + ("cancel", "contact", "suppressed")
EVENT_TYPES = (
    "email.opened", "email.opened", "email.clicked", "email.replied", "email.bounced",
    "email.bounced", "email.unsubscribed", "call.completed", "email.delivered",
)  # fmt: skip


def _external(draw: st.DrawFn, tick: int, index: int, plan: Plan) -> AnyInput:
    """One external input at `tick`: an event (tied to a step, to a send step, or to none) or a
    command. Commands are frequent so that pause/resume/retry meet runs in every status; the
    run-ending ones (cancel, suppression, unsubscribe) are rarer so runs usually go further."""
    kind = pick(draw, EXTERNAL_KINDS)
    command_id = f"cmd-{index}"
    if kind == "pause":
        return Pause(tick, command_id=command_id)
    if kind == "resume":
        return Resume(tick, command_id=command_id)
    if kind == "retry":
        return Retry(tick, command_id=command_id)
    if kind == "cancel" and chance(draw, 3):
        return Cancel(tick, reason="operator", command_id=command_id)
    if kind == "suppressed" and chance(draw, 3):
        level = pick(draw, ["global", "channel", "plan", "regulatory"])
        return Suppressed(tick, level=level, reason="complaint")  # type: ignore[arg-type]
    if kind == "contact":
        attributes = pick(draw, [None, {"tier": "gold"}, {"tier": "silver"}, {}])
        return ContactChanged(tick, attributes=dict(attributes) if attributes is not None else None,
                              bounced=pick(draw, [None, None, False, True]))  # fmt: skip
    event_type = pick(draw, EVENT_TYPES)
    if event_type == "email.unsubscribed" and not chance(draw, 3):
        event_type = "email.opened"
    send_ids = [s.id for s in plan.steps if s.type in SENDS]
    step_id = pick(draw, [None, *send_ids, *send_ids, *(s.id for s in plan.steps)])
    data = {"kind": pick(draw, ["soft", "hard", "soft"])} if event_type == "email.bounced" else {}
    return Event(tick, f"ev-{index}", event_type, step_id=step_id, data=data, occurred_at="2024-01-01T00:00:00Z")


def _wait_ticks(plan: Plan, tick_interval_ms: int) -> list[int]:
    return [Duration(**s.params["duration"]).to_ticks(tick_interval_ms) for s in plan.steps if s.type == WAIT]


def interesting_ticks(plan: Plan, tick_interval_ms: int, start_tick: int, horizon: int) -> list[int]:
    """The ticks around which a linear reading of the plan has a timer fire (each, one before
    and one after), within [0, horizon]: inputs drawn there often share a tick with a timer."""
    marks = [0, start_tick]
    for w in _wait_ticks(plan, tick_interval_ms):
        marks.append(marks[-1] + w)
    return sorted({t + d for t in marks for d in (-1, 0, 1) if 0 <= t + d <= horizon})


TICK_INTERVALS = (1000, 1000, 60_000)


@st.composite
def scenarios(
    draw: st.DrawFn, plan: Plan | None = None, run_id: str = "run-1", tick_ms: int | None = None
) -> Scenario:
    """A run of `plan` (drawn when not given) with its external inputs and its world.

    Inputs are spread over the plan's horizon (its waits end to end, plus up to a day for
    retries), half of them on "interesting" ticks where a linear reading of the plan has a
    timer fire, so that inputs often share a tick with a timer.
    """
    if plan is None:
        plan = draw(plans())
    if tick_ms is None:
        tick_ms = pick(draw, TICK_INTERVALS)
    waits = _wait_ticks(plan, tick_ms)
    start_tick = draw(st.integers(0, 5))
    slack = pick(draw, [0, 60, 3600, 86_400]) * 1000 // tick_ms
    horizon = start_tick + sum(waits) + slack + 2
    interesting = interesting_ticks(plan, tick_ms, start_tick, horizon)
    ticks = sorted(
        pick(draw, interesting) if chance(draw, 2) else draw(st.integers(0, horizon))
        for _ in range(draw(st.integers(0, 14)))
    )  # fmt: skip
    script = [_external(draw, t, i, plan) for i, t in enumerate(ticks)]
    for i, inp in enumerate(list(script)):  # most pauses are followed by a resume: a pause window
        if isinstance(inp, Pause) and not chance(draw, 4):
            resume_at = min(horizon, inp.tick + pick(draw, DELAYS))
            script.append(Resume(resume_at, command_id=f"cmd-{i}-resume"))
    script.sort(key=lambda inp: inp.tick)  # stable: same-tick inputs keep their drawn order

    attributes = pick(draw, [{}, {"tier": "gold"}, {"tier": "silver"}, {"tier": "gold", "company": "Acme"}])
    contact = Contact(
        id=f"contact-{run_id}",
        email=None if chance(draw, 10) else f"{run_id}@example.com",
        phone=None if chance(draw, 10) else "+15550100",
        attributes=dict(attributes),
    )  # fmt: skip
    variables: dict[str, Any] = {"product": "DEE"}
    if not chance(draw, 10):
        variables["x"] = draw(st.integers(0, 10))
    start = Start(
        tick=0, run_id=run_id, plan_id=plan.id, plan_version=1, plan_checksum=plan.checksum,
        contact=contact, variables=variables, start_tick=start_tick,
    )  # fmt: skip
    return Scenario(plan, start, tuple(script), draw(worlds()), horizon, tick_ms)


@st.composite
def scenario_pairs(draw: st.DrawFn) -> tuple[Scenario, Scenario]:
    """Two runs of one plan (different run ids, contacts, inputs and worlds)."""
    plan = draw(plans())
    tick_ms = pick(draw, TICK_INTERVALS)
    return draw(scenarios(plan, "run-a", tick_ms)), draw(scenarios(plan, "run-b", tick_ms))


# ---- regressions -----------------------------------------------------------------------------


def retry_after_failing_at_start() -> Scenario:
    """Shrunk by hypothesis from `test_status_machine_follows_the_spec_table` (and the replay
    test): an exit condition that cannot be evaluated (the contact has no `tier`) fails the run
    as it starts, before any step is entered; the contact then gets a tier and the run is
    retried. SPEC 4 allows failed -> active by `retry_run`; the kernel must not raise."""
    plan = compile_plan(Plan(
        id="prop-plan", name="property plan",
        steps=(builders.send_email("email-0", "t_plain", "Hi {{ contact.id }}"), builders.end("end-1", "done")),
        exit_conditions=(ExitCondition('contact.attributes.tier == "platinum"', "exited"),),
    )).plan  # fmt: skip
    contact = Contact("contact-run-1", email="run-1@example.com", phone="+15550100")
    start = Start(0, "run-1", plan.id, 1, plan.checksum, contact, {"product": "DEE", "x": 0}, start_tick=0)
    script = (ContactChanged(0, attributes={"tier": "gold"}), Retry(0, command_id="cmd-1"))
    return Scenario(plan, start, script, World(), horizon=2, tick_interval_ms=1000)
