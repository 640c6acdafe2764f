"""Audit retention: archiving partitions of the audit log to S3, dropping them, restoring them,
and verifying chains across the archive and the live log; forgetting old message ids.

The partitions themselves are made by `dee.stores.postgres.audit_partitions` (`dee migrate`
needs them too); this package is what `dee audit archive`, `dee audit restore` and `dee audit
verify --archive` run, always as the schema's owner and never inside a daemon.
"""
