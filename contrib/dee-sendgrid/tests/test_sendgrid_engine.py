"""The plugin in an engine: selected by `[channels.email] adapter`, configured by its own
`[plugins.dee_sendgrid]` table, and sending a plan's emails to the fake API."""

from __future__ import annotations

import dee_sendgrid
import pytest
from fake_sendgrid import FakeSendGrid

from dee import Engine, EngineConfig, load_plan
from dee.errors import PluginError
from dee.plugin.manager import PluginManager

PLAN = "config/plans/welcome-sequence.yaml"


def config(fake: FakeSendGrid, adapter: str = "sendgrid", **settings: str) -> EngineConfig:
    return EngineConfig.from_dict({
        "database": "memory://", "scheduler": {"clock": "manual"}, "channels": {"email": {"adapter": adapter}},
        "plugins": {"dee_sendgrid": {"api_key": fake.api_key, "base_url": fake.url, **settings}},
    })  # fmt: skip


def plugins() -> PluginManager:
    return PluginManager.load(extra=[("dee_sendgrid", dee_sendgrid)])


async def test_a_plans_emails_go_through_sendgrid(sendgrid: FakeSendGrid) -> None:
    async with Engine(config(sendgrid), plugins=plugins()) as engine:
        runs = [await engine.execute(load_plan(PLAN), {"id": f"c{i}", "email": f"c{i}@acme.test",
                                                       "attributes": {"first_name": f"C{i}"}}, {"product": "DEE"})
                for i in range(3)]  # fmt: skip
        await engine.run_until_idle()
        await engine.advance_clock(86_400)
        await engine.run_until_idle()
        assert {(await engine.get_run(r.id)).current_step for r in runs} == {"wait-6-days"}
    sent = [(b["personalizations"][0]["to"][0]["email"], b["subject"]) for b in sendgrid.accepted]
    assert sorted(sent) == sorted([(f"c{i}@acme.test", s) for i in range(3) for s in
                                   ("Welcome to DEE, C" + str(i), "Three things to try in DEE")])  # fmt: skip


def test_selected_without_a_key_it_stops_start_up_naming_the_plugin(sendgrid: FakeSendGrid) -> None:
    broken = EngineConfig.from_dict({"database": "memory://", "channels": {"email": {"adapter": "sendgrid"}}})
    with pytest.raises(PluginError, match=r"plugin .dee_sendgrid.: dee_channel_adapters raised ValueError: .*needs api_key"):
        plugins().selected_adapters(broken)
    # installed but not selected, it needs no key and is still listed
    assert ("email", "sendgrid") in plugins().channel_adapters(EngineConfig(database="memory://"))
