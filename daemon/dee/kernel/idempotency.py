"""Idempotency keys and engine-assigned message ids.

The key is `sha256(f"{run_id}|{step_id}|{tick}")` where `tick` is the tick at which this execution
of the step began: every retry of one execution carries the same key, so an adapter that sees a
key twice knows not to send twice; `retry_run` starts a new execution and so a new key.

One exception: a `retry_run` that re-enters the failed step in the very tick its failed execution
began would get that execution's key back (and the adapter would answer with the old failure
instead of sending), so that execution alone hashes `...|{tick}|{run_attempt}`.
"""

from __future__ import annotations

import hashlib
import re

# what a run id may hold (the wire enforces it): it appears in Message-IDs and in URLs
RUN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


def idempotency_key(run_id: str, step_id: str, tick: int, run_attempt: int = 1) -> str:
    text = f"{run_id}|{step_id}|{tick}" if run_attempt == 1 else f"{run_id}|{step_id}|{tick}|{run_attempt}"
    return hashlib.sha256(text.encode()).hexdigest()


def message_id(key: str, domain: str, run_id: str) -> str:
    """The RFC 5322 Message-ID of a send, derived from its key so retries reuse it, and naming
    its run so a reply or a bounce that quotes it finds the run without a lookup table."""
    return f"<{key[:32]}.{run_id}@{domain}>"


def run_of_message(msg_id: str) -> str | None:
    """The run a Message-ID of ours names (None for anyone else's)."""
    local = msg_id.strip().removeprefix("<").partition("@")[0]
    key, dot, run = local.partition(".")
    return run if dot and len(key) == 32 and RUN_ID.fullmatch(run) else None
