"""Deliverability limits and budgets: whether a channel action may be sent now, decided and
consumed atomically where sends happen (the dispatcher, the memory engine's dispatch).

`settings` holds the `[policy.deliverability]` and `[policy.budgets]` sections, `rules` turns
them into the counters one action charges (pure arithmetic over a moment in Unix ms),
`counters` consumes those charges all or none: in Redis (shared by every dispatcher process of
the deployment) or in this process (the memory engine). A refused action is never sent: it
comes back to its run as a failed `result` (`rate_limited` with a `retryAfterMs`, or
`budget_exhausted`), a journaled input like any channel answer, so the kernel stays pure and
replay reproduces the run.

This package's `__init__` imports nothing: `dee.config` reads `settings` at import time.
"""
