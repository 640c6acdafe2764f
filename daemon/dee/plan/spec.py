"""What plan validation and compilation need to know about step types and content stores.

Plans are checked and compiled against these two protocols only, so the `plan` package depends
on nothing above it: the kernel's `StepType` (which plugins subclass) implements `StepSpec`,
and template stores implement `TemplateStore`. Both are re-exported by `dee.plugin.contracts`,
the one module a plugin author imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import msgspec


class TemplateStore(Protocol):
    """Content by id: email templates (`kind="email"`), call scripts (`"voice"`), voicemail
    messages (`"voicemail"`). Lookups must be pure for a given store content; replay uses the
    current store, which is how an edited template shows up as a content-hash diff."""

    name: str

    def get(self, kind: str, template_id: str) -> Mapping[str, Any] | None: ...

    def ids(self, kind: str) -> list[str]: ...


class StepSpec(Protocol):
    """The static side of a step type: its params, the successors and conditions it brings,
    and the checks of its content. (`dee.kernel.steps.StepType` documents each member.)"""

    name: ClassVar[str]
    params_type: ClassVar[type[msgspec.Struct]]
    channel: ClassVar[str | None]
    ends_run: ClassVar[bool]

    def always_waits(self, params: Any) -> bool: ...

    def targets(self, params: Any) -> list[str]: ...

    def conditions(self, params: Any) -> list[tuple[str, bool]]: ...

    def check(self, params: Any, templates: TemplateStore) -> list[str]: ...
