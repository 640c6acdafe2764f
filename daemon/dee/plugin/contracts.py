"""The contracts a plugin implements. Built-in plugins use exactly these, nothing private.

A plugin returns instances of these classes from the hooks in `dee.plugin.hookspecs`. Step types
and template stores run inside the pure kernel, so they must be deterministic: read only their
arguments, no clock, no I/O at evaluation time, no randomness. Channel adapters live in the shell
and may do I/O, but must honour the idempotency key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import msgspec

from dee.kernel.context import StepContext
from dee.kernel.effects import DispatchRequest
from dee.kernel.inputs import ChannelResult
from dee.kernel.outcomes import Fail, StepOutcome


class TemplateStore(Protocol):
    """Content by id: email templates (`kind="email"`), call scripts (`"voice"`), voicemail
    messages (`"voicemail"`). Lookups must be pure for a given store content; replay uses the
    current store, which is how an edited template shows up as a content-hash diff."""

    name: str

    def get(self, kind: str, template_id: str) -> Mapping[str, Any] | None: ...

    def ids(self, kind: str) -> list[str]: ...


class StepType:
    """A step type: how one kind of plan node behaves. Subclass and override.

    - `name`: the `type` written in plans (`sendEmail`); `builder`: the Python builder name.
    - `params_type`: a msgspec Struct (camelCase) that the step's params must convert to; the
      kernel hands the converted value to every method.
    - `always_waits(params)`: True when every pass through the step takes logical time (a `wait`),
      which is what makes a cycle through it safe.
    - `targets(params)`: step ids this step chooses between itself (a branch); empty when the
      plan's transitions pick the successor.
    - `conditions(params)`: the CEL expressions the step evaluates, with whether `default` is
      allowed there, so the plan is checked and compiled up front.
    - `check(params, templates)`: further problems, e.g. an unknown template id.
    - `enter(ctx, params)`: the step starts; `on_timer` when its Sleep ends; `on_result` when its
      channel answers with success (failures and retries are the kernel's job).
    """

    name: ClassVar[str]
    params_type: ClassVar[type[msgspec.Struct]]
    channel: ClassVar[str | None] = None
    ends_run: ClassVar[bool] = False

    def always_waits(self, params: Any) -> bool:
        return False

    def targets(self, params: Any) -> list[str]:
        return []

    def conditions(self, params: Any) -> list[tuple[str, bool]]:
        return []

    def check(self, params: Any, templates: TemplateStore) -> list[str]:
        return []

    def enter(self, ctx: StepContext, params: Any) -> StepOutcome:
        raise TypeError(f"step type {self.name} does not implement enter")

    def on_timer(self, ctx: StepContext, params: Any) -> StepOutcome:
        return Fail(f"step type {self.name} does not handle timers")

    def on_result(self, ctx: StepContext, params: Any, result: ChannelResult) -> StepOutcome:
        return Fail(f"step type {self.name} does not handle channel results")


class DispatchResponse(msgspec.Struct, frozen=True, rename="camel"):
    status: str  # "delivered" | "failed"
    error_kind: str | None = None
    error: str | None = None
    outcome: str | None = None
    data: dict[str, Any] = {}


@runtime_checkable
class ChannelAdapter(Protocol):
    """Sends on one channel. Must not send twice for one idempotency key: a repeated key returns
    the first answer. `name` is how config selects it (`channels.email.adapter = "simulated"`)."""

    name: str
    channel: str

    async def send(self, request: DispatchRequest) -> DispatchResponse: ...
