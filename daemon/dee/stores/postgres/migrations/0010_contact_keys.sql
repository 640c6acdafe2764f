-- Crypto-shredding of contact data (dee.privacy): one wrapped AES-256 key per contact. Erasing
-- a contact deletes its key (`wrapped` set to NULL) and keeps the row as the tombstone that
-- makes a second erasure a no-op: the contact id, when, and the reason code, no personal data.
CREATE TABLE contact_keys (
    contact_id  text PRIMARY KEY,
    partition   integer NOT NULL,
    wrapped     bytea,
    erased_tick bigint,
    reason      text
);

-- the master key of a deployment whose configuration names no master key file
ALTER TABLE dee_meta
    ADD COLUMN privacy_key bytea NOT NULL
        DEFAULT decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex');
