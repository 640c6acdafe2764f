-- A bus that checks who says what.
-- A commandId's content fingerprint: the same id with other content is refused, not applied.
ALTER TABLE received ADD COLUMN digest bytea;
-- The deployment's own keys, made once here from PostgreSQL's strong random source (each
-- gen_random_uuid() holds 122 random bits), so daemons and ingresses need no configuration:
-- result_key signs channel results (a partition accepts no result without it), link_key signs
-- the tokens of open pixels, tracked links and unsubscribe links (unless ingress.signing_key is set).
ALTER TABLE dee_meta
    ADD COLUMN result_key bytea NOT NULL
        DEFAULT decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'),
    ADD COLUMN link_key bytea NOT NULL
        DEFAULT decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex');
