"""Policy gates at their edges: how verdicts combine, a gate that breaks fails closed, and the
built-in consent and suppression gates at the tick of a revocation, of an expiry, and on a
channel that requires consent."""

from __future__ import annotations

from typing import Any

import pytest

from dee import EngineConfig
from dee.config import PolicyConfig
from dee.kernel.contact import Contact
from dee.kernel.policy import Consent, GateRequest, PolicyFacts, PolicyGate, Verdict, decide
from dee_policy import ConsentGate, SuppressionGate, dee_policy_gates


def request(channel: str = "email", tick: int = 100, facts: PolicyFacts | None = None) -> GateRequest:
    return GateRequest("r1", "p1", "s1", "sendEmail", channel, tick, 1, Contact("c1"), facts or PolicyFacts(), 1000)


class Fixed(PolicyGate):
    name = "fixed"

    def __init__(self, answer: Any, name: str = "fixed") -> None:
        self.answer, self.name = answer, name  # type: ignore[misc]

    def check(self, request: GateRequest) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_the_strictest_verdict_stands_and_every_gate_is_recorded() -> None:
    gates = [Fixed(Verdict.allow(), "a"), Fixed(Verdict.defer(300, "later"), "b"), Fixed(Verdict.defer(200, "soon"), "c")]
    decision = decide(gates, request())
    assert (decision.final.verdict, decision.final.until_tick) == ("defer", 300)  # of two deferrals, the later
    assert [name for name, _ in decision.by_gate] == ["a", "b", "c"]
    order = [Verdict.allow(), Verdict.defer(200, "d"), Verdict.skip("s"), Verdict.pause("p"), Verdict.fail("f")]
    for i, stronger in enumerate(order):
        for weaker in order[:i]:
            assert decide([Fixed(weaker, "w"), Fixed(stronger, "s")], request()).final == stronger
            assert decide([Fixed(stronger, "s"), Fixed(weaker, "w")], request()).final == stronger
    assert decide([], request()).final == Verdict.allow()


@pytest.mark.parametrize(("answer", "says"), [
    (RuntimeError("database down"), "gate broken raised RuntimeError: database down"),
    (True, "gate broken returned bool, not a Verdict"),
    (Verdict("maybe"), "gate broken answered 'maybe', not a verdict"),  # type: ignore[arg-type]
    (Verdict.defer(100, "now"), "gate broken deferred to tick 100, not after 100"),
    (Verdict("defer", "no tick"), "gate broken deferred to tick None, not after 100"),
    (Verdict.allow(seen=object()), "gate broken raised TypeError"),  # facts must be JSON
])  # fmt: skip
def test_a_broken_gate_fails_the_send(answer: Any, says: str) -> None:
    decision = decide([Fixed(Verdict.allow(), "fine"), Fixed(answer, "broken")], request())
    assert decision.final.verdict == "fail" and decision.final.reason.startswith(says)
    assert decision.record()["gates"][0] == {"gate": "fine", "verdict": "allow"}


def consent(status: str, tick: int, expires: int | None = None) -> PolicyFacts:
    return PolicyFacts({"email": Consent(status, tick, expires), "voice": Consent(status, tick, expires)})  # type: ignore[arg-type]


def test_a_revocation_refuses_from_its_own_tick_on_any_channel() -> None:
    gate = ConsentGate((), "skip")
    assert gate.check(request(tick=99, facts=consent("revoked", 100))).verdict == "allow"  # recorded later
    refused = gate.check(request(tick=100, facts=consent("revoked", 100)))
    assert (refused.verdict, refused.reason) == ("skip", "email consent revoked at tick 100")
    assert refused.facts == {"channel": "email", "required": False, "consent": "revoked", "consentTick": 100, "expiresTick": None}
    assert gate.check(request(facts=consent("expired", 0))).verdict == "allow"  # not required: only a revocation refuses


def test_a_channel_that_requires_consent_needs_it_granted_and_unexpired() -> None:
    gate = ConsentGate(("voice",), "pause")
    call = lambda tick, facts=None: gate.check(request("voice", tick, facts))
    assert (call(100).verdict, call(100).reason) == ("pause", "voice needs granted consent (never given)")
    assert call(100, consent("granted", 100)).verdict == "allow"
    assert call(99, consent("granted", 100)).reason == "voice needs granted consent (expired)"  # not yet valid
    assert call(199, consent("granted", 100, expires=200)).verdict == "allow"  # its last valid tick
    assert call(200, consent("granted", 100, expires=200)).verdict == "pause"  # expired at its expiry tick
    assert call(100, consent("expired", 50)).reason == "voice needs granted consent (expired)"
    assert gate.check(request("email", 100)).verdict == "allow"  # email needs none here


def test_a_channel_suppression_refuses_only_its_channel() -> None:
    gate = SuppressionGate("fail")
    facts = PolicyFacts(suppressed_channels=("voice",))
    assert gate.check(request("voice", facts=facts)) == Verdict.fail("contact suppressed on voice", channel="voice")
    assert gate.check(request("email", facts=facts)).verdict == "allow"


def test_the_builtin_gates_follow_the_policy_configuration() -> None:
    config = EngineConfig(policy=PolicyConfig(consent_required=("voice",), on_consent_missing="fail", on_suppressed="pause"))
    consent_gate, suppression_gate, _ = dee_policy_gates(config)
    assert (consent_gate.name, suppression_gate.name) == ("consent", "suppression")
    assert consent_gate.check(request("voice")).verdict == "fail"
    assert suppression_gate.check(request("sms", facts=PolicyFacts(suppressed_channels=("sms",)))).verdict == "pause"
