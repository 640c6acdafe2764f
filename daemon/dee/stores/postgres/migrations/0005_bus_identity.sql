-- A bus that checks who says what.
-- A commandId's content fingerprint: the same id with other content is refused, not applied.
ALTER TABLE received ADD COLUMN digest bytea;
-- The key dispatchers sign channel results with (a partition accepts no result without it): made
-- once per deployment, here, so daemons need no configuration for it.
ALTER TABLE dee_meta ADD COLUMN result_key bytea NOT NULL
    DEFAULT decode(md5(random()::text || clock_timestamp()::text) || md5(random()::text || pg_backend_pid()::text), 'hex');
