"""The run status machine of SPEC section 4: the only transitions a run may take."""

from __future__ import annotations

from dee.errors import InvalidTransitionError

ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("pending", "active"),
        ("active", "waiting"),
        ("waiting", "active"),
        ("active", "paused"),
        ("waiting", "paused"),
        ("paused", "active"),
        ("active", "completed"),
        ("waiting", "completed"),
        ("active", "failed"),
        ("waiting", "failed"),
        ("failed", "active"),
        *((status, "cancelled") for status in ("pending", "active", "waiting", "paused", "failed")),
    }
)


def check_transition(run_id: str, from_status: str, to_status: str) -> None:
    """Raise InvalidTransitionError unless SPEC section 4 allows `from_status -> to_status`."""
    if (from_status, to_status) not in ALLOWED:
        raise InvalidTransitionError(run_id, from_status, to_status)
