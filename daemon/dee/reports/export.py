"""`audit.export`: one run's audit log for someone outside the engine (SPEC 8).

JSON is machine-readable and carries the whole chain: every entry with its checksum and
previous checksum, so the receiver can recompute the chain without DEE (the encoding is
documented in `dee.kernel.audit`). PDF is the human report: the run, the chain's status and
the timeline, one line per entry with the start of its checksum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from dee.kernel.audit import AuditEntry, ChainVerification
from dee.kernel.timeline import timeline
from dee.plan.model import Plan
from dee.plan.steps import camel
from dee.records import ExecutionRun
from dee.reports.pdf import text_pdf

FORMAT_VERSION = "dee.audit-export/1"
ExportFormat = Literal["json", "pdf"]


def _camel(fields: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys in camelCase, like the wire format and the entries (values untouched)."""
    return {camel(k): v for k, v in fields.items()}


def export_json(
    run: ExecutionRun, chain: ChainVerification, entries: Sequence[AuditEntry], plan: Plan,
    opened: Sequence[AuditEntry] | None = None,
) -> bytes:  # fmt: skip
    """The run, its chain's verification, every entry as stored (what the checksums cover, its
    contact data sealed), and the plan version it ran (so the run can be replayed from this
    document alone: `Replayer.replay_export`). `opened`: the entries as readers see them; the
    parts that differ (sealed ones, opened or `{"erased": true}`) go under `opened`, by seq."""
    document = {
        "format": FORMAT_VERSION,
        "run": _camel(msgspec.to_builtins(run)),
        "chain": _camel(msgspec.to_builtins(chain)),
        "plan": {**plan.content(), "version": plan.version},
        "entries": msgspec.to_builtins(list(entries)),
    }
    if opened is not None:
        document["opened"] = opened_parts(entries, opened)
    return msgspec.json.format(msgspec.json.encode(document), indent=2)


def _chain_line(chain: ChainVerification) -> str:
    if chain.valid:
        return f"chain: VALID - {chain.entries} entries, ticks {chain.first_tick}..{chain.last_tick}"
    return f"chain: BROKEN at entry {chain.broken_at} of {chain.entries}: {chain.reason}"


def _data(data: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in data.items() if v not in (None, "", [], {}))


def export_pdf(run: ExecutionRun, chain: ChainVerification, entries: Sequence[AuditEntry]) -> bytes:
    lines = [
        f"DEE audit export - run {run.id}",
        "",
        f"plan {run.plan_id} v{run.plan_version}   contact {run.contact_id}",
        f"status {run.status}   outcome {run.outcome or '-'}   steps completed {run.steps_completed}",
        f"start tick {run.start_tick}   current tick {run.current_tick}",
        f"started {run.started_at or '-'}   completed {run.completed_at or '-'}",
        _chain_line(chain),
        "",
        f"{'seq':>4} {'tick':>9}  {'step':<18} {'action':<16} {'outcome':<14} checksum",
    ]
    for entry, line in zip(entries, timeline(entries), strict=True):
        lines.append(f"{entry.seq:>4} {line.tick:>9}  {(line.step or '-')[:18]:<18} {line.action:<16} "
                     f"{(line.outcome or '-')[:14]:<14} {entry.checksum[:16]}")  # fmt: skip
        detail = _data(line.data)
        if detail:
            lines.append(f"{'':>16}{detail}")
        lines.append(f"{'':>16}at {line.timestamp}")
    lines += ["", "Each entry's checksum is SHA-256 over its previous checksum and the canonical JSON of its",
              "fields (sorted keys, compact, UTF-8); the JSON export holds every field to recompute it."]  # fmt: skip
    return text_pdf(lines, f"Audit export {run.id}")


def opened_parts(stored: Sequence[AuditEntry], opened: Sequence[AuditEntry]) -> dict[str, dict[str, Any]]:
    """Seq -> the parts of that entry that readers are shown otherwise than they are stored."""
    parts: dict[str, dict[str, Any]] = {}
    for s, o in zip(stored, opened, strict=True):
        changed = {f: getattr(o, f) for f in ("input", "output", "context") if getattr(o, f) != getattr(s, f)}
        if changed:
            parts[str(s.seq)] = changed
    return parts


def render(
    fmt: ExportFormat, run: ExecutionRun, chain: ChainVerification, entries: Sequence[AuditEntry], plan: Plan,
    opened: Sequence[AuditEntry] | None = None,
) -> bytes:  # fmt: skip
    """The export of `entries` as stored; `opened`, the same entries as readers see them."""
    if fmt == "json":
        return export_json(run, chain, entries, plan, opened)
    if fmt == "pdf":
        return export_pdf(run, chain, entries if opened is None else opened)
    raise ValueError(f"unknown export format {fmt!r}: json or pdf")
