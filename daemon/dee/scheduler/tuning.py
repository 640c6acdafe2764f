"""The scheduler's tuning constants, in one place, each with the reason for its value."""

from __future__ import annotations

# ---- partition worker -------------------------------------------------------------------
# stream entries read per iteration: a batch of this size still commits in well under a tick
# (one transaction, a few statements), and bigger batches stopped helping `dee bench`
READ_COUNT = 1000
# how long a read blocks for new entries: short while the partition is busy (new runs or
# fanned-out inputs may be due at once), longer when idle (an idle partition costs nothing)
BUSY_BLOCK_MS = 5
IDLE_BLOCK_MS = 50
# a burst of enrolments is only taken in (what bulk_execute waits for); after this many such
# batches in a row a tick must run, so a steady stream of enrolments cannot starve the runs
MAX_DEFERRED_TICKS = 8
# acknowledged entries are trimmed from the inbound stream every this many iterations
TRIM_EVERY_ITERATIONS = 500
# after a failed tick (its inputs wait in the inbox) and after storage errors: long enough not
# to spin on a broken database, short enough that a blip costs one tick
TICK_FAILED_PAUSE_S = 1.0
STORAGE_PAUSE_S = 0.5
# reply streams are read by their client at once; this only bounds a client that went away
REPLY_STREAM_MAXLEN = 10_000

# ---- dispatcher ---------------------------------------------------------------------------
DISPATCH_READ_COUNT = 500  # entries read at most per round (and no more than there is room for)
DISPATCH_BLOCK_MS = 20  # how long a read waits for new actions when nothing is in flight
# actions in flight per channel for an adapter that declares no `max_in_flight` (the simulated
# ones answer at once: this only bounds memory); real adapters take theirs from their config
DISPATCH_IN_FLIGHT = 500
DISPATCH_TRIM_EVERY_ROUNDS = 1000

# ---- sampled metrics -----------------------------------------------------------------------
# stream backlogs: one pipelined XINFO GROUPS per owned partition and dispatch stream; a second
# is finer than any scrape interval and costs Redis a few microseconds per stream
BACKLOG_SAMPLE_S = 1.0
# runs by status are counted when a partition is acquired and again this often (one scan of the
# runs table per daemon), which bounds the drift of runs removed outside the tick
RECOUNT_S = 600.0
RECOUNT_RETRY_S = 5.0  # after a failed count (storage away)
