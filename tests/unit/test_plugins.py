"""Plugins (SPEC 10, DESIGN 6; dee.plugin): entry-point discovery, fail-closed loading, unique
names, and a third-party step type running end to end in a plan."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dee import Engine, EngineConfig, PluginError, SchedulerConfig, create_plan, steps
from dee.config import PluginsConfig
from dee.kernel.context import StepContext
from dee.kernel.outcomes import Done, StepOutcome
from dee.plugin import hookimpl
from dee.plugin.contracts import StepType
from dee.plugin.manager import ENTRY_POINT_GROUP, PluginManager

VERSION = importlib.metadata.version("dee")
BUILTINS = [
    {"name": "dee_email", "source": f"entry point of dee {VERSION}", "module": "dee_email",
     "provides": ["step type sendEmail", "email adapter simulated", "email adapter smtp"]},
    {"name": "dee_flow", "source": f"entry point of dee {VERSION}", "module": "dee_flow",
     "provides": ["step type wait", "step type branch", "step type end"]},
    {"name": "dee_policy", "source": f"entry point of dee {VERSION}", "module": "dee_policy",
     "provides": ["policy gate consent", "policy gate suppression", "policy gate calling-hours"]},
    {"name": "dee_voice", "source": f"entry point of dee {VERSION}", "module": "dee_voice",
     "provides": ["step type sendVoice", "voice adapter simulated", "voice adapter twilio"]},
]  # fmt: skip


# ---- a throwaway third-party plugin -----------------------------------------------------------


class TagParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tag: str


class TagStep(StepType):
    """Tags the run: finishes at once with outcome `tagged:<tag>` and the contact id as data."""

    name = "tag"
    params_type = TagParams

    def check(self, params: TagParams, templates: Any) -> list[str]:
        return [] if params.tag else ["a tag cannot be empty"]

    def enter(self, ctx: StepContext, params: TagParams) -> StepOutcome:
        return Done(f"tagged:{params.tag}", data={"contact": ctx.contact.id, "tick": ctx.tick})


class TagPlugin:
    @hookimpl
    def dee_step_types(self) -> list[StepType]:
        return [TagStep()]


class OtherTagPlugin:
    @hookimpl
    def dee_step_types(self) -> list[StepType]:
        return [TagStep()]


class TypoPlugin:
    @hookimpl
    def dee_step_type(self) -> list[StepType]:  # the hook is dee_step_types
        return [TagStep()]


class Store:
    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text

    def get(self, kind: str, template_id: str) -> dict[str, str] | None:
        return {"text": self.text} if (kind, template_id) == ("email", "tmpl_shared") else None

    def ids(self, kind: str) -> list[str]:
        return ["tmpl_shared"] if kind == "email" else []


class StorePlugin:
    def __init__(self, store: Store) -> None:
        self.store = store

    @hookimpl
    def dee_template_stores(self, config: Any) -> list[Any]:
        return [self.store]


# ---- built-ins through entry points -----------------------------------------------------------


def test_the_builtins_are_registered_as_entry_points_of_the_dee_distribution() -> None:
    found = sorted((ep.name, ep.value) for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    assert found == [("dee_email", "dee_email"), ("dee_flow", "dee_flow"), ("dee_policy", "dee_policy"), ("dee_voice", "dee_voice")]


def test_describe_lists_the_builtins_and_where_they_came_from() -> None:
    manager = PluginManager.load()
    assert manager.describe(EngineConfig()) == BUILTINS
    assert [(p.name, p.source) for p in manager.plugins] == [(b["name"], b["source"]) for b in BUILTINS]


def test_the_builtins_provide_the_core_step_types_and_adapters() -> None:
    manager = PluginManager.load()
    assert sorted(manager.step_types()) == ["branch", "end", "sendEmail", "sendVoice", "wait"]
    adapters = sorted(manager.channel_adapters(EngineConfig()))
    assert adapters == [("email", "simulated"), ("email", "smtp"), ("voice", "simulated"), ("voice", "twilio")]


def test_a_disabled_builtin_is_not_loaded() -> None:
    manager = PluginManager.load(disabled=["dee_voice"])
    assert [p["name"] for p in manager.describe(EngineConfig())] == ["dee_email", "dee_flow", "dee_policy"]
    assert "sendVoice" not in manager.step_types()


# ---- a third-party step type end to end ----------------------------------------------------


def test_an_extra_plugin_is_described_as_registered_in_code() -> None:
    manager = PluginManager.load(extra=[("dee_tag", TagPlugin())])
    assert manager.describe(EngineConfig())[-1] == {
        "name": "dee_tag", "source": "registered in code", "module": __name__, "provides": ["step type tag"],
    }  # fmt: skip
    assert manager.describe(EngineConfig())[:4] == BUILTINS
    assert isinstance(manager.step_types()["tag"], TagStep)


async def test_a_plugin_step_type_runs_end_to_end_in_a_plan() -> None:
    manager = PluginManager.load(extra=[("dee_tag", TagPlugin())])
    plan = create_plan(
        id="tagging",
        name="Tagging",
        steps=[steps.custom("tag-vip", "tag", tag="vip"), steps.end("done", outcome="tagged")],
        plugins=manager,
    )
    config = EngineConfig(database="memory://", scheduler=SchedulerConfig(clock="manual"))
    async with Engine(config, plugins=manager) as engine:
        run = await engine.execute(plan, {"id": "c1", "email": "a@acme.test"})
        await engine.run_until_idle()
        done = await engine.get_run(run.id)
        assert (done.status, done.outcome, done.steps_completed) == ("completed", "tagged", 2)
        lines = await engine.get_timeline(run.id)
        assert [(t.step, t.action, t.outcome) for t in lines] == [
            (None, "run.started", "pending"),
            ("tag-vip", "step.entered", None),
            ("tag-vip", "step.executed", "tagged:vip"),
            ("done", "step.entered", None),
            ("done", "step.executed", "tagged"),
            ("done", "run.completed", "tagged"),
        ]
        tagged = lines[2]
        assert tagged.data == {"type": "tag", "tick": 0, "contact": "c1"}
        assert (await engine.replay(run.id)).identical is True
        assert (await engine.verify_audit_chain(run.id)).valid is True


def test_a_plan_using_a_step_type_nobody_provides_is_invalid() -> None:
    from dee import PlanValidationError

    with pytest.raises(PlanValidationError) as caught:
        create_plan(id="tagging", name="Tagging", steps=[steps.custom("tag-vip", "tag", tag="vip")],
                    plugins=PluginManager.load())  # fmt: skip
    assert [p.step_id for p in caught.value.problems] == ["tag-vip"]


def test_a_plugin_step_types_own_check_runs_at_plan_creation() -> None:
    from dee import PlanValidationError

    manager = PluginManager.load(extra=[("dee_tag", TagPlugin())])
    with pytest.raises(PlanValidationError) as caught:
        create_plan(id="tagging", name="Tagging", steps=[steps.custom("tag-vip", "tag", tag="")], plugins=manager)
    assert [(p.step_id, p.message) for p in caught.value.problems] == [("tag-vip", "a tag cannot be empty")]


# ---- name clashes and typos stop loading -------------------------------------------------------


def test_two_plugins_providing_the_same_step_type_name_the_later_one() -> None:
    with pytest.raises(PluginError) as caught:
        PluginManager.load(extra=[("dee_tag", TagPlugin()), ("dee_tag_copy", OtherTagPlugin())])
    # dee_tag came first and owns "tag"; dee_tag_copy is the one that clashes
    assert caught.value.plugin == "dee_tag_copy"
    assert str(caught.value) == "plugin 'dee_tag_copy': step type 'tag' is already provided by 'dee_tag'"


def test_a_plugin_redefining_a_builtin_step_type_is_refused() -> None:
    class WaitAgain:
        @hookimpl
        def dee_step_types(self) -> list[StepType]:
            step = TagStep()
            step.name = "wait"  # type: ignore[misc]
            return [step]

    with pytest.raises(PluginError) as caught:
        PluginManager.load(extra=[("dee_wait2", WaitAgain())])
    assert caught.value.plugin == "dee_wait2"
    assert "step type 'wait' is already provided by 'dee_flow'" in str(caught.value)


def test_a_duplicate_plugin_name_is_refused() -> None:
    with pytest.raises(PluginError) as caught:
        PluginManager.load(extra=[("dee_flow", TagPlugin())])
    assert caught.value.plugin == "dee_flow"
    assert str(caught.value) == "plugin 'dee_flow': a plugin with this name is already registered"

    with pytest.raises(PluginError) as again:
        PluginManager.load(extra=[("dee_tag", TagPlugin()), ("dee_tag", OtherTagPlugin())])
    assert again.value.plugin == "dee_tag"


def test_a_hookimpl_with_a_typo_in_the_hook_name_stops_loading_naming_the_plugin() -> None:
    with pytest.raises(PluginError) as caught:
        PluginManager.load(extra=[("dee_typo", TypoPlugin())])
    assert "unknown hook 'dee_step_type'" in str(caught.value)
    assert caught.value.plugin == "dee_typo"


def test_template_stores_are_asked_in_registration_order(tmp_path: Path) -> None:
    # hookspecs.dee_template_stores: "Stores are asked in registration order; the first that
    # knows an id answers."
    manager = PluginManager.load(extra=[("first", StorePlugin(Store("store-a", "from a"))),
                                        ("second", StorePlugin(Store("store-b", "from b")))])  # fmt: skip
    assert list(manager.template_stores(None)) == ["store-a", "store-b"]
    engine = Engine(EngineConfig(database="memory://", config_dir=str(tmp_path)), plugins=manager)  # no templates of its own
    assert engine.templates.get("email", "tmpl_shared") == {"text": "from a"}


def test_two_template_stores_with_one_name_are_refused() -> None:
    # stores are built from the deployment's config, so the engine asks for them (and refuses)
    manager = PluginManager.load(extra=[("first", StorePlugin(Store("shared", "a"))), ("second", StorePlugin(Store("shared", "b")))])
    with pytest.raises(PluginError) as caught:
        Engine(EngineConfig(database="memory://"), plugins=manager)
    assert caught.value.plugin == "second"
    assert "template store 'shared' is already provided by" in str(caught.value)


def test_an_object_that_is_not_a_step_type_is_refused() -> None:
    class NotAStep:
        name = "fake"

    class Bad:
        @hookimpl
        def dee_step_types(self) -> list[Any]:
            return [NotAStep()]

    with pytest.raises(PluginError) as caught:
        PluginManager.load(extra=[("dee_bad", Bad())])
    assert "step types must subclass dee.plugin.contracts.StepType" in str(caught.value)


# ---- a broken entry point ----------------------------------------------------------------------

BROKEN = importlib.metadata.EntryPoint(name="dee_broken", value="dee_broken_not_installed_anywhere", group="dee")


@pytest.fixture
def broken_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.entry_points

    def entry_points(**selection: Any) -> Any:
        found = list(real(**selection))
        return [*found, BROKEN] if selection.get("group") == ENTRY_POINT_GROUP else found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_the_broken_entry_point_really_fails_to_import() -> None:
    with pytest.raises(ImportError):
        BROKEN.load()


@pytest.mark.usefixtures("broken_entry_point")
def test_a_plugin_that_fails_to_import_stops_loading_naming_it() -> None:
    with pytest.raises(PluginError) as caught:
        PluginManager.load()
    assert caught.value.plugin == "dee_broken"
    assert str(caught.value).startswith("plugin 'dee_broken': failed to import dee_broken_not_installed_anywhere: ")
    assert isinstance(caught.value.__cause__, ImportError)


@pytest.mark.usefixtures("broken_entry_point")
def test_a_broken_plugin_stops_the_engine_from_starting() -> None:
    with pytest.raises(PluginError) as caught:
        Engine(EngineConfig(database="memory://"))
    assert caught.value.plugin == "dee_broken"


@pytest.mark.usefixtures("broken_entry_point")
def test_a_broken_plugin_that_is_disabled_is_skipped() -> None:
    manager = PluginManager.load(disabled=("dee_broken",))
    assert manager.describe(EngineConfig()) == BUILTINS


@pytest.mark.usefixtures("broken_entry_point")
async def test_an_engine_starts_when_config_disables_the_broken_plugin() -> None:
    config = EngineConfig(database="memory://", scheduler=SchedulerConfig(clock="manual"),
                          plugins=PluginsConfig(disabled=("dee_broken",)))  # fmt: skip
    async with Engine(config) as engine:
        assert [p["name"] for p in engine.plugins.describe(EngineConfig())] == ["dee_email", "dee_flow", "dee_policy", "dee_voice"]


# ---- the hooks as a contract: documented, called, their answers checked -----------------------


class RecordingPlugin:
    """Implements every hook and records how DEE called it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @hookimpl
    def dee_step_types(self) -> list[StepType]:
        self.calls.append(("dee_step_types", None))
        return []

    @hookimpl
    def dee_channel_adapters(self, config: EngineConfig) -> list[Any]:
        self.calls.append(("dee_channel_adapters", config))
        return []

    @hookimpl
    def dee_policy_gates(self, config: EngineConfig) -> list[Any]:
        self.calls.append(("dee_policy_gates", config))
        return []

    @hookimpl
    def dee_template_stores(self, config: EngineConfig) -> list[Any]:
        self.calls.append(("dee_template_stores", config))
        return []

    @hookimpl
    def dee_webhook_receivers(self, config: EngineConfig) -> list[Any]:
        self.calls.append(("dee_webhook_receivers", config))
        return []

    @hookimpl
    def dee_startup(self, engine: Engine) -> None:
        self.calls.append(("dee_startup", engine))

    @hookimpl
    def dee_shutdown(self, engine: Engine) -> None:
        self.calls.append(("dee_shutdown", engine))


def hook_names() -> list[str]:
    from dee.plugin import hookspecs

    return sorted(name for name in vars(hookspecs) if name.startswith("dee_"))


def test_every_hook_is_documented_for_plugin_authors() -> None:
    import inspect

    from dee.plugin import hookspecs

    for name in hook_names():
        spec = getattr(hookspecs, name)
        doc = inspect.getdoc(spec) or ""
        assert len(doc) > 80, f"{name} needs a docstring a plugin author can work from"
        assert spec.__annotations__.get("return"), f"{name} needs a typed return"
        assert all(spec.__annotations__.get(p) for p in inspect.signature(spec).parameters), f"{name}: typed parameters"


async def test_every_hook_is_called_and_providers_get_the_deployments_config() -> None:
    plugin = RecordingPlugin()
    manager = PluginManager.load(extra=[("recorder", plugin)])
    config = EngineConfig(database="memory://", namespace="recorded")
    async with Engine(config, plugins=manager) as engine:
        pass
    assert manager.describe(config)[-1]["name"] == "recorder"
    called = {name for name, _ in plugin.calls}
    assert called == set(hook_names())
    assert all(arg is config for name, arg in plugin.calls
               if name in ("dee_channel_adapters", "dee_template_stores", "dee_policy_gates", "dee_webhook_receivers"))  # fmt: skip
    assert [arg for name, arg in plugin.calls if name in ("dee_startup", "dee_shutdown")] == [engine, engine]


class Returns:
    def __init__(self, hook: str, value: Any) -> None:
        self.hook, self.value = hook, value

    @hookimpl
    def dee_channel_adapters(self, config: EngineConfig) -> Any:
        return self.value if self.hook == "adapters" else []

    @hookimpl
    def dee_webhook_receivers(self, config: EngineConfig) -> Any:
        return self.value if self.hook == "receivers" else []

    @hookimpl
    def dee_template_stores(self, config: EngineConfig) -> Any:
        if self.hook == "raises":
            raise RuntimeError("cannot reach the template service")
        return self.value if self.hook == "stores" else []


class NotAnAdapter:
    name, channel = "sync", "email"

    def send(self, request: Any) -> Any:  # not async
        return None


class Receiver:
    def __init__(self, name: str) -> None:
        self.name = name

    def verify(self, headers: Any, body: bytes, url: str, now: float) -> None:
        return None

    def events(self, headers: Any, body: bytes) -> list[Any]:
        return []


def test_dee_plugins_lists_a_plugins_webhook_receivers() -> None:
    manager = PluginManager.load(extra=[("dee_acme", Returns("receivers", [Receiver("acme-esp")]))])
    [acme] = [p for p in manager.describe(EngineConfig()) if p["name"] == "dee_acme"]
    assert acme["provides"] == ["webhook receiver acme-esp"]
    assert list(manager.webhook_receivers(EngineConfig())) == ["acme-esp"]


@pytest.mark.parametrize(("hook", "value", "says"), [
    ("adapters", [NotAnAdapter()], "needs `async def send(request)`"),
    ("adapters", "smtp", "must return a list"),
    ("stores", [object()], "needs `get(kind, template_id)` and `ids(kind)`"),
    ("raises", None, "dee_template_stores raised RuntimeError: cannot reach the template service"),
    ("receivers", [object()], "needs `verify(headers, body, url, now)` and `events(headers, body)`"),
    ("receivers", [Receiver("sendgrid")], "'sendgrid' is a provider the ingress knows itself"),
    ("receivers", [Receiver("Acme/ESP")], "lowercase letters, digits and '-'"),
    ("receivers", [Receiver("acme"), Receiver("acme")], "webhook receiver 'acme' is already provided by 'dee_acme'"),
])  # fmt: skip
def test_what_a_plugin_returns_is_checked_and_the_error_names_the_plugin(hook: str, value: Any, says: str) -> None:
    manager = PluginManager.load(extra=[("dee_acme", Returns(hook, value))])
    with pytest.raises(PluginError) as caught:
        Engine(EngineConfig(database="memory://"), plugins=manager)
    assert caught.value.plugin == "dee_acme" and says in str(caught.value)
