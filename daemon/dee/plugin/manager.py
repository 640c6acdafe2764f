"""A small typed wrapper around pluggy: one method per hook, fail-closed loading.

Plugins are found through the `dee` entry-point group, built-ins included, so `dee plugins`
shows exactly what the daemon will run and where each piece came from.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pluggy

from dee.errors import ConfigError, PluginError
from dee.plugin import hookspecs
from dee.plugin.contracts import ChannelAdapter, PolicyGate, StepType, TemplateStore, WebhookReceiver
from dee.plugin.webhooks import BUILT_IN_PROVIDERS

ENTRY_POINT_GROUP = "dee"
CHANNELS = ("email", "voice")  # the channels a deployment configures (`[channels.email]`, ...)
RECEIVER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")  # a path segment, the same in every URL form


@dataclass(frozen=True)
class PluginInfo:
    name: str
    source: str  # "entry point <dist> <version>" or "registered in code"
    module: str


class PluginManager:
    """Loads plugins and answers the hooks with typed, de-duplicated results."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager("dee")
        self._pm.add_hookspecs(hookspecs)
        self._info: list[PluginInfo] = []

    @classmethod
    def load(cls, disabled: Iterable[str] = (), extra: Iterable[tuple[str, object]] = ()) -> PluginManager:
        """Every plugin of the entry-point group (minus `disabled`), then `extra` ones.

        A plugin that fails to import stops loading with its name (fail-closed): running without
        a step type some plan needs would fail runs later and far from the cause.
        """
        manager, _ = cls._from_entry_points(disabled, stop_at_failure=True)
        for name, plugin in extra:
            manager.register(name, plugin, "registered in code")
        manager.check()
        return manager

    @classmethod
    def survey(cls, disabled: Iterable[str] = ()) -> tuple[PluginManager, list[PluginError]]:
        """For `dee plugins`: every plugin that loads, and the error of each one that does not
        (one that fails to import, or whose hooks do not check), so all of them can be named."""
        manager, failed = cls._from_entry_points(disabled, stop_at_failure=False)
        try:
            manager._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = manager._pm.get_name(exc.plugin) or "?"
            failed.append(PluginError(name, str(exc)))
            manager._pm.unregister(exc.plugin)
            manager._info = [i for i in manager._info if i.name != name]
        return manager, failed

    @classmethod
    def _from_entry_points(cls, disabled: Iterable[str], stop_at_failure: bool) -> tuple[PluginManager, list[PluginError]]:
        manager = cls()
        failed: list[PluginError] = []
        skip = set(disabled)
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in skip:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # any import failure is the plugin's, reported by name
                error = PluginError(ep.name, f"failed to import {ep.value}: {exc!r}")
                if stop_at_failure:
                    raise error from exc
                failed.append(error)
                continue
            dist = ep.dist
            source = f"entry point of {dist.name} {dist.version}" if dist else "entry point"
            manager.register(ep.name, plugin, source)
        return manager, failed

    def register(self, name: str, plugin: object, source: str = "registered in code") -> None:
        if self._pm.has_plugin(name):
            raise PluginError(name, "a plugin with this name is already registered")
        self._pm.register(plugin, name=name)
        module = getattr(plugin, "__name__", type(plugin).__module__)
        self._info.append(PluginInfo(name, source, module))

    def check(self) -> None:
        """Refuse hook implementations that match no hookspec (typos would silently do nothing)
        and invalid or duplicate step types (they need no configuration to be asked)."""
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(self._pm.get_name(exc.plugin) or "?", str(exc)) from exc
        self.step_types()

    @property
    def plugins(self) -> list[PluginInfo]:
        return list(self._info)

    def _per_plugin(self, hook: str, errors: dict[str, str] | None = None, **kwargs: Any) -> list[tuple[str, list[Any]]]:
        """Each plugin's answer to a hook, in registration order; a hook that raises or does
        not return a list is that plugin's error (raised, or noted in `errors` when given)."""
        out: list[tuple[str, list[Any]]] = []
        for impl in getattr(self._pm.hook, hook).get_hookimpls():  # in registration order
            args = {k: kwargs[k] for k in impl.argnames}
            try:
                try:
                    items = impl.function(**args)
                except Exception as exc:
                    raise PluginError(impl.plugin_name, f"{hook} raised {type(exc).__name__}: {exc}") from exc
                if items is None:
                    items = []
                if not isinstance(items, list | tuple):
                    raise PluginError(impl.plugin_name, f"{hook} must return a list, not {type(items).__name__}")
            except PluginError as exc:
                if errors is None:
                    raise
                errors.setdefault(impl.plugin_name, str(exc))
                continue
            out.append((impl.plugin_name, list(items)))
        return out

    def _collect(self, hook: str, what: str, valid: Callable[[Any], str | None], **kwargs: Any) -> dict[str, Any]:
        """Items by name; `valid` says what is wrong with an item (None: nothing)."""
        found: dict[str, Any] = {}
        owner: dict[str, str] = {}
        for plugin_name, items in self._per_plugin(hook, **kwargs):
            for item in items:
                problem = valid(item)
                if problem is not None:
                    raise PluginError(plugin_name, f"{hook} returned {item!r}: {problem}")
                if item.name in found:
                    raise PluginError(plugin_name, f"{what} {item.name!r} is already provided by {owner[item.name]!r}")
                found[item.name] = item
                owner[item.name] = plugin_name
        return found

    def step_types(self) -> dict[str, StepType]:
        return self._collect("dee_step_types", "step type", _step_type_problem)

    def channel_adapters(self, config: Any) -> dict[tuple[str, str], ChannelAdapter]:
        adapters: dict[tuple[str, str], ChannelAdapter] = {}
        for plugin_name, items in self._per_plugin("dee_channel_adapters", config=config):
            for adapter in items:
                problem = _adapter_problem(adapter)
                if problem is not None:
                    raise PluginError(plugin_name, f"dee_channel_adapters returned {adapter!r}: {problem}")
                key = (adapter.channel, adapter.name)
                if key in adapters:
                    raise PluginError(plugin_name, f"channel adapter {key[1]!r} for {key[0]!r} is already registered")
                adapters[key] = adapter
        return adapters

    def selected_adapters(self, config: Any) -> dict[str, ChannelAdapter]:
        """The adapter `config` selects for each channel (`channels.<channel>.adapter`); one no
        plugin provides is a configuration error naming it."""
        adapters = self.channel_adapters(config)
        chosen: dict[str, ChannelAdapter] = {}
        for channel in CHANNELS:
            name = getattr(config.channels, channel).adapter
            adapter = adapters.get((channel, name))
            if adapter is None:
                known = ", ".join(sorted(n for c, n in adapters if c == channel)) or "none"
                raise ConfigError(f"no plugin provides the {channel} adapter {name!r} (installed: {known})")
            chosen[channel] = adapter
        return chosen

    def template_stores(self, config: Any) -> dict[str, TemplateStore]:
        return self._collect("dee_template_stores", "template store", _store_problem, config=config)

    def policy_gates(self, config: Any) -> dict[str, PolicyGate]:
        """The gates by name, in registration order (the order the kernel asks them in)."""
        return self._collect("dee_policy_gates", "policy gate", _gate_problem, config=config)

    def webhook_receivers(self, config: Any) -> dict[str, WebhookReceiver]:
        """The receivers by name (each the route `/webhooks/{name}` of the ingress)."""
        return self._collect("dee_webhook_receivers", "webhook receiver", _receiver_problem, config=config)

    def startup(self, engine: Any) -> None:
        self._call_each("dee_startup", engine=engine)

    def shutdown(self, engine: Any) -> None:
        self._call_each("dee_shutdown", engine=engine)

    def _call_each(self, hook: str, **kwargs: Any) -> None:
        for impl in getattr(self._pm.hook, hook).get_hookimpls():
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:
                raise PluginError(impl.plugin_name, f"{hook} raised {type(exc).__name__}: {exc}") from exc

    def describe(self, config: Any) -> list[dict[str, Any]]:
        """What each plugin provides, for `dee plugins` (asked with the deployment's config,
        as the engine asks)."""
        provided: dict[str, list[str]] = {info.name: [] for info in self._info}
        errors: dict[str, str] = {}
        for plugin_name, items in self._per_plugin("dee_step_types", errors):
            provided[plugin_name] += [f"step type {getattr(i, 'name', i)}" for i in items]
        for plugin_name, items in self._per_plugin("dee_channel_adapters", errors, config=config):
            provided[plugin_name] += [f"{getattr(i, 'channel', '?')} adapter {getattr(i, 'name', i)}" for i in items]
        for plugin_name, items in self._per_plugin("dee_template_stores", errors, config=config):
            provided[plugin_name] += [f"template store {getattr(i, 'name', i)}" for i in items]
        for plugin_name, items in self._per_plugin("dee_policy_gates", errors, config=config):
            provided[plugin_name] += [f"policy gate {getattr(i, 'name', i)}" for i in items]
        for plugin_name, items in self._per_plugin("dee_webhook_receivers", errors, config=config):
            provided[plugin_name] += [f"webhook receiver {getattr(i, 'name', i)}" for i in items]
        return [{"name": i.name, "source": i.source, "module": i.module, "provides": provided[i.name],
                 **({"error": errors[i.name]} if i.name in errors else {})} for i in self._info]  # fmt: skip


def _named_problem(item: Any) -> str | None:
    return None if isinstance(getattr(item, "name", None), str) and item.name else "it needs a non-empty `name`"


def _step_type_problem(item: Any) -> str | None:
    if not isinstance(item, StepType):
        return "step types must subclass dee.plugin.contracts.StepType (an instance)"
    return _named_problem(item)


def _gate_problem(item: Any) -> str | None:
    if not isinstance(item, PolicyGate):
        return "policy gates must subclass dee.plugin.contracts.PolicyGate (an instance)"
    return _named_problem(item)


def _adapter_problem(item: Any) -> str | None:
    if not isinstance(getattr(item, "channel", None), str) or item.channel not in CHANNELS:
        return f"a channel adapter's `channel` is one of {', '.join(CHANNELS)}"
    if not inspect.iscoroutinefunction(getattr(item, "send", None)):
        return "a channel adapter needs `async def send(request)`"
    return _named_problem(item)


def _store_problem(item: Any) -> str | None:
    if not (callable(getattr(item, "get", None)) and callable(getattr(item, "ids", None))):
        return "a template store needs `get(kind, template_id)` and `ids(kind)`"
    return _named_problem(item)


def _receiver_problem(item: Any) -> str | None:
    if not (callable(getattr(item, "verify", None)) and callable(getattr(item, "events", None))):
        return "a webhook receiver needs `verify(headers, body, url, now)` and `events(headers, body)`"
    name = getattr(item, "name", None)
    if not (isinstance(name, str) and RECEIVER_NAME.fullmatch(name)):
        return "a webhook receiver's `name` is lowercase letters, digits and '-' (its route is /webhooks/{name})"
    if name in BUILT_IN_PROVIDERS:
        return f"{name!r} is a provider the ingress knows itself"
    return None

