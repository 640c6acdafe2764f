"""Content-based plan versions: the same content always maps to the same version number."""

from __future__ import annotations

from msgspec.structs import replace

from dee.plan.model import Plan


class PlanRegistry:
    """In-process registry of plan versions (the daemon keeps the same table in Postgres).

    Registering content already seen under an id returns its version; new content under that id
    gets the next number. Versions are never reused or renumbered.
    """

    def __init__(self) -> None:
        self._versions: dict[str, list[Plan]] = {}

    def register(self, plan: Plan) -> Plan:
        if not plan.checksum:
            raise ValueError("register a plan returned by create_plan or load_plan (it has no checksum)")
        versions = self._versions.setdefault(plan.id, [])
        for known in versions:
            if known.checksum == plan.checksum:
                return known
        registered = replace(plan, version=len(versions) + 1)
        versions.append(registered)
        return registered

    def get(self, plan_id: str, version: int) -> Plan:
        try:
            return self._versions[plan_id][version - 1]
        except (KeyError, IndexError):
            raise KeyError(f"{plan_id} v{version}") from None

    def latest(self, plan_id: str) -> Plan:
        return self._versions[plan_id][-1]
