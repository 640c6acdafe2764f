"""Redis: the wire messages, streams with consumer groups and dead letters."""
