"""The hostile wire corpus (issue 12): what a publisher with write access to the inbound streams
could XADD, generated deterministically from a seed, with what the daemon must make of each entry.

Every hostile entry belongs to a class and is refused at one of four stages, which decides the
trace it must leave in its partition's dead-letter stream:

- `decode`: not a valid message (not JSON, wrong types, missing or unknown fields, an unknown
  kind, a NUL, a replyTo outside the deployment's reply streams): the entry itself is
  dead-lettered, with its stream entry id;
- `intake`: a valid message refused when it is taken in (wrong partition, an unsigned channel
  result, a reused commandId, a taken runId, an unknown run or plan, ...): a refusal record
  carrying the message as decoded, and an error reply when it names one of our reply streams;
- `kernel`: a command its run refuses (resuming a run that is not paused): the same, the
  refusal record carrying the error reply;
- `commit`: a valid message whose values PostgreSQL cannot store (a commandId too large for an
  index, an integer out of range, nesting deeper than the decoder goes): dead-lettered with its
  entry id once the worker retried the batch entry by entry.

The valid traffic between them (executes and events of a plan that waits for 30 days) must be
applied once each. A pair of executes sharing a fresh runId, published to two partitions at
once (`RacePair`), must end as one run and one refusal.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from dee.bus import messages as wire
from dee.routing import partition_for

SEED = 20_261_212
PLAN_ID = "hostile-hold"
Stage = Literal["decode", "intake", "kernel", "commit"]
Fields = dict[bytes, bytes]

# how many entries of each class, in the order of the printed table
COUNTS: dict[str, int] = {
    "not-json": 900, "bad-encoding": 400, "wrong-type": 900, "missing-field": 800, "unknown-field": 700,
    "unknown-kind": 700, "bad-literal": 400, "bad-run-id": 500, "no-m-field": 300, "nul": 500,
    "reply-outside": 800, "wrong-partition": 1000, "unsigned-result": 500, "commandid-reuse": 500,
    "runid-taken": 300, "runid-race": 48, "unknown-run": 400, "unknown-plan": 300, "start-in-past": 100,
    "invalid-suppress": 160, "already-enrolled": 200, "invalid-transition": 224, "storage-limits": 96,
}  # fmt: skip
VALID_EXECUTES_PER_PARTITION = 15
VALID_EVENTS_PER_PARTITION = 10
LATE_EVENTS_PER_PARTITION = 2  # between the storage-limit entries
RESENT = 80  # wrong-partition executes published again to the right stream (they must be applied)


@dataclass(eq=False)  # compared by identity
class Hostile:
    klass: str
    partition: int  # the inbound stream it is XADDed to
    fields: Fields
    stage: Stage
    reason: str  # what its dead letter's reason must contain
    detail: str = ""  # and this too
    reply_to: str | None = None  # one of our reply streams it names: an error reply is due there (intake, kernel)
    error_type: str | None = None  # that reply's errorType
    command_id: str | None = None
    digest: bytes | None = None  # intake: the digest of the message as decoded (how its refusal record is found)
    entry_id: bytes | None = None  # set once published


@dataclass(eq=False)
class Valid:
    kind: Literal["execute", "event"]
    partition: int
    message: dict[str, Any]
    reply_to: str
    run_id: str  # the run it enrols, or the run the event is for
    entry_id: bytes | None = None

    @property
    def command_id(self) -> str:
        return str(self.message["commandId"])

    @property
    def contact_id(self) -> str:
        return str(self.message["contact"]["id"] if self.kind == "execute" else self.message["contactId"])

    @property
    def fields(self) -> Fields:
        return m(self.message)


@dataclass(eq=False)
class RacePair:
    """Two executes for contacts of two partitions with one fresh runId, published together."""

    run_id: str
    members: list[tuple[int, dict[str, Any]]]  # (partition, message)
    reply_to: str
    entry_ids: list[bytes] = field(default_factory=list)


Item = Hostile | Valid | tuple[RacePair, int]  # a race pair's member, by index


def m(message: Any) -> Fields:
    return {b"m": json.dumps(message).encode()}


def msgpack(value: Any) -> bytes:
    """Just enough MessagePack (small maps, strings, small ints, lists, None, bools) to spell a message in it."""
    if value is None:
        return b"\xc0"
    if isinstance(value, bool):
        return b"\xc3" if value else b"\xc2"
    if isinstance(value, int):
        return bytes([value]) if 0 <= value < 128 else b"\xd3" + value.to_bytes(8, "big", signed=True)
    if isinstance(value, str):
        raw = value.encode()
        return (bytes([0xA0 | len(raw)]) if len(raw) < 32 else b"\xd9" + bytes([len(raw)])) + raw
    if isinstance(value, list):
        return bytes([0x90 | len(value)]) + b"".join(msgpack(v) for v in value)
    assert isinstance(value, dict) and len(value) < 16
    return bytes([0x80 | len(value)]) + b"".join(msgpack(k) + msgpack(v) for k, v in value.items())


class Contacts:
    """Fresh contact ids by partition (each handed out once)."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.n = 0

    def fresh(self, partition: int, tag: str) -> str:
        while True:
            self.n += 1
            cid = f"hc-{tag}-{self.n}"
            if partition_for(cid, self.partitions) == partition:
                return cid


def contact(cid: str) -> dict[str, Any]:
    return {"id": cid, "email": f"{cid}@acme.test", "attributes": {"first_name": "Ada", "company": "Acme"}}


class Corpus:
    """The whole corpus for one deployment: three phases of items, in publishing order."""

    def __init__(self, namespace: str, partitions: int, seed: int = SEED) -> None:
        self.ns = namespace
        self.partitions = partitions
        self.rng = random.Random(seed)
        self.contacts = Contacts(partitions)
        self.reply_prefix = f"{namespace}:reply:"
        self.valid_reply = f"{namespace}:reply:valid"
        # what looks like another deployment's reply stream (the test puts entries there): never written
        self.foreign_ns = f"dee_e2e_{hashlib.sha256(namespace.encode()).hexdigest()[:12]}"
        self.foreign_reply = f"{self.foreign_ns}:reply:victim"
        self.hostile: list[Hostile] = []
        self.valid: list[Valid] = []
        self.races: list[RacePair] = []
        self.counter = 0
        self.executes: dict[int, list[Valid]] = {p: [] for p in range(partitions)}
        self.events: dict[int, list[Valid]] = {p: [] for p in range(partitions)}
        self.phases: list[list[Item]] = [[], [], []]
        self.after: dict[int, Valid] = {}  # id(a reuse of a commandId on its victim's stream) -> the victim
        self._build()

    # ---- helpers ------------------------------------------------------------------------------
    def reply(self, klass: str) -> str:
        return f"{self.reply_prefix}hostile-{klass}"

    def cmd(self, klass: str) -> str:
        self.counter += 1
        return f"h-{klass}-{self.counter}"

    def other(self, p: int) -> int:
        return (p + 1 + self.rng.randrange(self.partitions - 1)) % self.partitions

    def execute(self, cid: str, command_id: str, run_id: str | None = None, **extra: Any) -> dict[str, Any]:
        self.counter += 1
        return {
            "type": "execute", "commandId": command_id, "runId": run_id or f"hr-{self.counter}", "planId": PLAN_ID,
            "planVersion": 1, "contact": contact(cid), "variables": {"product": "DEE"}, **extra,
        }  # fmt: skip

    def any_run(self, p: int | None = None) -> Valid:
        return self.rng.choice(self.executes[self.rng.randrange(self.partitions) if p is None else p])

    def started_run(self, p: int) -> Valid:
        return self.rng.choice([e for e in self.executes[p] if not e.message.get("startAt")])

    def add(
        self, klass: str, p: int, fields: Fields, stage: Stage, reason: str, *, detail: str = "", reply_to: str | None = None,
        error_type: str | None = None, command_id: str | None = None, phase: int = 0,
    ) -> Hostile:  # fmt: skip
        digest = wire.digest(wire.decode(fields[b"m"])) if stage == "intake" else None
        h = Hostile(klass, p, fields, stage, reason, detail, reply_to, error_type, command_id, digest)
        self.hostile.append(h)
        self.phases[phase].append(h)
        return h

    def refused(
        self, klass: str, p: int, message: dict[str, Any], reason: str, error_type: str, phase: int, stage: Stage = "intake"
    ) -> Hostile:
        """A valid message refused at intake (or by its run); half of them name one of our reply streams."""
        if self.rng.random() < 0.5:
            message = {**message, "replyTo": self.reply(klass)}
        return self.add(klass, p, m(message), stage, reason, reply_to=message.get("replyTo"), error_type=error_type,
                        command_id=message["commandId"], phase=phase)  # fmt: skip

    def undecodable(self, klass: str, p: int, fields: Fields, reason: str, detail: str = "", command_id: str | None = None) -> None:
        self.add(klass, p, fields, "decode", reason, detail=detail, command_id=command_id)

    # ---- the corpus ---------------------------------------------------------------------------
    def _build(self) -> None:
        self._valid_traffic()
        builders: dict[str, Callable[[int], None]] = {
            "not-json": self._not_json, "bad-encoding": self._bad_encoding, "wrong-type": self._wrong_type,
            "missing-field": self._missing_field, "unknown-field": self._unknown_field, "unknown-kind": self._unknown_kind,
            "bad-literal": self._bad_literal, "bad-run-id": self._bad_run_id, "no-m-field": self._no_m_field,
            "nul": self._nul, "reply-outside": self._reply_outside, "wrong-partition": self._wrong_partition,
            "unsigned-result": self._unsigned_result, "commandid-reuse": self._commandid_reuse,
            "runid-taken": self._runid_taken, "runid-race": self._runid_race, "unknown-run": self._unknown_run,
            "unknown-plan": self._unknown_plan, "start-in-past": self._start_in_past,
            "invalid-suppress": self._invalid_suppress, "already-enrolled": self._already_enrolled,
            "invalid-transition": self._invalid_transition, "storage-limits": self._storage_limits,
        }  # fmt: skip
        assert list(builders) == list(COUNTS)
        for klass, build in builders.items():
            for i in range(COUNTS[klass]):
                build(i)
        digests = [h.digest for h in self.hostile if h.digest is not None]
        assert len(set(digests)) == len(digests), "two intake-stage entries with one content: their refusals would be confused"
        self._interleave()

    def _valid_traffic(self) -> None:
        for p in range(self.partitions):
            for i in range(VALID_EXECUTES_PER_PARTITION):
                extra: dict[str, Any] = {"replyTo": self.valid_reply}
                if i % 5 == 1:
                    extra["idempotencyKey"] = f"valid-key-{p}-{i}"
                if i % 5 == 2:
                    extra["startAt"] = 3_600  # later on the manual clock (never reached here): a pending run
                run_id = f"hc-run-{p:02d}-{i:02d}"
                message = self.execute(self.contacts.fresh(p, "valid"), f"valid-x-{p}-{i}", run_id, **extra)
                v = Valid("execute", p, message, self.valid_reply, run_id)
                self.executes[p].append(v)
                self.valid.append(v)
        for p in range(self.partitions):
            for i in range(VALID_EVENTS_PER_PARTITION + LATE_EVENTS_PER_PARTITION):
                target = self.executes[p][i % VALID_EXECUTES_PER_PARTITION]
                if target.message.get("startAt"):
                    target = self.executes[p][0]
                event: dict[str, Any] = {
                    "type": "event", "commandId": f"valid-e-{p}-{i}", "replyTo": self.valid_reply,
                    "eventType": self.rng.choice(["email.opened", "email.clicked"]), "contactId": target.contact_id,
                    "data": {"n": i}, "stepId": "hold",
                }  # fmt: skip
                if i % 2:
                    event["runId"] = target.run_id
                v = Valid("event", p, event, self.valid_reply, target.run_id)
                self.events[p].append(v)
                self.valid.append(v)

    def _sample_message(self, p: int, command_id: str) -> dict[str, Any]:
        """A valid message of some kind for partition p (for the decode-stage classes to spoil)."""
        run = self.any_run(p)
        cid = run.contact_id
        kinds: list[dict[str, Any]] = [
            self.execute(self.contacts.fresh(p, "spoilt"), command_id),
            {"type": "event", "commandId": command_id, "eventType": "email.replied", "contactId": cid, "runId": run.run_id},
            {"type": "pause", "commandId": command_id, "runId": run.run_id},
            {"type": "cancel", "commandId": command_id, "runId": run.run_id, "reason": "hostile"},
            {"type": "suppress", "commandId": command_id, "contactId": cid, "level": "global", "reason": "r", "source": "s"},
            {"type": "consent", "commandId": command_id, "contactId": cid, "channel": "email", "status": "revoked", "source": "s"},
            {"type": "executeBatch", "commandId": command_id, "planId": PLAN_ID, "planVersion": 1,
             "items": [{"runId": f"hb-{command_id}", "contact": contact(self.contacts.fresh(p, "spoilt"))}]},
        ]  # fmt: skip
        message = self.rng.choice(kinds)
        if self.rng.random() < 0.5:
            message["replyTo"] = self.valid_reply  # a valid replyTo does not make a broken message valid
        return message

    # ---- decode stage -------------------------------------------------------------------------
    def _not_json(self, i: int) -> None:
        p = i % self.partitions
        c = self.cmd("not-json")
        good = json.dumps(self._sample_message(p, c)).encode()
        variants: list[bytes] = [
            b"\xff" + self.rng.randbytes(self.rng.randint(0, 300)),
            msgpack({"type": "pause", "commandId": c, "runId": self.any_run(p).run_id}),
            good[: self.rng.randint(1, len(good) - 1)],
            good + self.rng.choice([b" }", b"x", b",{}", b'\n{"type":"wake"}']),
            b"",
            good.replace(b'"', b"'"),
            good.replace(b'"commandId"', b"commandId"),
            good.replace(b'"type"', b'"t": NaN, "type"', 1),
            gzip.compress(good, mtime=0),
            b"{" * self.rng.randint(1, 50),
            good.replace(b":", b"=", 1),
            good.replace(c.encode(), c.encode() + b"\x01"),  # a raw control character in a string
        ]
        self.undecodable("not-json", p, {b"m": variants[i % len(variants)]}, "DecodeError")

    def _bad_encoding(self, i: int) -> None:
        p = i % self.partitions
        c = self.cmd("bad-encoding")
        good = json.dumps(self._sample_message(p, c)).encode()
        at = good.index(c.encode()) + len(c)
        junk = [b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\xff", b"\x80", b"\\ud800", b"\\udfff\\ud800"]
        if i % 10 == 9:
            raw = b"\xef\xbb\xbf" + good  # a byte-order mark
        elif i % 10 == 8:
            raw = good.decode().encode("utf-16")
        else:
            raw = good[:at] + junk[i % len(junk)] + good[at:]
        self.undecodable("bad-encoding", p, {b"m": raw}, "DecodeError")

    def _wrong_type(self, i: int) -> None:
        p = i % self.partitions
        c = self.cmd("wrong-type")
        run = self.any_run(p)
        cid = run.contact_id
        execute = self.execute(self.contacts.fresh(p, "wt"), c)
        if i % 4 == 0:
            top: list[Any] = [[1, 2, 3], "execute", 42, None, True, [execute]]
            self.undecodable("wrong-type", p, m(top[(i // 4) % len(top)]), "ValidationError: Expected `object`")
            return
        event = {"type": "event", "commandId": c, "contactId": cid, "eventType": "email.opened"}
        consent = {"type": "consent", "commandId": c, "contactId": cid, "channel": "email", "status": "granted", "source": "s"}
        spoil: list[tuple[dict[str, Any], str, Any]] = [
            (execute, "planVersion", "1"), (execute, "contact", cid), (execute, "runId", 12345), (execute, "commandId", 7),
            (execute, "replyTo", 5), (execute, "variables", ["product"]), (execute, "startAt", 1.5), (execute, "planId", None),
            (execute, "idempotencyKey", {"k": 1}), (event, "data", [1]), (event, "eventType", 3), (event, "contactId", ["x"]),
            ({"type": "pause", "commandId": c, "runId": run.run_id}, "runId", None),
            ({"type": "cancel", "commandId": c, "runId": run.run_id}, "reason", 0),
            (consent, "evidence", "yes"), (consent, "expiresTick", "soon"),
            ({"type": "executeBatch", "commandId": c, "planId": PLAN_ID, "planVersion": 1, "items": []}, "items", {"a": 1}),
            ({"type": "replayVerdict", "commandId": c, "runId": run.run_id, "identical": True}, "identical", "yes"),
            ({"type": "result", "commandId": c, "runId": run.run_id, "idempotencyKey": "k", "status": "delivered"}, "attempt", "1"),
        ]  # fmt: skip
        base, name, value = spoil[i % len(spoil)]
        message = {**base, name: value}
        if name != "replyTo" and self.rng.random() < 0.5:
            message["replyTo"] = self.reply("wrong-type")
        self.undecodable("wrong-type", p, m(message), "ValidationError: Expected", f"at `$.{name}`", c)

    def _missing_field(self, i: int) -> None:
        p = i % self.partitions
        c = self.cmd("missing-field")
        message = self._sample_message(p, c)
        required = {
            "execute": ["commandId", "runId", "planId", "planVersion", "contact"], "event": ["commandId", "eventType", "contactId"],
            "pause": ["commandId", "runId"], "cancel": ["commandId", "runId"], "executeBatch": ["items", "planId", "planVersion"],
            "suppress": ["contactId", "level", "reason", "source"], "consent": ["contactId", "channel", "status", "source"],
        }  # fmt: skip
        names = required[message["type"]]
        name = names[i % len(names)]
        if message["type"] == "execute" and i % 3 == 0:  # the contact's id instead
            del message["contact"]["id"]
            name = "id"
        else:
            del message[name]
        self.undecodable("missing-field", p, m(message), "ValidationError: Object missing required field", f"`{name}`")

    def _unknown_field(self, i: int) -> None:
        p = i % self.partitions
        message = self._sample_message(p, self.cmd("unknown-field"))
        name = self.rng.choice(["evil", "reply_to", "command_id", "__proto__", "$where", "Type", "partition", "signature"])
        if message["type"] == "execute" and i % 2:
            message["contact"][name] = True
            detail = f"`{name}` - at `$.contact`"
        elif message["type"] == "executeBatch" and i % 2:
            message["items"][0][name] = 1
            detail = f"`{name}` - at `$.items[0]`"
        else:
            message[name] = {"x": 1}
            detail = f"`{name}`"
        self.undecodable("unknown-field", p, m(message), "ValidationError: Object contains unknown field", detail)

    def _unknown_kind(self, i: int) -> None:
        p = i % self.partitions
        message = self._sample_message(p, self.cmd("unknown-kind"))
        kinds = ["explode", "Execute", "", "EXECUTE", "execute ", "registerPlan", "plan", "deletePlan", "flush", "reply",
                 "dispatch", "batch", "executebatch", "replay", "events"]  # fmt: skip
        n = i % (len(kinds) + 3)
        if n < len(kinds):
            message["type"] = kinds[n]
            detail = f"Invalid value '{kinds[n]}' - at `$.type`"
        elif n == len(kinds):
            del message["type"]
            detail = "Object missing required field `type`"
        else:
            message["type"] = [None, 1][n - len(kinds) - 1]
            detail = "Expected `str`"
        self.undecodable("unknown-kind", p, m(message), "ValidationError", detail)

    def _bad_literal(self, i: int) -> None:
        p = i % self.partitions
        c = self.cmd("bad-literal")
        run = self.any_run(p)
        suppress = {"type": "suppress", "commandId": c, "contactId": run.contact_id, "reason": "r", "source": "s"}
        result = {"type": "result", "commandId": c, "runId": run.run_id, "idempotencyKey": "k", "attempt": 1}
        choices: list[tuple[dict[str, Any], str, str]] = [
            (suppress, "level", "galactic"), (suppress, "level", "GLOBAL"),
            ({"type": "consent", "commandId": c, "contactId": run.contact_id, "channel": "email", "source": "s"}, "status", "maybe"),
            (result, "status", "sent"), ({**result, "status": "failed"}, "errorKind", "fatal"),
        ]  # fmt: skip
        base, name, value = choices[i % len(choices)]
        self.undecodable("bad-literal", p, m({**base, name: value}), "ValidationError: Invalid enum value",
                         f"'{value}' - at `$.{name}`")  # fmt: skip

    def _bad_run_id(self, i: int) -> None:
        p = i % self.partitions
        c = self.cmd("bad-run-id")
        bad = ["a b", ".hidden", "", "x" * 65, "../../etc", "r/1", "ünïcode", "a\nb", "run:1", "<script>", "r" * 100_000, "-é"]
        run_id = bad[i % len(bad)]
        fresh = self.contacts.fresh(p, "rid")
        if i % 3 == 0:
            message: dict[str, Any] = {"type": "executeBatch", "commandId": c, "planId": PLAN_ID, "planVersion": 1,
                                       "items": [{"runId": run_id, "contact": contact(fresh)}]}  # fmt: skip
            where = "`$.items[0].runId`"
        else:
            message = {**self.execute(fresh, c), "runId": run_id}
            where = "`$.runId`"
        self.undecodable("bad-run-id", p, m(message), "ValidationError: Expected `str` matching regex", f"- at {where}")

    def _no_m_field(self, i: int) -> None:
        p = i % self.partitions
        body = json.dumps(self._sample_message(p, self.cmd("no-m-field"))).encode()
        names = [b"M", b"m ", b"msg", b"message", b"data", b"\x00m", b"mm", b" m"]
        fields: Fields = {names[i % len(names)]: body}
        if i % 4 == 0:
            fields[b"other"] = b"1"
        self.undecodable("no-m-field", p, fields, "ValueError: entry has no 'm' field")

    def _nul(self, i: int) -> None:
        p = i % self.partitions
        c = self.cmd("nul")
        run = self.any_run(p)
        cid = run.contact_id
        nul = "a\u0000b"
        event = {"type": "event", "commandId": c, "contactId": cid, "eventType": "email.opened"}
        messages: list[dict[str, Any]] = [
            {**event, "eventType": nul}, {**event, "data": {"note": nul}}, {**event, "runId": run.run_id, "stepId": nul},
            {**event, "commandId": c + nul}, {**event, "messageId": nul}, {**event, "occurredAt": nul},
            {"type": "cancel", "commandId": c, "runId": run.run_id, "reason": nul},
            {"type": "consent", "commandId": c, "contactId": cid, "channel": "email", "status": "granted", "source": nul},
            self.execute(self.contacts.fresh(p, "nul"), c, variables={"product": nul}),
            {**self.execute(self.contacts.fresh(p, "nul"), c), "contact": {**contact(cid + "x"), "attributes": {nul: 1}}},
            {"type": "suppress", "commandId": c, "contactId": cid, "level": "global", "reason": "\u0000", "source": "s"},
        ]  # fmt: skip
        message = messages[i % len(messages)]
        if i % 2:
            message["replyTo"] = self.reply("nul")
        raw = json.dumps(message).encode()
        if i % 7 == 3:  # behind an escaped backslash, the escape still is a NUL
            raw = raw.replace(b"\\u0000", b"\\\\\\u0000", 1)
        self.undecodable("nul", p, {b"m": raw}, "ValueError: strings may not contain NUL")

    def _reply_outside(self, i: int) -> None:
        """Messages otherwise valid (enrolments, events for live runs, suppressions of enrolled
        contacts) whose replyTo is not one of the deployment's reply streams."""
        p = i % self.partitions
        c = self.cmd("reply-outside")
        targets = [
            self.foreign_reply, "dee:reply:victim", f"{self.ns}x:reply:a", self.ns, self.reply_prefix, self.reply_prefix[:-1],
            f"{self.ns}:{{{p}}}:in", f"{self.ns}:{{{p}}}:dead", f"{self.ns}:dispatch:email", "", " ", f" {self.reply_prefix}x",
            f"{self.ns.upper()}:reply:x", "canary:string", f"{self.ns}:REPLY:x", f"{self.ns}::reply:x", "dee:{0}:in",
            f"{self.foreign_ns}:{{{p}}}:in",
        ]  # fmt: skip
        run = self.any_run(p)
        cid = run.contact_id
        messages: list[dict[str, Any]] = [
            self.execute(self.contacts.fresh(p, "ro"), c),
            {"type": "event", "commandId": c, "contactId": cid, "eventType": "email.replied", "runId": run.run_id},
            {"type": "suppress", "commandId": c, "contactId": cid, "level": "global", "reason": "r", "source": "s"},
            {"type": "cancel", "commandId": c, "runId": run.run_id, "reason": "hostile"},
            {"type": "consent", "commandId": c, "contactId": cid, "channel": "email", "status": "revoked", "source": "s"},
        ]  # fmt: skip
        message = {**messages[i % len(messages)], "replyTo": targets[(i // len(messages)) % len(targets)]}
        self.undecodable("reply-outside", p, m(message), f"ValueError: replyTo must be a stream under {self.reply_prefix}", "", c)

    # ---- intake stage -------------------------------------------------------------------------
    def _wrong_partition(self, i: int) -> None:
        p = i % self.partitions  # the contact's own partition
        q = self.other(p)  # the stream it is sent to
        c = self.cmd("wrong-partition")
        run = self.any_run(p)
        cid = run.contact_id
        message: dict[str, Any]
        if i < 2 * RESENT:  # executes of fresh contacts: those with a replyTo are published again, rightly
            fresh = self.contacts.fresh(p, "wp")
            message = self.execute(fresh, c)
            if i % 2 == 0:
                message["replyTo"] = self.reply("wrong-partition")
            misrouted = fresh
        else:
            own = self.contacts.fresh(q, "wpb")
            kinds: list[dict[str, Any]] = [
                {"type": "event", "commandId": c, "contactId": cid, "eventType": "email.replied", "runId": run.run_id},
                {"type": "event", "commandId": c, "contactId": cid, "eventType": "email.unsubscribed"},
                {"type": "suppress", "commandId": c, "contactId": cid, "level": "global", "reason": "r", "source": "s"},
                {"type": "consent", "commandId": c, "contactId": cid, "channel": "email", "status": "revoked", "source": "s"},
                {"type": "executeBatch", "commandId": c, "planId": PLAN_ID, "planVersion": 1,
                 "items": [{"runId": f"hwb-{c}-0", "contact": contact(own)}, {"runId": f"hwb-{c}-1", "contact": contact(cid)}]},
                self.execute(cid, c),
            ]  # fmt: skip
            message = kinds[i % len(kinds)]
            if self.rng.random() < 0.5:
                message["replyTo"] = self.reply("wrong-partition")
            misrouted = cid
        reason = f"wrong partition: contact {misrouted!r} belongs to partition {p}, not {q}"
        h = self.add("wrong-partition", q, m(message), "intake", reason, reply_to=message.get("replyTo"),
                     error_type="MessageRefused", command_id=c)  # fmt: skip
        if i < 2 * RESENT and h.reply_to is not None:  # the same command, to the right stream, later: applied
            v = Valid("execute", p, message, h.reply_to, message["runId"])
            self.valid.append(v)
            self.phases[1].append(v)

    def _unsigned_result(self, i: int) -> None:
        p = i % self.partitions
        c = self.cmd("unsigned-result")
        run_id = self.started_run(p).run_id if i % 3 else f"nope-{i}"
        result: dict[str, Any] = {
            "type": "result", "commandId": c, "runId": run_id, "idempotencyKey": f"{run_id}:hold:1", "attempt": 1,
            "status": self.rng.choice(["delivered", "failed"]), "outcome": "delivered",
        }  # fmt: skip
        forged = [
            "", self.rng.randbytes(32).hex(), "0" * 64, "A" * 64, "x",
            hmac.new(self.rng.randbytes(32), json.dumps(result).encode(), hashlib.sha256).hexdigest(),
            hmac.new(b"", json.dumps(result).encode(), hashlib.sha256).hexdigest(),
        ]  # fmt: skip
        signature = forged[i % len(forged)]
        if signature:
            result["signature"] = signature
        self.refused("unsigned-result", p, result, "a channel result not signed by a dispatcher of this deployment",
                     "MessageRefused", phase=1)  # fmt: skip

    def _commandid_reuse(self, i: int) -> None:
        """The commandId of a valid command with other content: on the victim's stream after it
        (executes in phase 1, events in phase 2), or on another partition's stream (phase 2)."""
        p = i % self.partitions
        shape = i % 4
        victim = self.rng.choice(self.events[p][:VALID_EVENTS_PER_PARTITION] if shape == 3 else self.executes[p])
        q = self.other(p) if shape == 2 else p
        c = victim.command_id
        run = self.started_run(q)
        kinds: list[dict[str, Any]] = [
            self.execute(self.contacts.fresh(q, "reuse"), c),
            {"type": "event", "commandId": c, "contactId": run.contact_id, "eventType": "email.replied", "runId": run.run_id,
             "data": {"i": i}},
            {"type": "consent", "commandId": c, "contactId": self.contacts.fresh(q, "reuse"), "channel": "sms",
             "status": "granted", "source": f"s{i}"},
            {"type": "suppress", "commandId": c, "contactId": run.contact_id, "level": "global", "reason": f"r{i}", "source": "s"},
            {"type": "cancel", "commandId": c, "runId": run.run_id, "reason": f"r{i}"},
        ]  # fmt: skip
        if q == p:  # the victim itself, changed a little
            changed = {"data": {"n": -1 - i}} if victim.kind == "event" else {"variables": {"product": f"DEE {i}"}}
            kinds.append({**{k: v for k, v in victim.message.items() if k != "replyTo"}, **changed})
        message = kinds[(i // 4) % len(kinds)]
        h = self.refused("commandid-reuse", q, message, f"CommandIdReusedError: commandId {c} reused with different content",
                         "CommandIdReusedError", phase=0 if shape in (0, 1) else 1)  # fmt: skip
        if q == p:
            self.after[id(h)] = victim

    def _runid_taken(self, i: int) -> None:
        p = i % self.partitions
        c = self.cmd("runid-taken")
        taken = self.any_run(p if i % 2 else None).run_id
        fresh = self.contacts.fresh(p, "taken")
        message: dict[str, Any]
        if i % 5 == 4:
            items = [{"runId": f"hrt-{c}", "contact": contact(fresh)}, {"runId": taken, "contact": contact(self.contacts.fresh(p, "t"))}]
            message = {"type": "executeBatch", "commandId": c, "planId": PLAN_ID, "planVersion": 1, "items": items}
        elif i % 5 == 3:  # one fresh runId twice in one batch
            taken = f"hrd-{c}"
            items = [{"runId": taken, "contact": contact(fresh)}, {"runId": taken, "contact": contact(self.contacts.fresh(p, "t"))}]
            message = {"type": "executeBatch", "commandId": c, "planId": PLAN_ID, "planVersion": 1, "items": items}
        else:
            message = self.execute(fresh, c, taken)
        self.refused("runid-taken", p, message, f"RunIdInUseError: runId {taken} is already in use by another run",
                     "RunIdInUseError", phase=1)  # fmt: skip

    def _runid_race(self, i: int) -> None:
        p = i % self.partitions
        q = self.other(p)
        run_id = f"hrace-{i}"
        reply_to = self.reply("runid-race")
        members = [(part, {**self.execute(self.contacts.fresh(part, "race"), f"h-race-{i}-{part}", run_id), "replyTo": reply_to})
                   for part in (p, q)]  # fmt: skip
        pair = RacePair(run_id, members, reply_to)
        self.races.append(pair)
        self.phases[1] += [(pair, 0), (pair, 1)]

    def _unknown_run(self, i: int) -> None:
        p = i % self.partitions
        c = self.cmd("unknown-run")
        run_id = self.any_run(self.other(p)).run_id if i % 2 else f"ghost-{i}"  # another partition's run, or none
        kinds: list[dict[str, Any]] = [
            {"type": "pause", "commandId": c, "runId": run_id}, {"type": "resume", "commandId": c, "runId": run_id},
            {"type": "cancel", "commandId": c, "runId": run_id, "reason": "hostile"}, {"type": "retry", "commandId": c, "runId": run_id},
            {"type": "replayVerdict", "commandId": c, "runId": run_id, "identical": False, "fields": ["forged"]},
            {"type": "event", "commandId": c, "contactId": self.any_run(p).contact_id, "eventType": "email.replied", "runId": run_id},
        ]  # fmt: skip
        self.refused("unknown-run", p, kinds[(i // 2) % len(kinds)], f"RunNotFoundError: run {run_id} not found",
                     "RunNotFoundError", phase=1)  # fmt: skip

    def _unknown_plan(self, i: int) -> None:
        p = i % self.partitions
        plans = [("no-such-plan", 1), (PLAN_ID.upper(), 1), (PLAN_ID + " ", 1), ("", 1), (PLAN_ID, 0), (PLAN_ID, -1),
                 (PLAN_ID, 2), (PLAN_ID, 99), (PLAN_ID, 2**31 - 1), ("../plans/hostile-hold", 1)]  # fmt: skip
        plan_id, version = plans[i % len(plans)]
        message = {**self.execute(self.contacts.fresh(p, "plan"), self.cmd("unknown-plan")), "planId": plan_id, "planVersion": version}
        self.refused("unknown-plan", p, message, f"UnknownPlanError: plan {plan_id} v{version} is not registered",
                     "UnknownPlanError", phase=self.rng.randrange(2))  # fmt: skip

    def _start_in_past(self, i: int) -> None:
        p = i % self.partitions
        start = [-1, -3_600, -(2**62)][i % 3]
        message = self.execute(self.contacts.fresh(p, "past"), self.cmd("start-in-past"), startAt=start)
        self.refused("start-in-past", p, message, f"StartInPastError: start_at tick {start} is before the current tick 0",
                     "StartInPastError", phase=self.rng.randrange(2))  # fmt: skip

    def _invalid_suppress(self, i: int) -> None:
        p = i % self.partitions
        level = ["plan", "channel"][i % 2]
        message: dict[str, Any] = {"type": "suppress", "commandId": self.cmd("invalid-suppress"), "contactId": self.any_run(p).contact_id,
                                   "level": level, "reason": "hostile", "source": "s"}  # fmt: skip
        if i % 4 >= 2:  # an explicit null is as good as nothing
            message["planId" if level == "plan" else "channel"] = None
        why = "a plan-level suppression needs a planId" if level == "plan" else "a channel-level suppression needs a channel"
        self.refused("invalid-suppress", p, message, f"DeeError: {why}", "DeeError", phase=self.rng.randrange(2))

    def _already_enrolled(self, i: int) -> None:
        p = i % self.partitions
        run = self.executes[p][i // self.partitions % VALID_EXECUTES_PER_PARTITION]
        message = self.execute(run.contact_id, self.cmd("already-enrolled"))
        self.refused("already-enrolled", p, message,
                     f"AlreadyEnrolledError: contact {run.contact_id} is already enrolled in {PLAN_ID} (run {run.run_id})",
                     "AlreadyEnrolledError", phase=1)  # fmt: skip

    # ---- kernel stage -------------------------------------------------------------------------
    def _invalid_transition(self, i: int) -> None:
        p = i % self.partitions
        run = self.started_run(p)
        kind, why = [("resume", "only a paused run can be resumed"), ("retry", "only a failed run can be retried")][i % 2]
        message = {"type": kind, "commandId": self.cmd("invalid-transition"), "runId": run.run_id}
        self.refused("invalid-transition", p, message,
                     f"InvalidTransitionError: run {run.run_id}: cannot go from waiting to active: {why}",
                     "InvalidTransitionError", phase=1, stage="kernel")  # fmt: skip

    # ---- commit stage -------------------------------------------------------------------------
    def _storage_limits(self, i: int) -> None:
        p = i % self.partitions
        n = (i + i // self.partitions) % 7
        c = self.cmd("storage-limits")
        cid = self.started_run(p).contact_id
        big = self.rng.randbytes(40_000).hex()  # 80 KB that does not compress: no index takes it
        if n == 6:  # a contact id too large to index, sent to its own partition
            huge = f"hc-huge-{big}"
            p = partition_for(huge, self.partitions)
            message = self.execute(huge, c)
        else:
            message = [
                {"type": "event", "commandId": c + big, "contactId": cid, "eventType": "email.opened"},
                self.execute(self.contacts.fresh(p, "big"), c, planVersion=2**31),
                self.execute(self.contacts.fresh(p, "big"), c, startAt=2**63),
                {"type": "consent", "commandId": c, "contactId": cid, "channel": "email", "status": "granted",
                 "source": "s", "expiresTick": 2**63 + i},
                self.execute(self.contacts.fresh(p, "big"), c, idempotencyKey=big),
                {"type": "event", "commandId": c, "contactId": cid, "eventType": "email.opened", "data": {"deep": "DEEP"}},
            ][n]  # fmt: skip
        if self.rng.random() < 0.5:
            message["replyTo"] = self.reply("storage-limits")
        raw = json.dumps(message).encode()
        if n == 5:
            raw = raw.replace(b'"DEEP"', b"[" * 20_000 + b"]" * 20_000)
        detail = ["ProgramLimitExceededError", "out of int32 range", "int64 range", "int64 range", "ProgramLimitExceededError",
                  "RecursionError", "ProgramLimitExceededError"][n]  # fmt: skip
        if n == 5:  # nested too deep to decode: refused as it is read, before anything is claimed
            self.add("storage-limits", p, {b"m": raw}, "decode", "RecursionError: ", detail="recursion depth",
                     command_id=message["commandId"], phase=2)  # fmt: skip
            return
        self.add("storage-limits", p, {b"m": raw}, "commit", "refused at commit: ", detail=detail,
                 reply_to=message.get("replyTo"), command_id=message["commandId"], phase=2)  # fmt: skip

    # ---- order --------------------------------------------------------------------------------
    def _interleave(self) -> None:
        """Phase 1: the valid executes among the hostile entries (a commandId reused on its
        victim's stream after the victim); phase 2: the resent commands, the events, what needs
        runs to exist; phase 3: the entries that fail at commit, between a few valid events."""
        executes = [v for p in range(self.partitions) for v in self.executes[p]]
        events = [v for p in range(self.partitions) for v in self.events[p][:VALID_EVENTS_PER_PARTITION]]
        late = [v for p in range(self.partitions) for v in self.events[p][VALID_EVENTS_PER_PARTITION:]]
        for phase, valid in ((0, executes), (1, events), (2, late)):
            singles: list[Item] = [item for item in self.phases[phase] if not isinstance(item, tuple)]
            self.rng.shuffle(singles)
            for v in valid:
                singles.insert(self.rng.randrange(len(singles) + 1), v)
            reuses = [item for item in singles if isinstance(item, Hostile) and id(item) in self.after]
            for item in reuses:  # each after its victim (else it would be the victim)
                victim = self.after[id(item)]
                if singles.index(item) < singles.index(victim):
                    singles.remove(item)
                    singles.insert(singles.index(victim) + 1 + self.rng.randrange(3), item)
            for pair in [item for item in self.phases[phase] if isinstance(item, tuple) and item[1] == 0]:
                at = self.rng.randrange(len(singles) + 1)  # the two members side by side: published at once
                singles[at:at] = [pair, (pair[0], 1)]
            self.phases[phase] = singles
