-- Do-not-call lists and the like: phone numbers, in E.164, that suppress whoever has them.
-- A number is listed once per level and channel (NULL: every channel); a list imported again
-- adds nothing. Its contacts get suppressions of their own (`suppressions`), from the import for
-- those enrolled before it and at enrolment for those enrolled after.
CREATE TABLE suppressed_numbers (
    e164        text   NOT NULL,
    level       text   NOT NULL,
    channel     text,
    source      text   NOT NULL,
    reason      text   NOT NULL,
    tick        bigint NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX suppressed_numbers_listing ON suppressed_numbers (e164, level, coalesce(channel, ''));

-- Each contact's numbers as enrolled (E.164), what an import finds its contacts by. Written by
-- the enrolment, under the number lists' advisory lock held shared, so an import (holding it
-- exclusively while it lists numbers and reads this table) and an enrolment never miss each other.
CREATE TABLE contact_phones (
    contact_id text    NOT NULL,
    e164       text    NOT NULL,
    partition  integer NOT NULL,
    PRIMARY KEY (contact_id, e164)
);
CREATE INDEX contact_phones_e164 ON contact_phones (e164);
