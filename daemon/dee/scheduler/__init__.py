"""The daemon's moving parts: partition workers, the lease coordinator, the dispatcher."""
