"""Process tooling: the `dee` command, the daemon process, health, metrics, simulate, bench."""
