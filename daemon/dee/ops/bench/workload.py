"""Workload outreach-v2: what `dee bench` runs, fixed so figures compare across versions.

N contacts, contact i is `contact-{i:07d}`, all enrolled at tick 0 into
`config/plans/sales-outreach-v2.yaml`. What each contact does is decided by i alone:

- `i % 10 == 0` replies to initial-email (path `replied-first`);
- `i % 10` in {1, 2, 3} opens initial-email without replying (warm), and among those
  `i % 7 == 0` replies to warm-follow-up (`warm-replied`), the others do not (`warm-no-reply`);
- everyone else never reacts (`cold`).

Each reaction arrives `REACTION_DELAY_TICKS` after the email it answers, inside the wait that
follows it. The plan's exit condition `events.hasReply(any)` ends a run as soon as a reply
arrives (SPEC 4: exit conditions are checked whenever a run is touched), so a replied run
stops in the wait it was in rather than walking its branch to `end-replied`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

PLAN_FILE = "plans/sales-outreach-v2.yaml"
VARIABLES = {"product": "DEE"}
REACTION_DELAY_TICKS = 3_600  # an hour at the default 1 s tick
FIRST_WAIT_TICKS = 3 * 86_400  # wait-1: initial-email to the first follow-up
HORIZON_TICKS = 10 * 86_400  # every path ends within 9 days

# The plan nodes each path enters, in order ("a step transition is a run entering a node").
PATHS: dict[str, tuple[str, ...]] = {
    "replied-first": ("initial-email", "wait-1"),
    "warm-replied": ("initial-email", "wait-1", "check-email-1", "warm-follow-up", "wait-2"),
    "warm-no-reply": ("initial-email", "wait-1", "check-email-1", "warm-follow-up", "wait-2", "check-email-2",
                      "call-attempt", "wait-4", "breakup-email", "end-no-reply"),
    "cold": ("initial-email", "wait-1", "check-email-1", "cold-follow-up", "wait-3", "call-attempt", "wait-4",
             "breakup-email", "end-no-reply"),
}  # fmt: skip
OUTCOMES = {"replied-first": "replied", "warm-replied": "replied", "warm-no-reply": "no_response", "cold": "no_response"}
SENDS = {"replied-first": 1, "warm-replied": 2, "warm-no-reply": 4, "cold": 4}


def contact_id(i: int) -> str:
    return f"contact-{i:07d}"


def contact(i: int) -> dict[str, Any]:
    cid = contact_id(i)
    return {"id": cid, "email": f"{cid}@example.com", "phone": f"+1555{i:07d}",
            "attributes": {"company": f"Company {i % 97}", "first_name": f"Pat{i}"}}  # fmt: skip


def path_of(i: int) -> str:
    if i % 10 == 0:
        return "replied-first"
    if i % 10 in (1, 2, 3):
        return "warm-replied" if i % 7 == 0 else "warm-no-reply"
    return "cold"


@dataclass(frozen=True)
class Reaction:
    contact: int
    event_type: str
    step_id: str


def first_reactions(contacts: int) -> list[Reaction]:
    """Reactions to initial-email: the replies of `replied-first` and the opens of the warm."""
    out = []
    for i in range(contacts):
        if i % 10 == 0:
            out.append(Reaction(i, "email.replied", "initial-email"))
        elif i % 10 in (1, 2, 3):
            out.append(Reaction(i, "email.opened", "initial-email"))
    return out


def second_reactions(contacts: int) -> list[Reaction]:
    """Replies to warm-follow-up."""
    return [Reaction(i, "email.replied", "warm-follow-up") for i in range(contacts) if path_of(i) == "warm-replied"]


@dataclass(frozen=True)
class Expected:
    """What a correct engine produces for N contacts."""

    paths: Counter[str]
    outcomes: Counter[str]
    transitions: int
    sends: int


def expected(contacts: int) -> Expected:
    paths = Counter(path_of(i) for i in range(contacts))
    outcomes: Counter[str] = Counter()
    for path, count in paths.items():
        outcomes[OUTCOMES[path]] += count
    return Expected(
        paths=paths, outcomes=outcomes,
        transitions=sum(len(PATHS[p]) * n for p, n in paths.items()),
        sends=sum(SENDS[p] * n for p, n in paths.items()),
    )  # fmt: skip
