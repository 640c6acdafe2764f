"""Idempotency keys and engine-assigned message ids.

The key is `sha256(f"{run_id}|{step_id}|{tick}")` where `tick` is the tick at which this execution
of the step began: every retry of one execution carries the same key, so an adapter that sees a
key twice knows not to send twice; `retry_run` starts a new execution and so a new key.
"""

from __future__ import annotations

import hashlib


def idempotency_key(run_id: str, step_id: str, tick: int) -> str:
    return hashlib.sha256(f"{run_id}|{step_id}|{tick}".encode()).hexdigest()


def message_id(key: str, domain: str) -> str:
    """The RFC 5322 Message-ID of a send, derived from its key so retries reuse it."""
    return f"<{key[:32]}@{domain}>"
