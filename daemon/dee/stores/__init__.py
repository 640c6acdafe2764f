"""Where partitions keep their state: PostgreSQL, and plain dicts in memory."""
