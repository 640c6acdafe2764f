"""The two homes of a deployment behind the Engine facade: in memory, and Postgres + Redis with daemons."""
