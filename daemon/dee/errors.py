"""The exception hierarchy: every error DEE raises on purpose is a `DeeError`.

Callers catch the narrow class they can act on; anything else is a bug. Each class carries the
facts a caller needs (run id, step id, partition) as attributes, not only inside its message.
"""

from __future__ import annotations

from collections.abc import Sequence


class DeeError(Exception):
    """Base class of every error DEE raises deliberately."""


class PlanProblem(Exception):
    """One problem found in a plan: which step (if any) and what is wrong."""

    def __init__(self, step_id: str | None, message: str) -> None:
        super().__init__(f"{step_id}: {message}" if step_id else message)
        self.step_id = step_id
        self.message = message

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PlanProblem)
            and (self.step_id, self.message) == (other.step_id, other.message)
        )

    def __hash__(self) -> int:
        return hash((self.step_id, self.message))

    def __repr__(self) -> str:
        return f"PlanProblem({self.step_id!r}, {self.message!r})"


class PlanValidationError(DeeError):
    """A plan broke one or more validation rules; `problems` lists every one of them."""

    def __init__(self, plan_id: str, problems: Sequence[PlanProblem]) -> None:
        self.plan_id = plan_id
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"plan {plan_id!r} is invalid ({len(self.problems)} problems):\n{lines}")


class PlanFileError(DeeError):
    """A plan file could not be read or parsed (before validation could even start)."""


class ConditionError(DeeError):
    """A condition failed to evaluate at run time (e.g. a missing contact attribute)."""


class TemplateError(DeeError):
    """A template failed to render: unknown template, undefined variable, sandbox violation."""


class InvalidTransitionError(DeeError):
    """A run was asked to move between two statuses that SPEC section 4 does not allow."""

    def __init__(self, run_id: str, from_status: str, to_status: str, why: str = "") -> None:
        self.run_id = run_id
        self.from_status = from_status
        self.to_status = to_status
        self.why = why
        detail = f": {why}" if why else ""
        super().__init__(f"run {run_id}: cannot go from {from_status} to {to_status}{detail}")


class RunNotFoundError(DeeError):
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} not found")


class RunIdInUseError(DeeError):
    """An `execute` chose a run id that another run already has (a publisher's bug, or a
    forgery): nothing was enrolled."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"runId {run_id} is already in use by another run")


class CommandIdReusedError(DeeError):
    """A `commandId` that was accepted before with other content: the first one stands (like
    an HTTP idempotency key), this one was not applied."""

    def __init__(self, command_id: str) -> None:
        self.command_id = command_id
        super().__init__(f"commandId {command_id} reused with different content")


class AlreadyEnrolledError(DeeError):
    """The contact already has a non-terminal run of this plan."""

    def __init__(self, plan_id: str, contact_id: str, run_id: str) -> None:
        self.plan_id = plan_id
        self.contact_id = contact_id
        self.run_id = run_id
        super().__init__(f"contact {contact_id} is already enrolled in {plan_id} (run {run_id})")


class StartInPastError(DeeError):
    def __init__(self, start_at: int, current_tick: int) -> None:
        self.start_at = start_at
        self.current_tick = current_tick
        super().__init__(f"start_at tick {start_at} is before the current tick {current_tick}")


class EngineUnavailableError(DeeError):
    """The daemon owning a partition did not answer in time."""

    def __init__(self, partition: int, why: str = "no reply") -> None:
        self.partition = partition
        self.why = why
        super().__init__(f"partition {partition} is unavailable: {why}")


class ServiceUnavailableError(DeeError):
    """PostgreSQL or Redis cannot be reached or refuses the connection (down, wrong address,
    credentials or database name). `url` names the service with its password removed."""

    def __init__(self, service: str, url: str, why: str) -> None:
        self.service = service
        self.url = url
        self.why = why
        super().__init__(f"cannot reach {service} at {url}: {why}")


class ClockModeError(DeeError):
    """A manual-clock operation was called on a wall-clock engine (or the reverse)."""


class PluginError(DeeError):
    """A plugin failed to load or registered something invalid; names the plugin."""

    def __init__(self, plugin: str, message: str) -> None:
        self.plugin = plugin
        super().__init__(f"plugin {plugin!r}: {message}")


class ConfigError(DeeError):
    """The configuration is invalid or contradicts the deployment."""


class AuditChainError(DeeError):
    """An audit chain could not be loaded or replayed (distinct from a failed verification)."""


class ContactErasedError(DeeError):
    """The run's contact was erased (`erase_contact`): what its audit entries held of the
    contact, its context included, can no longer be read; the chain still verifies."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id}: its contact was erased; the data it ran with can no longer be read")


class ErasureReasonError(DeeError, ValueError):
    """An erasure's reason must be a short code (`gdpr-art17`, `request`): it is journaled in
    clear, so free text, which could carry personal data, is refused."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__("the reason of an erasure is a code of 1 to 64 characters a-z, 0-9, '.', '_', '-' (no free text)")


class ContactSuppressedError(DeeError):
    """The contact is on a suppression list that covers this plan; nothing was enrolled."""

    def __init__(self, contact_id: str, level: str, reason: str) -> None:
        self.contact_id = contact_id
        self.level = level
        self.reason = reason
        super().__init__(f"contact {contact_id} is suppressed ({level}): {reason}")


class InvalidNumberError(DeeError):
    """A phone number that is no complete number (unreadable, no country code, a length no
    number of its country has): nothing was listed for it."""

    def __init__(self, number: str, why: str) -> None:
        self.number = number
        self.why = why
        super().__init__(f"{number!r} is not a usable phone number: {why}")


class NumberFileError(DeeError):
    """A number list has lines that are no number (`first` holds the first few, as
    (line number, text, why)): nothing of it was imported."""

    def __init__(self, path: str, invalid: int, first: Sequence[tuple[int, str, str]]) -> None:
        self.path = path
        self.invalid = invalid
        self.first = [tuple(item) for item in first]
        shown = "; ".join(f"line {line} {text!r}: {why}" for line, text, why in self.first)
        more = f"; and {invalid - len(self.first)} more" if invalid > len(self.first) else ""
        super().__init__(f"{path}: {invalid} invalid line{'s' if invalid != 1 else ''} ({shown}{more}); nothing imported")


class UnknownPlanError(DeeError):
    """A message named a plan version that was never registered."""

    def __init__(self, plan_id: str, version: int) -> None:
        self.plan_id = plan_id
        self.version = version
        super().__init__(f"plan {plan_id} v{version} is not registered")


class LeaseLostError(DeeError):
    """This process no longer holds the partition: its tick was refused (fencing)."""

    def __init__(self, partition: int, why: str) -> None:
        self.partition = partition
        self.why = why
        super().__init__(f"partition {partition}: lease lost ({why})")


def error_fields(error: DeeError) -> dict[str, object]:
    """The constructor arguments of an error, to carry it over the wire (`rebuild_error`)."""
    return {k: v for k, v in vars(error).items() if not k.startswith("_")}


def rebuild_error(name: str, message: str, fields: dict[str, object]) -> DeeError:
    """The typed error a daemon reported; an unknown name becomes a plain DeeError."""
    cls = globals().get(name)
    if isinstance(cls, type) and issubclass(cls, DeeError):
        if not fields:  # a class that carries nothing but its message (DeeError, ConfigError, ...)
            return cls(message)
        try:
            return cls(**fields)
        except TypeError:
            pass
    return DeeError(f"{name}: {message}")


class ArchiveError(DeeError):
    """An audit archive could not be written, read back, verified or restored (an object that
    is missing, corrupt or not what was recorded). Nothing is dropped on its account."""


class ScratchInUseError(DeeError):
    """A scratch database (`dee bench`, the tests) that another process is using right now: making
    it afresh would drop that process's database under it, so nothing is dropped."""

    def __init__(self, database: str) -> None:
        super().__init__(f"scratch database {database} is in use by another process (another dee bench?); "
                         "wait for it or choose another server or database name")  # fmt: skip
        self.database = database


class CheckpointError(DeeError):
    """A signed audit checkpoint that does not open (malformed, or no valid signature by the
    expected key), or a signing or verifier key that cannot be read. Never holds key material."""
