"""Policy gates: what the kernel asks before every step that acts on a channel.

A gate decides from a `GateRequest` alone: the run, the step and its channel, the tick, the
contact, and the contact's policy facts (its consents and channel suppressions) as of that
tick. The facts reach a run as journaled inputs (with its `Start`, then `PolicyChanged`), so
replay hands a gate the same request and gets the same verdict. Gates run inside the pure
kernel: no clock, no I/O, no randomness, nothing but the request and the gate's own
configuration.

Every gate is asked; the strictest verdict wins (fail, then pause, then skip, then defer, then
allow; of two deferrals the later one). A gate that raises, or returns something that is not a
`Verdict`, fails the step: a broken gate never lets a send through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from dee.kernel.contact import Contact

VerdictKind = Literal["allow", "defer", "skip", "pause", "fail"]
_SEVERITY: dict[str, int] = {"allow": 0, "defer": 1, "skip": 2, "pause": 3, "fail": 4}


class Consent(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """The latest consent record of a contact for one channel."""

    status: Literal["granted", "revoked", "expired"]
    tick: int
    expires_tick: int | None = None
    source: str = ""

    def granted_at(self, tick: int) -> bool:
        return self.status == "granted" and self.tick <= tick and (self.expires_tick is None or tick < self.expires_tick)


class SentMark(msgspec.Struct, frozen=True, array_like=True):
    """One message a run of the contact handed out (a retry resends the same message, under the
    same `message_id`, and is not another mark)."""

    tick: int
    channel: str
    message_id: str
    plan_id: str


class PolicyFacts(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """What the gates know of a contact beyond the contact itself, kept in the contact's partition."""

    consents: dict[str, Consent] = {}  # channel -> its latest record
    suppressed_channels: tuple[str, ...] = ()  # channel-level suppressions, sorted
    # the messages every run of the contact sent within the horizon some gate reads back
    # (`PolicyGate.history_ms`), ordered by tick then message id; empty when no gate reads it
    sends: tuple[SentMark, ...] = ()

    def noting(self, marks: Sequence[SentMark], since_tick: int) -> PolicyFacts:
        """These facts with `marks` added (a message already noted is not noted twice) and every
        mark before `since_tick` dropped."""
        known = {m.message_id for m in self.sends}
        merged = [m for m in (*self.sends, *(m for m in marks if m.message_id not in known)) if m.tick >= since_tick]
        merged.sort(key=lambda m: (m.tick, m.message_id))
        return msgspec.structs.replace(self, sends=tuple(merged))


class GateRequest(msgspec.Struct, frozen=True):
    """What a gate decides from."""

    run_id: str
    plan_id: str
    step_id: str
    step_type: str
    channel: str
    tick: int
    attempt: int  # 1 for the first send of the step, more for a retry
    contact: Contact
    facts: PolicyFacts
    tick_interval_ms: int
    epoch_ms: int = 0  # the deployment's tick 0 (Unix ms): `moment_ms` is when the send would happen
    message_id: str = ""  # the message this send is (the same for every retry of it)

    @property
    def moment_ms(self) -> int:
        return self.epoch_ms + self.tick * self.tick_interval_ms


class Verdict(msgspec.Struct, frozen=True, omit_defaults=True):
    """A gate's answer. Make one with `Verdict.allow()`, `defer(until_tick, reason)`,
    `skip(reason)`, `pause(reason)` or `fail(reason)`; `facts` names what the decision used
    (it is journaled with the decision)."""

    verdict: VerdictKind
    reason: str = ""
    until_tick: int | None = None
    facts: dict[str, Any] = {}

    @classmethod
    def allow(cls, **facts: Any) -> Verdict:
        return cls("allow", facts=facts)

    @classmethod
    def defer(cls, until_tick: int, reason: str, **facts: Any) -> Verdict:
        return cls("defer", reason, until_tick, facts)

    @classmethod
    def skip(cls, reason: str, **facts: Any) -> Verdict:
        return cls("skip", reason, facts=facts)

    @classmethod
    def pause(cls, reason: str, **facts: Any) -> Verdict:
        return cls("pause", reason, facts=facts)

    @classmethod
    def fail(cls, reason: str, **facts: Any) -> Verdict:
        return cls("fail", reason, facts=facts)


class PolicyGate:
    """A policy gate. Subclass, set `name`, override `check`.

    `check(request)` runs inside the kernel before every send or call, retries included, and
    must be deterministic: decide from the request and the gate's own configuration only.

    A gate that counts what the contact was sent sets `history_ms`: how far back it reads
    `request.facts.sends`. The engine keeps (and journals) a contact's sends across all its
    runs that far back, exactly: runs of one contact sending in the same tick see each other's
    sends. With no such gate, nothing is kept.
    """

    name: str  # a class attribute, or set per instance when one class serves under several names
    history_ms: int = 0

    def check(self, request: GateRequest) -> Verdict:
        raise TypeError(f"policy gate {self.name} does not implement check")  # asked anyway: the send fails closed


class Decision(msgspec.Struct, frozen=True):
    """The verdict of every gate for one send, and the one that stands."""

    final: Verdict
    by_gate: list[tuple[str, Verdict]]

    def record(self) -> dict[str, Any]:
        """The `policy.evaluated` entry's output."""
        final = self.final
        out: dict[str, Any] = {"verdict": final.verdict, "reason": final.reason}
        if final.until_tick is not None:
            out["untilTick"] = final.until_tick
        out["gates"] = [{"gate": name, **msgspec.to_builtins(v)} for name, v in self.by_gate]
        return out


def decide(gates: Sequence[PolicyGate], request: GateRequest) -> Decision:
    """Ask every gate (in order); the strictest verdict stands, a deferral never into the past."""
    by_gate: list[tuple[str, Verdict]] = []
    for gate in gates:
        name = getattr(gate, "name", type(gate).__name__)
        try:
            answer: object = gate.check(request)
            if not isinstance(answer, Verdict):
                answer = Verdict.fail(f"gate {name} returned {type(answer).__name__}, not a Verdict")
            verdict = answer
            msgspec.to_builtins(verdict.facts)  # journaled: facts a gate cannot state in JSON fail here
            if verdict.verdict not in _SEVERITY:
                verdict = Verdict.fail(f"gate {name} answered {verdict.verdict!r}, not a verdict")
            elif verdict.verdict == "defer" and (verdict.until_tick is None or verdict.until_tick <= request.tick):
                verdict = Verdict.fail(f"gate {name} deferred to tick {verdict.until_tick}, not after {request.tick}")
        except Exception as exc:  # fail closed: a gate that cannot decide lets nothing through
            verdict = Verdict.fail(f"gate {name} raised {type(exc).__name__}: {exc}")
        by_gate.append((name, verdict))
    final = Verdict.allow()
    for _, verdict in by_gate:
        if _SEVERITY[verdict.verdict] > _SEVERITY[final.verdict] or (
            verdict.verdict == final.verdict == "defer" and (verdict.until_tick or 0) > (final.until_tick or 0)
        ):
            final = verdict
    return Decision(final, by_gate)
