-- The messages each contact was sent, across all its runs, kept only as far back as a policy
-- gate reads them (a frequency cap's window): what a run enrolled later starts counting from.
-- Written by the tick that sends, in the contact's partition; a retry is the same message.
CREATE TABLE contact_sends (
    message_id text    PRIMARY KEY,
    partition  integer NOT NULL,
    contact_id text    NOT NULL,
    channel    text    NOT NULL,
    plan_id    text    NOT NULL,
    tick       bigint  NOT NULL
);
CREATE INDEX contact_sends_contact ON contact_sends (contact_id, tick);
CREATE INDEX contact_sends_partition_tick ON contact_sends (partition, tick);
