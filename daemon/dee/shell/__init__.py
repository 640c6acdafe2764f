"""The shell's rules, written once: intake, enrolment, the tick and channel results.

Everything here decides how inputs reach runs (stamped with the partition's tick, deduplicated,
fanned out to a contact's runs), how runs are created and in which order they advance; it never
decides anything about a run itself (that is the kernel's job). It reads and writes through a
`PartitionStore` (`store.py`): PostgreSQL inside a daemon's tick transaction, or plain dicts
for a `memory://` engine, so both run exactly the same rules.
"""
