"""Postgres storage (asyncpg): migrations, and one module per table family."""
