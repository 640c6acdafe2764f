-- DEE schema, version 1. Applied by `dee migrate` inside one transaction under an advisory lock.

-- Deployment constants, fixed at the first migrate: changing them would move every run's
-- partition or the meaning of its ticks. A config that contradicts them is refused.
CREATE TABLE dee_meta (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch_ms         bigint  NOT NULL,
    tick_interval_ms integer NOT NULL,
    partitions       integer NOT NULL,
    manual_tick      bigint  NOT NULL DEFAULT 0
);

-- Plan versions: the same content always maps to the same version.
CREATE TABLE plans (
    plan_id    text    NOT NULL,
    version    integer NOT NULL,
    checksum   text    NOT NULL,
    definition bytea   NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plan_id, version),
    UNIQUE (plan_id, checksum)
);

-- One row per partition: the single writer's lease and fencing epoch, and its clock.
CREATE TABLE partitions (
    partition   integer PRIMARY KEY,
    owner       text,
    epoch       bigint  NOT NULL DEFAULT 0,
    lease_until timestamptz NOT NULL DEFAULT 'epoch',
    tick        bigint  NOT NULL DEFAULT 0
);

-- Live daemon instances (heartbeats) for rendezvous assignment.
CREATE TABLE instances (
    instance  text PRIMARY KEY,
    last_seen timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE contacts (
    contact_id   text PRIMARY KEY,
    partition    integer NOT NULL,
    unsubscribed boolean NOT NULL DEFAULT false,
    bounced      boolean NOT NULL DEFAULT false,
    updated_tick bigint  NOT NULL DEFAULT 0
);

CREATE TABLE suppressions (
    id         bigserial PRIMARY KEY,
    contact_id text    NOT NULL,
    level      text    NOT NULL,
    reason     text    NOT NULL,
    source     text    NOT NULL,
    channel    text,
    plan_id    text,
    tick       bigint  NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX suppressions_contact ON suppressions (contact_id);

CREATE TABLE consents (
    id           bigserial PRIMARY KEY,
    contact_id   text   NOT NULL,
    channel      text   NOT NULL,
    status       text   NOT NULL,
    source       text   NOT NULL,
    tick         bigint NOT NULL,
    expires_tick bigint,
    evidence     jsonb  NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consents_contact ON consents (contact_id, channel, tick);

-- Runs: queryable columns plus the kernel's encoded RunState.
CREATE TABLE runs (
    run_id          text    PRIMARY KEY,
    partition       integer NOT NULL,
    plan_id         text    NOT NULL,
    plan_version    integer NOT NULL,
    contact_id      text    NOT NULL,
    status          text    NOT NULL,
    current_step    text,
    wake_tick       bigint,
    awaiting        boolean NOT NULL DEFAULT false,
    start_tick      bigint  NOT NULL,
    current_tick    bigint  NOT NULL,
    steps_completed integer NOT NULL DEFAULT 0,
    outcome         text,
    seq             integer NOT NULL,
    head            text    NOT NULL,
    idempotency_key text UNIQUE,
    started_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    state           bytea   NOT NULL
);
-- the tick query: timers due in a partition
CREATE INDEX runs_due ON runs (partition, wake_tick) WHERE wake_tick IS NOT NULL AND status <> 'paused';
-- one non-terminal run per contact and plan
CREATE UNIQUE INDEX runs_enrolled ON runs (plan_id, contact_id) WHERE status NOT IN ('completed', 'cancelled');
CREATE INDEX runs_contact ON runs (contact_id);
CREATE INDEX runs_status ON runs (status, plan_id);

-- Every accepted message, by its commandId/eventId: the dedupe record and the stored reply.
CREATE TABLE received (
    message_id text    PRIMARY KEY,
    partition  integer NOT NULL,
    tick       bigint  NOT NULL,
    reply      bytea
);

-- Inputs waiting for their run's next processing, in arrival order.
CREATE TABLE inbox (
    seq       bigserial PRIMARY KEY,
    partition integer NOT NULL,
    run_id    text    NOT NULL,
    tick      bigint  NOT NULL,
    body      bytea   NOT NULL,
    reply_to  text,
    message_id text
);
CREATE INDEX inbox_partition ON inbox (partition, run_id, seq);

-- Channel actions decided in a committed tick, not yet published to their dispatch stream.
CREATE TABLE outbox (
    seq       bigserial PRIMARY KEY,
    partition integer NOT NULL,
    channel   text    NOT NULL,
    body      bytea   NOT NULL
);
CREATE INDEX outbox_partition ON outbox (partition, seq);

-- The audit log: append-only; each run's entries form a SHA-256 chain.
CREATE TABLE audit_log (
    run_id            text    NOT NULL,
    seq               integer NOT NULL,
    id                text    NOT NULL,
    plan_id           text    NOT NULL,
    step_id           text,
    tick              bigint  NOT NULL,
    ts                text    NOT NULL,
    action            text    NOT NULL,
    input             text,
    output            text,
    context           text,
    previous_checksum text    NOT NULL,
    checksum          text    NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX audit_tick ON audit_log (tick);

-- Append-only means append-only: updates and deletes of audit rows are refused by the database.
CREATE FUNCTION dee_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION dee_audit_append_only();
