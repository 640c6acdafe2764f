"""The built-in policy gates: consent and suppression, asked before every send and call.

An ordinary plugin: it uses only `dee.plugin.contracts`, like a third-party gate would, and is
on by default (`[plugins] disabled = ["dee_policy"]` turns it off). Each gate decides from the
request alone, so replay reaches the same verdict; what it used is in the verdict's facts.
"""

from __future__ import annotations

from typing import Any, ClassVar

from dee.plugin import hookimpl
from dee.plugin.contracts import GateRequest, PolicyGate, Verdict


def refusal(action: str, reason: str, **facts: object) -> Verdict:
    """The verdict `action` (`skip`, `pause`, `fail`) with its reason."""
    make = {"skip": Verdict.skip, "pause": Verdict.pause, "fail": Verdict.fail}[action]
    return make(reason, **facts)


class ConsentGate(PolicyGate):
    """A revoked consent refuses every send on its channel from the tick it was recorded; on a
    channel that requires consent (voice, by default), so does a consent that was never given,
    is not yet valid, or has expired."""

    name: ClassVar[str] = "consent"

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
    """A contact suppressed on a channel gets nothing on that channel. (A global, regulatory or
    plan-level suppression cancels the contact's runs when it is recorded, and refuses new
    enrolments; this gate covers the channel level, which stops sends but not runs.)"""

    name: ClassVar[str] = "suppression"

    def __init__(self, on_suppressed: str) -> None:
        self.on_suppressed = on_suppressed

    def check(self, request: GateRequest) -> Verdict:
        if request.channel in request.facts.suppressed_channels:
            return refusal(self.on_suppressed, f"contact suppressed on {request.channel}", channel=request.channel)
        return Verdict.allow(channel=request.channel)


@hookimpl
def dee_policy_gates(config: Any) -> list[PolicyGate]:
    policy = config.policy
    return [ConsentGate(policy.consent_required, policy.on_consent_missing), SuppressionGate(policy.on_suppressed)]
