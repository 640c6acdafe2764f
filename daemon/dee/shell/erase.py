"""Erasing a contact (`eraseContact`), in the tick transaction of the partition that owns it.

In one transaction: every run of the contact is scrubbed and journaled by the kernel's
`erase_run` (those not ended are cancelled, outcome `erased`), the `contact.erased` entries are
chained unsealed (they hold the contact id, the reason code and the tick: nothing personal), and
the store destroys the key and the contact's data outside runs and the log. The entries sealed
under the key stay, verifiable and unreadable. A contact erased before, and not enrolled since,
is left as it is: the reply says so, and nothing is journaled twice.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from dee.bus import messages as wire
from dee.kernel.audit import AuditRow, seal_rows
from dee.kernel.contact import Contact
from dee.kernel.erasure import erase_run
from dee.kernel.state import RunState
from dee.privacy.vault import Vault
from dee.shell.store import NewRun, PartitionStore


async def erase_contact(
    store: PartitionStore, tick: int, m: wire.EraseContact, stamp: str, new_id: Callable[[], str], vault: Vault | None
) -> wire.Reply:  # fmt: skip
    if vault is not None:
        vault.forget(m.contact_id)
    runs = await store.contact_runs(m.contact_id)
    # erased before, and nothing since (a contact enrolled again with encryption off has no key,
    # but its new run holds its data)
    scrubbed_all = all(s.terminal and s.contact == Contact(id=m.contact_id) for s in runs)
    if scrubbed_all and await store.key_status(m.contact_id) == "erased":
        return wire.Reply(m.command_id, True, details={"contactId": m.contact_id, "alreadyErased": True, "runs": 0, "cancelled": 0})
    states: list[RunState] = []
    audit: list[AuditRow] = []
    cancelled: list[str] = []
    for state in runs:
        scrubbed, rows = _erased(state, tick, m.reason, stamp, new_id)
        states.append(scrubbed)
        audit.extend(rows)
        if not state.terminal:
            cancelled.append(state.run_id)
    await store.save_runs(states)
    await store.append_audit(audit)
    await store.forget_contact(m.contact_id, [s.run_id for s in runs], tick, m.reason)
    details = {"contactId": m.contact_id, "alreadyErased": False, "runs": len(runs), "cancelled": len(cancelled)}
    return wire.Reply(m.command_id, True, runs=cancelled, details=details)


def erase_enrolled(runs: list[NewRun], audit: list[AuditRow], m: wire.EraseContact, tick: int, stamp: str,
                   new_id: Callable[[], str]) -> None:  # fmt: skip
    """Erase the contact's runs enrolled earlier in the same batch (not stored yet, so not
    among `contact_runs`): scrubbed and journaled in place, as if stored first."""
    for i, new in enumerate(runs):
        if new.state.contact.id != m.contact_id:
            continue
        scrubbed, rows = _erased(new.state, tick, m.reason, stamp, new_id)
        runs[i] = NewRun(scrubbed, new.idempotency_key)
        audit.extend(rows)


def _erased(state: RunState, tick: int, reason: str, stamp: str, new_id: Callable[[], str]) -> tuple[RunState, list[AuditRow]]:
    """The run scrubbed, and its erasure's entries chained (`erase_run` journals every run)."""
    scrubbed, drafts = erase_run(state, tick, reason)
    rows = seal_rows(drafts, state.audit_head, stamp, new_id)
    return msgspec.structs.replace(scrubbed, audit_head=rows[-1].checksum), rows
