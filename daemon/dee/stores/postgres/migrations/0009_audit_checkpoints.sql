-- Signed audit checkpoints (`dee audit checkpoint`). Each checkpoint appends to the leaf log the
-- chain heads of the runs that changed since the one before (a run's head, entry count, status,
-- outcome and current step, as its row says), and signs the RFC 9162 Merkle tree hash of the
-- whole log: the log only grows, so every checkpoint is a prefix of the next, which consistency
-- proofs show. Both tables are append-only, like the audit log.
CREATE TABLE audit_checkpoint_leaves (
    idx          bigint  PRIMARY KEY,  -- the leaf's index in the tree, from 0
    run_id       text    NOT NULL,
    seq          integer NOT NULL,     -- the run's last entry (its entry count)
    head         text    NOT NULL,     -- that entry's checksum
    status       text    NOT NULL,
    outcome      text,
    current_step text
);
CREATE INDEX audit_checkpoint_leaves_run ON audit_checkpoint_leaves (run_id, idx);

CREATE TABLE audit_checkpoints (
    size       bigint      PRIMARY KEY,  -- the tree size it signs
    root       text        NOT NULL,     -- the tree hash, hex
    note       text        NOT NULL,     -- the signed note, as given out
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER audit_checkpoint_leaves_append_only BEFORE UPDATE OR DELETE ON audit_checkpoint_leaves
    FOR EACH ROW EXECUTE FUNCTION dee_audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION dee_audit_append_only();
