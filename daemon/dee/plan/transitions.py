"""Transition builders: `transitions.linear()` or `transitions.explicit([Edge(...), ...])`."""

from __future__ import annotations

from collections.abc import Iterable

from dee.plan.model import Edge, Transitions


def linear() -> Transitions:
    """Each step goes to the next in list order; branches pick their own targets; `end` ends."""
    return Transitions(mode="linear")


def explicit(edges: Iterable[Edge]) -> Transitions:
    """Only the listed edges; edges from one step are tried in order, the first that holds wins."""
    return Transitions(mode="explicit", edges=tuple(edges))
