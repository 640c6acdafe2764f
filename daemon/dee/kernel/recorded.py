"""Whole step contexts, folded back from the audit log's records of them.

A `step.entered` entry records only what its step saw that the run's log did not hold yet: the
results and visible events since the previous record (`resultsFrom` and `eventsFrom` say how
many came before) and the contact when it changed since; the variables and the first contact
are in `run.started`. So a run's audit grows linearly in its steps, where a whole context in
every entry grew with the square of the run's length (and copied a large contact attribute
into every step). Logs written before this recorded the whole context in each entry (those
records have `variables`); both read back the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from dee.kernel.replay import EntryLike


class RecordedEntry(EntryLike, Protocol):
    @property
    def context(self) -> dict[str, Any] | None: ...


def entered_contexts(entries: Iterable[RecordedEntry]) -> Iterator[tuple[RecordedEntry, dict[str, Any]]]:
    """Each `step.entered` entry of one run's log (in log order) with the whole context its
    step saw: `tick`, `contact`, `variables`, `events` and `results`."""
    contact: Any = None
    variables: Any = {}
    results: list[Any] = []
    events: list[Any] = []
    for entry in entries:
        if entry.action == "run.started" and entry.input is not None:
            contact, variables = entry.input.get("contact"), entry.input.get("variables", {})
            continue
        record = entry.context
        if entry.action != "step.entered" or record is None:
            continue
        if "resultsFrom" in record:
            results = [*results[: record["resultsFrom"]], *record["results"]]
            events = [*events[: record["eventsFrom"]], *record["events"]]
            contact = record.get("contact", contact)
        else:  # a whole context
            contact, variables = record["contact"], record["variables"]
            results, events = list(record["results"]), list(record["events"])
        yield entry, {"tick": record["tick"], "contact": contact, "variables": variables, "events": events, "results": results}
