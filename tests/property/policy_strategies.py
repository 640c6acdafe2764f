"""Hypothesis strategies for the policy gates' properties: random `[policy]` sections, contacts
in real time zones (or known only by a phone number), deployment epochs near DST changes and
public holidays, and the contact's policy facts, at enrolment and changing mid-run.

A `PolicyScenario` is a `Scenario` of `strategies` (plan, start, script, world) whose run the
built-in gates (`dee_policy`) judge under its `config`, with an env built as the shell builds
it (`dee.shell.envs.kernel_env`). Facts reach the run as `PolicyChanged` (consents and channel
suppressions, replaced) and `SendsNoted` (messages of the contact's other runs) inputs: most in
the first call of their tick, where they are in force from that tick; some as `late` inputs,
in a call of their own after the tick's first one (its timers have fired by then).

Facts are stamped from tick 1 on: the Start is accepted at tick 0, and a fact stamped with the
Start's own tick counts as late for the kernel even before the run's first timer fired.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import msgspec
from hypothesis import strategies as st
from strategies import Scenario, chance, compile_plan, interesting_ticks, new_templates, pick, plugins, scenarios

from dee.config import ChannelsConfig, EngineConfig, PolicyConfig, SchedulerConfig, VoiceChannelConfig
from dee.kernel.contact import Contact
from dee.kernel.inputs import AnyInput, PolicyChanged, SendsNoted
from dee.kernel.machine import KernelEnv
from dee.kernel.policy import Consent, PolicyFacts, SentMark
from dee.shell.envs import kernel_env

CHANNELS = ("email", "voice")
ZONES = (
    "Asia/Tokyo", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu",
    "Pacific/Chatham", "UTC", "America/St_Johns",
)  # fmt: skip
# Numbers of contacts without a zone: one zone (New York, Tokyo, Berlin, Kathmandu), several
# (New Zealand with the Chatham Islands, Halifax and St John's, Alaska, eight Australian zones
# with Lord Howe and Eucla), none (a number of no region, not a number at all: the default zone)
PHONES = (
    "+12125550100", "+819012345678", "+4930123456", "+97714123456", "+6421234567", "+17095550100",
    "+19075550100", "+61412345678", "+15550100", "call me",
)  # fmt: skip
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Windows of every kind: the default, office hours, nearly all day, narrow ones, and some on
# the hours DST changes skip or repeat (02:00-03:00 in Europe and North America, 02:00-02:30
# on Lord Howe, 02:45-03:45 on the Chatham Islands)
WINDOWS = (
    ("08:00", "21:00"), ("08:00", "21:00"), ("09:00", "17:00"), ("00:00", "23:59"), ("02:00", "02:45"),
    ("02:30", "05:00"), ("01:00", "03:00"), ("02:45", "03:30"), ("12:00", "12:30"), ("20:00", "23:30"),
)  # fmt: skip
HOLIDAYS = (None, None, None, "US", "DE", "DE-BY", "JP", "NZ", "AU", "US-CA", "GB")
CAPS = (
    "email 2/day", "voice 1/day", "email 3/7d", "email 1/week", "email 2/week", "voice 2/24h", "email 1/90m",
    "voice 1/week", "email 1/day",
)  # fmt: skip
REFUSALS = ("skip", "skip", "skip", "pause", "fail")
# Days (UTC) of DST changes in the zones above and of public holidays: epochs a few days before
# them put the run's ticks across them
DST_DAYS = (
    date(2024, 3, 10), date(2024, 3, 31), date(2024, 4, 7), date(2024, 9, 29), date(2024, 10, 6),
    date(2024, 10, 27), date(2024, 11, 3), date(2025, 3, 9), date(2025, 4, 6),
)  # fmt: skip
HOLIDAY_DAYS = (date(2024, 12, 25), date(2025, 1, 1), date(2024, 7, 4), date(2025, 1, 6), date(2025, 4, 29))
DAY_MS = 86_400_000
AGO_MS = (0, 1000, 60_000, 3_600_000, 86_399_000, DAY_MS, 3 * DAY_MS, 6 * DAY_MS)


@dataclass(frozen=True, kw_only=True)
class PolicyScenario(Scenario):
    """A run judged by the built-in policy gates under `config` (its `[policy]`, the calling
    window of `[channels.voice]`, the tick length of `[scheduler]`)."""

    config: EngineConfig

    def env(self) -> KernelEnv:
        """A fresh env with fresh gates, built the way the shell builds it."""
        gates = plugins().policy_gates(self.config).values()
        return kernel_env(self.config, compile_plan(self.plan), new_templates(), gates)


# ---- configuration ---------------------------------------------------------------------------


def _window(draw: st.DrawFn) -> tuple[str, str]:
    if not chance(draw, 3):
        return pick(draw, WINDOWS)
    start = draw(st.integers(0, 23 * 60 + 58))
    end = draw(st.integers(start + 1, 23 * 60 + 59))
    return f"{start // 60:02d}:{start % 60:02d}", f"{end // 60:02d}:{end % 60:02d}"


def _days(draw: st.DrawFn) -> list[str]:
    shape = pick(draw, ["all", "all", "weekdays", "weekend", "some"])
    if shape == "all":
        return list(WEEKDAYS)
    if shape != "some":
        return list(WEEKDAYS[:5] if shape == "weekdays" else WEEKDAYS[5:])
    bits = draw(st.integers(1, 127))
    return [day for i, day in enumerate(WEEKDAYS) if bits >> i & 1]


def _caps(draw: st.DrawFn) -> list[str]:
    return list(dict.fromkeys(pick(draw, CAPS) for _ in range(draw(st.integers(0, 3)))))


def _override(draw: st.DrawFn) -> dict[str, Any]:
    """Some keys of `[policy]` for one plan."""
    makers: dict[str, Callable[[], Any]] = {
        "calling_hours": lambda: chance(draw, 2), "calling_days": lambda: _days(draw), "caps": lambda: _caps(draw),
        "on_capped": lambda: pick(draw, ["defer", "skip"]), "send_window": lambda: list(_window(draw)),
        "consent_required": lambda: pick(draw, [[], ["voice"], ["email", "voice"]]),
    }  # fmt: skip
    return {key: make() for key, make in makers.items() if chance(draw, 3)}


@st.composite
def engine_configs(draw: st.DrawFn, tick_ms: int) -> EngineConfig:
    """A deployment's configuration as far as the gates read it."""
    plans: dict[str, dict[str, Any]] = {}
    if chance(draw, 4):
        plans[pick(draw, ["prop-plan", "other-plan"])] = _override(draw)
    policy = PolicyConfig(
        consent_required=pick(draw, [("voice",), ("voice",), (), ("email", "voice"), ("email",)]),
        on_consent_missing=pick(draw, REFUSALS), on_suppressed=pick(draw, REFUSALS),  # type: ignore[arg-type]
        calling_hours=not chance(draw, 4), calling_days=tuple(_days(draw)), holidays=pick(draw, HOLIDAYS),
        default_timezone=pick(draw, ZONES),
        send_window=_window(draw) if chance(draw, 2) else None, send_days=tuple(_days(draw)),
        caps=tuple(_caps(draw)), on_capped=pick(draw, ["defer", "defer", "skip"]),
        plans=plans,
    )  # fmt: skip
    voice = VoiceChannelConfig(calling_hours=_window(draw))
    return EngineConfig(scheduler=SchedulerConfig(tick_interval_ms=tick_ms), channels=ChannelsConfig(voice=voice), policy=policy)


def _epoch(draw: st.DrawFn) -> int:
    """The deployment's tick 0 (Unix ms): mostly a few days before a DST change or a holiday,
    at an odd minute and millisecond; otherwise anywhere in 2000-2035."""
    shape = pick(draw, ["dst", "dst", "holiday", "anywhere"])
    if shape == "anywhere":
        return draw(st.integers(946_684_800_000, 2_051_222_400_000))
    day = pick(draw, DST_DAYS if shape == "dst" else HOLIDAY_DAYS)
    midnight = (day - date(1970, 1, 1)).days * DAY_MS
    return midnight + draw(st.integers(-3 * 1440, 1440)) * 60_000 + pick(draw, [0, 0, 1, 500, 59_999])


def _contact(draw: st.DrawFn, base: Contact) -> Contact:
    shape = pick(draw, ["zone", "zone", "phone", "phone", "nothing"])
    if shape == "zone":
        return msgspec.structs.replace(base, timezone=pick(draw, ZONES), phone=pick(draw, [base.phone, *PHONES]))
    if shape == "phone":
        return msgspec.structs.replace(base, timezone=None, phone=pick(draw, PHONES))
    return msgspec.structs.replace(base, timezone=None, phone=None)


# ---- facts -----------------------------------------------------------------------------------


def _tick(draw: st.DrawFn, near: list[int], horizon: int, low: int = 1) -> int:
    """A tick in [low, horizon], half the time one near a timer or another input."""
    candidates = [t for t in near if low <= t <= horizon]
    return pick(draw, candidates) if candidates and chance(draw, 2) else draw(st.integers(low, max(low, horizon)))


def _moment(draw: st.DrawFn, near: list[int], horizon: int, hot: list[int]) -> int:
    """When a consent was recorded or expires: half the time one of the `hot` ticks (the tick
    the record reaches the run, the ticks around the run's first step), else any."""
    return pick(draw, hot) if chance(draw, 2) else _tick(draw, near, horizon, low=-horizon)


def _consent(draw: st.DrawFn, near: list[int], horizon: int, hot: list[int]) -> Consent:
    status = pick(draw, ["granted", "granted", "granted", "granted", "revoked", "expired"])
    tick = _moment(draw, near, horizon, hot)
    expires = None if chance(draw, 2) else max(tick + 1, _moment(draw, near, horizon, hot))
    return Consent(status, tick, expires, source="property")  # type: ignore[arg-type]


def _marks(draw: st.DrawFn, tick: int, tick_ms: int, label: str) -> tuple[SentMark, ...]:
    """Up to three messages of the contact's other runs, sent at or before `tick`."""
    marks = [
        SentMark(tick - pick(draw, AGO_MS) // tick_ms, pick(draw, CHANNELS), f"{label}-{i}", "other-plan")
        for i in range(draw(st.integers(1, 3)))
    ]  # fmt: skip
    return tuple(sorted(marks, key=lambda m: (m.tick, m.message_id)))


def _facts(draw: st.DrawFn, near: list[int], horizon: int, hot: list[int]) -> PolicyFacts:
    consents = {channel: _consent(draw, near, horizon, hot) for channel in CHANNELS if not chance(draw, 4)}
    suppressed = tuple(channel for channel in CHANNELS if chance(draw, 5))
    return PolicyFacts(consents, suppressed)


def _fact_input(draw: st.DrawFn, index: int, near: list[int], horizon: int, hot: list[int], tick_ms: int) -> AnyInput:
    tick = _tick(draw, near, horizon, low=0)  # from the enrolment's tick: in force ahead of its first timer
    if chance(draw, 3):
        return SendsNoted(tick, _marks(draw, tick, tick_ms, f"noted-{index}"))
    facts = _facts(draw, near, horizon, [tick, tick, tick + 1, *hot])
    if chance(draw, 5):  # a change carries sends too: the run keeps the ones it noted instead
        facts = msgspec.structs.replace(facts, sends=_marks(draw, tick, tick_ms, f"ignored-{index}"))
    return PolicyChanged(tick, facts)


# ---- scenarios -------------------------------------------------------------------------------

EXTRA_DAYS = (0, 1, 3, 8)  # beyond the plan's horizon: deferrals and caps reach days ahead


@st.composite
def policy_scenarios(draw: st.DrawFn) -> PolicyScenario:
    """A scenario of `strategies.scenarios` with a policy, a contact with a zone (or a phone
    number only), an epoch, facts at enrolment and facts changing mid-run."""
    base = draw(scenarios())
    tick_ms = base.tick_interval_ms
    horizon = base.horizon + pick(draw, EXTRA_DAYS) * DAY_MS // tick_ms
    config = draw(engine_configs(tick_ms))
    near = sorted({*interesting_ticks(base.plan, tick_ms, base.start.start_tick, horizon), *(i.tick for i in base.script)})
    first_step = [base.start.start_tick + d for d in (-1, 0, 1)]
    facts = _facts(draw, near, horizon, [0, *first_step])
    if chance(draw, 2):
        facts = msgspec.structs.replace(facts, sends=_marks(draw, 0, tick_ms, "prior"))
    start = msgspec.structs.replace(base.start, contact=_contact(draw, base.start.contact), facts=facts, epoch_ms=_epoch(draw))
    script, late = list(base.script), list[AnyInput]()
    for index in range(draw(st.integers(0, 6))):
        fact = _fact_input(draw, index, near, horizon, first_step, tick_ms)
        (late if chance(draw, 3) else script).append(fact)
    return PolicyScenario(
        plan=base.plan, start=start, script=tuple(sorted(script, key=lambda i: i.tick)), world=base.world,
        horizon=horizon, tick_interval_ms=tick_ms, late=tuple(sorted(late, key=lambda i: i.tick)), config=config,
    )  # fmt: skip
