"""PostgreSQL: migrations, and the rows of runs, audit, inbox, outbox and plans."""
