-- A run's row is rewritten on every tick it advances, and its state (1.6-2 KB by the end of a
-- plan) pushed the row past the default 2 KB TOAST threshold: PostgreSQL then compressed the
-- state with pglz on every one of those updates (7 % of the server's CPU in a `perf` profile
-- of `dee bench`). Rows up to a page stay inline and uncompressed; larger ones are compressed
-- and moved out of line as before.
ALTER TABLE runs SET (toast_tuple_target = 8160);
