"""Crypto-shredding of contact data: per-contact AES-256-GCM keys, wrapped by a master key.

Audit entries are append-only and hash-chained, so contact data in them cannot be deleted; it is
sealed instead (`seal`) with a key of the contact's own (`keys`), and destroying that key erases
the data everywhere it was copied to, backups and archives included, while every chain still
verifies (the checksums cover the ciphertext). `Vault` is what the shell holds: the master key,
a bounded cache of unwrapped keys (`cache`), and the switch.
"""
