-- The audit log, partitioned by the start of each run, so that retention drops whole partitions
-- (`dee audit archive`) instead of deleting rows. Every row carries its run's start tick: all of
-- a run's entries then live in one partition, which goes only once every run started in it has
-- ended. The range partitions (one per `audit.partition_days` of run starts) are made by
-- `dee migrate` right after this file and by `dee audit archive`, ahead of time; the DEFAULT
-- partition takes any row no range partition covers yet, so no write can fail for want of one.
--
-- Daemons of earlier releases write audit rows without the start tick: stop them before this
-- migration (their ticks would fail and be retried until they run the new release).

ALTER TABLE audit_log RENAME TO audit_log_unpartitioned;
ALTER TABLE audit_log_unpartitioned RENAME CONSTRAINT audit_log_pkey TO audit_log_unpartitioned_pkey;
ALTER INDEX audit_tick RENAME TO audit_tick_unpartitioned;

CREATE TABLE audit_log (
    LIKE audit_log_unpartitioned,  -- the columns of 0001, in their order
    start_tick bigint NOT NULL,    -- the run's start tick: the partition key
    PRIMARY KEY (run_id, seq, start_tick)
) PARTITION BY RANGE (start_tick);
-- written in tick order within each partition: the block range index of 0003, on every partition
CREATE INDEX audit_tick ON audit_log USING brin (tick) WITH (pages_per_range = 32, autosummarize = on);

-- Append-only, really: updates and deletes are refused row by row (cloned onto every partition),
-- and TRUNCATE is refused on the parent here and on each partition when it is made (a statement
-- trigger is not cloned, and truncating a partition does not fire its parent's).
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION dee_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION dee_audit_append_only();
CREATE TABLE audit_log_default PARTITION OF audit_log DEFAULT;
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_log_default
    FOR EACH STATEMENT EXECUTE FUNCTION dee_audit_append_only();

-- Every existing row, with its run's start (a row whose run is missing, which no release wrote,
-- takes its run's first tick); `dee migrate` then moves them into their range partitions.
INSERT INTO audit_log (run_id, seq, id, plan_id, step_id, tick, ts, action, input, output, context,
                       previous_checksum, checksum, start_tick)
SELECT a.run_id, a.seq, a.id, a.plan_id, a.step_id, a.tick, a.ts, a.action, a.input, a.output, a.context,
       a.previous_checksum, a.checksum, coalesce(r.start_tick, min(a.tick) OVER (PARTITION BY a.run_id))
FROM audit_log_unpartitioned a LEFT JOIN runs r ON r.run_id = a.run_id;
DROP TABLE audit_log_unpartitioned;

-- What left the live log, and where to: one row per partition dropped, with its archive object
-- (none when it was dropped without an archive, `dee audit archive --no-archive`).
CREATE TABLE audit_archives (
    id           bigserial PRIMARY KEY,
    partition    text    NOT NULL,
    start_from   bigint  NOT NULL,  -- the partition's bounds: runs that started in [start_from, start_to)
    start_to     bigint  NOT NULL,
    rows         bigint  NOT NULL,
    runs         integer NOT NULL,
    object_key   text,              -- gzip JSON lines of the rows, under audit.archive_to
    manifest_key text,
    bytes        bigint,
    sha256       text,              -- of the object as stored
    dropped_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_archives_range ON audit_archives (start_from);

-- Partitions brought back by `dee audit restore`: kept until `dee audit archive --drop-restored`.
CREATE TABLE audit_restored (
    partition   text   PRIMARY KEY,
    start_from  bigint NOT NULL,
    start_to    bigint NOT NULL,
    restored_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE dee_meta
    -- the partitions' length, fixed by the first migrate that partitions the log
    ADD COLUMN audit_partition_days integer,
    -- the role `dee migrate --daemon-role` grants the daemons' privileges to, on every migrate
    ADD COLUMN daemon_role text,
    -- names this deployment's objects in a bucket other deployments may share
    ADD COLUMN deployment_id text NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', '');

-- retention asks which runs started in a partition's range, and whether they all ended
CREATE INDEX runs_start ON runs (start_tick);

-- `received` is pruned by tick (past `bus.dedupe_days`); it is written in tick order too
CREATE INDEX received_tick ON received USING brin (tick) WITH (pages_per_range = 32, autosummarize = on);
