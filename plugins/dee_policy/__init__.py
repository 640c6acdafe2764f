"""The built-in policy gates: consent, suppression, calling hours, send windows and frequency
caps, asked before every send and call.

An ordinary plugin: it uses only `dee.plugin.contracts` (and its `[policy]` section), like a
third-party gate would, and is on by default (`[plugins] disabled = ["dee_policy"]` turns it
off). Each gate decides from the request alone, so replay reaches the same verdict; what it
used is in the verdict's facts. `[policy.plans.<plan id>]` overrides keys for one plan: the
gates are built once per such plan and each request is answered by its plan's gate.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from dee.plugin import hookimpl
from dee.plugin.contracts import GateRequest, PolicyGate, Verdict
from dee_policy.caps import FrequencyCapGate
from dee_policy.hours import Openings, Window, zones_for


def refusal(action: str, reason: str, **facts: object) -> Verdict:
    """The verdict `action` (`skip`, `pause`, `fail`) with its reason."""
    make = {"skip": Verdict.skip, "pause": Verdict.pause, "fail": Verdict.fail}[action]
    return make(reason, **facts)


class ConsentGate(PolicyGate):
    """A revoked consent refuses every send on its channel from the tick it was recorded; on a
    channel that requires consent (voice, by default), so does a consent that was never given,
    is not yet valid, or has expired."""

    name = "consent"

    def __init__(self, required: tuple[str, ...], on_missing: str) -> None:
        self.required = frozenset(required)
        self.on_missing = on_missing

    def check(self, request: GateRequest) -> Verdict:
        channel = request.channel
        consent = request.facts.consents.get(channel)
        facts: dict[str, object] = {"channel": channel, "required": channel in self.required}
        if consent is not None:
            facts.update(consent=consent.status, consentTick=consent.tick, expiresTick=consent.expires_tick)
        if consent is not None and consent.status == "revoked" and consent.tick <= request.tick:
            return refusal(self.on_missing, f"{channel} consent revoked at tick {consent.tick}", **facts)
        if channel in self.required and (consent is None or not consent.granted_at(request.tick)):
            why = "never given" if consent is None else ("expired" if consent.status != "revoked" else "revoked")
            return refusal(self.on_missing, f"{channel} needs granted consent ({why})", **facts)
        return Verdict.allow(**facts)


class SuppressionGate(PolicyGate):
    """A contact suppressed on a channel gets nothing on that channel. (A global or plan-level
    suppression, or a regulatory one without a channel, cancels the contact's runs when it is
    recorded, and refuses new enrolments; this gate covers suppressions naming their channel,
    channel-level or regulatory such as a do-not-call list, which stop sends but not runs.)"""

    name = "suppression"

    def __init__(self, on_suppressed: str) -> None:
        self.on_suppressed = on_suppressed

    def check(self, request: GateRequest) -> Verdict:
        if request.channel in request.facts.suppressed_channels:
            return refusal(self.on_suppressed, f"contact suppressed on {request.channel}", channel=request.channel)
        return Verdict.allow(channel=request.channel)


class CallingHoursGate(PolicyGate):
    """A call rings only while the calling window is open in the contact's local time; before
    or after it, on a day without calls or a public holiday, the call waits for the next opening
    (and the gates are asked again then)."""

    name = "calling-hours"
    channels: ClassVar[frozenset[str]] = frozenset({"voice"})
    label: ClassVar[str] = "calling hours"

    def __init__(self, window: Window, default_timezone: str) -> None:
        self.window = window
        self.default_timezone = default_timezone
        self.openings = Openings(window)

    def check(self, request: GateRequest) -> Verdict:
        if request.channel not in self.channels:
            return Verdict.allow()
        contact = request.contact
        zones = zones_for(contact.timezone, contact.phone, self.default_timezone)
        at, why, opening, wait_s = self.openings.at(request.moment_ms, zones)
        facts = {"zones": list(zones), "at": at}
        if why is None:
            return Verdict.allow(**facts)
        until = request.tick + math.ceil(wait_s * 1000 / request.tick_interval_ms)
        return Verdict.defer(max(until, request.tick + 1), f"{self.label}: {why}", opensAt=opening, **facts)


class SendWindowGate(CallingHoursGate):
    """Quiet hours for email: an email goes out only inside `[policy] send_window` of the
    contact's local day, on `send_days`; otherwise it waits for the next opening. Off unless
    configured."""

    name = "send-window"
    channels: ClassVar[frozenset[str]] = frozenset({"email"})
    label: ClassVar[str] = "send window"


class PlanScoped(PolicyGate):
    """One gate under its name, answered per plan: a plan with overrides gets its own (or none,
    when its overrides turn the gate off), every other plan the default one."""

    def __init__(self, name: str, default: PolicyGate | None, by_plan: dict[str, PolicyGate | None]) -> None:
        self.name = name
        self.default = default
        self.by_plan = by_plan
        self.history_ms = max((g.history_ms for g in (default, *by_plan.values()) if g is not None), default=0)

    def check(self, request: GateRequest) -> Verdict:
        gate = self.by_plan.get(request.plan_id, self.default)
        return Verdict.allow() if gate is None else gate.check(request)


def gates_of(config: Any, policy: Any) -> dict[str, PolicyGate]:
    """The gates one policy (the deployment's, or a plan's) asks for, by name, in order."""
    gates: list[PolicyGate] = [ConsentGate(policy.consent_required, policy.on_consent_missing),
                               SuppressionGate(policy.on_suppressed)]  # fmt: skip
    if policy.calling_hours:
        start, end = config.channels.voice.calling_hours
        gates.append(CallingHoursGate(Window(start, end, policy.calling_days, policy.holidays), policy.default_timezone))
    if policy.send_window:
        start, end = policy.send_window
        gates.append(SendWindowGate(Window(start, end, policy.send_days, policy.holidays), policy.default_timezone))
    if policy.caps:
        gates.append(FrequencyCapGate(policy.frequency_caps(), policy.on_capped, policy.default_timezone))
    return {gate.name: gate for gate in gates}


@hookimpl
def dee_policy_gates(config: Any) -> list[PolicyGate]:
    policy = config.policy
    default = gates_of(config, policy)
    if not policy.plans:
        return list(default.values())
    by_plan = {plan_id: gates_of(config, policy.for_plan(plan_id)) for plan_id in sorted(policy.plans)}
    names = list(default) + sorted({n for gates in by_plan.values() for n in gates} - set(default))
    return [PlanScoped(name, default.get(name), {p: gates.get(name) for p, gates in by_plan.items()}) for name in names]
