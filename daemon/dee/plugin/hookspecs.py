"""The hooks a DEE plugin implements. These docstrings are the plugin author's documentation.

A plugin is any importable module or object registered under the `dee` entry-point group::

    [project.entry-points.dee]
    dee_sendgrid = "dee_sendgrid"

and implementing one or more of the hooks below with `@dee.plugin.hookimpl`. Every hook
returns a list; DEE collects the lists of all plugins. Names must be unique across plugins:
two plugins registering the same step type, adapter or template store name stop start-up.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("dee")


@hookspec
def dee_step_types() -> list[Any]:
    """Return step types (`dee.plugin.contracts.StepType` instances).

    A step type runs inside the pure kernel: it must decide only from the `StepContext` and its
    params, and return a `StepOutcome` (`Done`, `Sleep`, `Send`, `Finish`, `Fail`). No clock, no
    I/O, no randomness: anything else breaks replay.
    """


@hookspec
def dee_channel_adapters(config: Any) -> list[Any]:
    """Return channel adapters (`dee.plugin.contracts.ChannelAdapter`) built from `config`
    (the `EngineConfig`). Config selects one adapter per channel by name. An adapter must not
    send twice for the same idempotency key."""


@hookspec
def dee_policy_gates(config: Any) -> list[Any]:
    """Return policy gates checked before every step (consent, suppression, calling hours,
    limits). A gate's verdict is journaled so replay sees the same verdict."""


@hookspec
def dee_template_stores(config: Any) -> list[Any]:
    """Return template stores (`dee.plugin.contracts.TemplateStore`) that can resolve email
    templates, call scripts and voicemail messages by id. Stores are asked in registration
    order; the first that knows an id answers."""


@hookspec
def dee_startup(engine: Any) -> None:
    """Called once when an engine starts, after plugins are loaded: open connections here."""


@hookspec
def dee_shutdown(engine: Any) -> None:
    """Called once when an engine stops: close what `dee_startup` opened."""
