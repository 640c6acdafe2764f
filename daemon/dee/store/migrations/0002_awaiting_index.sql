-- run_until_idle asks whether any run waits for a channel answer: a small partial index
-- (only the rows in flight) instead of a scan of every run.
CREATE INDEX runs_awaiting ON runs (partition) WHERE awaiting;
