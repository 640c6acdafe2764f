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


def idempotency_key(run_id: str, step_id: str, tick: int, run_attempt: int = 1) -> str:
    text = f"{run_id}|{step_id}|{tick}" if run_attempt == 1 else f"{run_id}|{step_id}|{tick}|{run_attempt}"
    return hashlib.sha256(text.encode()).hexdigest()


def message_id(key: str, domain: str) -> str:
    """The RFC 5322 Message-ID of a send, derived from its key so retries reuse it."""
    return f"<{key[:32]}@{domain}>"
