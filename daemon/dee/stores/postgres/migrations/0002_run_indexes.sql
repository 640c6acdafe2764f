-- Indexes that a run row's every update pays for, fitted to what is asked of them.

-- run_until_idle asks whether any run waits for a channel answer: a small partial index
-- (only the rows in flight) instead of a scan of every run.
CREATE INDEX runs_awaiting ON runs (partition) WHERE awaiting;

-- Most runs have no idempotency key; a partial unique index holds only those that do (an
-- update of a run without one no longer adds an index entry).
ALTER TABLE runs DROP CONSTRAINT runs_idempotency_key_key;
CREATE UNIQUE INDEX runs_idempotency ON runs (idempotency_key) WHERE idempotency_key IS NOT NULL;
