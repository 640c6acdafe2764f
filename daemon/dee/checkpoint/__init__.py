"""Signed audit checkpoints: a Merkle tree over every run's chain head, signed as a C2SP
signed note, so that someone outside the database can hold what the audit log was."""
