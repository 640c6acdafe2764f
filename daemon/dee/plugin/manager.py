"""A small typed wrapper around pluggy: one method per hook, fail-closed loading.

Plugins are found through the `dee` entry-point group, built-ins included, so `dee plugins`
shows exactly what the daemon will run and where each piece came from.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pluggy

from dee.errors import ConfigError, PluginError
from dee.plugin import hookspecs
from dee.plugin.contracts import ChannelAdapter, StepType, TemplateStore

ENTRY_POINT_GROUP = "dee"
CHANNELS = ("email", "voice")  # the channels a deployment configures (`[channels.email]`, ...)


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
        manager = cls()
        skip = set(disabled)
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in skip:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # any import failure is the plugin's, reported by name
                raise PluginError(ep.name, f"failed to import {ep.value}: {exc!r}") from exc
            dist = ep.dist
            source = f"entry point of {dist.name} {dist.version}" if dist else "entry point"
            manager.register(ep.name, plugin, source)
        for name, plugin in extra:
            manager.register(name, plugin, "registered in code")
        manager.check()
        return manager

    def register(self, name: str, plugin: object, source: str = "registered in code") -> None:
        if self._pm.has_plugin(name):
            raise PluginError(name, "a plugin with this name is already registered")
        self._pm.register(plugin, name=name)
        module = getattr(plugin, "__name__", type(plugin).__module__)
        self._info.append(PluginInfo(name, source, module))

    def check(self) -> None:
        """Refuse hook implementations that match no hookspec (typos would silently do nothing),
        and duplicate names among step types and template stores."""
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(self._pm.get_name(exc.plugin) or "?", str(exc)) from exc
        self.step_types()
        self.template_stores(None)

    @property
    def plugins(self) -> list[PluginInfo]:
        return list(self._info)

    def _collect(self, results: Iterable[tuple[str, list[Any]]], what: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        owner: dict[str, str] = {}
        for plugin_name, items in results:
            for item in items or []:
                name = item.name
                if name in found:
                    raise PluginError(plugin_name, f"{what} {name!r} is already provided by {owner[name]!r}")
                found[name] = item
                owner[name] = plugin_name
        return found

    def _per_plugin(self, hook: str, **kwargs: Any) -> list[tuple[str, list[Any]]]:
        out: list[tuple[str, list[Any]]] = []
        for impl in getattr(self._pm.hook, hook).get_hookimpls():
            args = {k: kwargs[k] for k in impl.argnames}
            out.append((impl.plugin_name, impl.function(**args)))
        return out

    def step_types(self) -> dict[str, StepType]:
        found = self._collect(self._per_plugin("dee_step_types"), "step type")
        for name, step_type in found.items():
            if not isinstance(step_type, StepType):
                raise PluginError(name, "step types must subclass dee.plugin.contracts.StepType")
        return found

    def channel_adapters(self, config: Any) -> dict[tuple[str, str], ChannelAdapter]:
        adapters: dict[tuple[str, str], ChannelAdapter] = {}
        for plugin_name, items in self._per_plugin("dee_channel_adapters", config=config):
            for adapter in items or []:
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
        return self._collect(self._per_plugin("dee_template_stores", config=config), "template store")

    def policy_gates(self, config: Any) -> dict[str, Any]:
        return self._collect(self._per_plugin("dee_policy_gates", config=config), "policy gate")

    def startup(self, engine: Any) -> None:
        self._pm.hook.dee_startup(engine=engine)

    def shutdown(self, engine: Any) -> None:
        self._pm.hook.dee_shutdown(engine=engine)

    def describe(self) -> list[dict[str, Any]]:
        """What each plugin provides, for `dee plugins`."""
        provided: dict[str, list[str]] = {info.name: [] for info in self._info}
        for plugin_name, items in self._per_plugin("dee_step_types"):
            provided[plugin_name] += [f"step type {i.name}" for i in items or []]
        for plugin_name, items in self._per_plugin("dee_channel_adapters", config=None):
            provided[plugin_name] += [f"{i.channel} adapter {i.name}" for i in items or []]
        for plugin_name, items in self._per_plugin("dee_template_stores", config=None):
            provided[plugin_name] += [f"template store {i.name}" for i in items or []]
        return [
            {"name": i.name, "source": i.source, "module": i.module, "provides": provided[i.name]}
            for i in self._info
        ]

