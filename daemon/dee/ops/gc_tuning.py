"""Garbage-collector settings for DEE's own long, allocation-heavy processes.

A tick, a bulk enrolment or a replay allocates hundreds of thousands of short-lived objects
(structs, dicts, tuples) that reference counting frees on its own. With CPython's default
generation-0 threshold (700 allocations) the cycle collector runs every few hundred of them and
walks the survivors each time: 10-15 % of such a process's CPU in our profiles. Only the
processes DEE starts itself (`dee run`, `dee bench`, `dee simulate`) call `tune`; a library
user's process keeps its own settings.
"""

from __future__ import annotations

import gc

GENERATION_0_THRESHOLD = 50_000


def tune() -> None:
    """Freeze what start-up loaded (modules, plans, templates: never garbage) and collect the
    young generation every `GENERATION_0_THRESHOLD` allocations instead of every 700."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GENERATION_0_THRESHOLD, older, oldest)
