"""A running ingress over a real deployment, for the ingress tests: a daemon in this process
sending through the `smtp` adapter to aiosmtpd, the ingress on a loopback port, and the links
of a received email mapped onto that port (as a reverse proxy in front of the ingress would)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from dee import Engine, EngineConfig, load_plan
from dee.config import ChannelsConfig, EmailChannelConfig, IngressConfig, SenderConfig, VoiceChannelConfig
from dee.ingress.app import serve_ingress
from dee.ingress.server import Served
from dee.plugin.manager import PluginManager
from tests.peers.smtp import Recorder, free_port, smtp_server

OUTREACH = "config/plans/sales-outreach-v2.yaml"
VARS = {"product": "DEE"}
_LINK = re.compile(r'(?:href|src)="(https://t\.dee\.local/[^"]+)"')


@dataclass
class Deployment:
    engine: Engine
    served: Served
    mail: Recorder
    http: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.served.port}"

    def local(self, link: str) -> str:
        """A public link as a request to the ingress on loopback."""
        parts = urlsplit(link)
        return f"{self.base}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    async def enrol(self, contact_id: str, email: str | None = None) -> str:
        run = await self.engine.execute(load_plan(OUTREACH), {"id": contact_id, "email": email or f"{contact_id}@acme.test",
                                                               "attributes": {"company": "Acme"}}, VARS)  # fmt: skip
        await self.engine.run_until_idle()
        return run.id

    def email_of(self, run_id: str) -> Any:
        """The one email received for a run (its Message-ID names the run)."""
        found = [r.message for r in self.mail.received if f".{run_id}@" in str(r.message["Message-ID"])]
        assert len(found) == 1, f"{len(found)} emails for run {run_id}"
        return found[0]

    def links(self, run_id: str) -> dict[str, str]:
        """The email's pixel (`o`), first tracked link (`c`) and unsubscribe link (`u`)."""
        mail = self.email_of(run_id)
        html = mail.get_body(("html",)).get_content()
        found: dict[str, str] = {}
        for link in _LINK.findall(html):
            found.setdefault(urlsplit(link).path.split("/")[1], link.replace("&amp;", "&"))
        found["u"] = str(mail["List-Unsubscribe"]).strip("<>")
        return found

    async def event_log(self, run_id: str) -> list[tuple[str, str | None, dict[str, Any]]]:
        """The run's events as the kernel recorded them: type, the step they were matched to, data."""
        entries = [e for e in await self.engine.audit.get_by_run(run_id)
                   if e.action == "event.received" and e.output and "eventType" in e.output]  # fmt: skip
        return [(str(e.output["eventType"]), e.output.get("stepId"), dict((e.input or {}).get("data") or {})) for e in entries]

    async def events(self, run_id: str) -> list[str]:
        return [str((e.output or {}).get("eventType")) for e in await self.engine.audit.get_by_run(run_id)
                if e.action == "event.received"]  # fmt: skip


async def answer(response: aiohttp.ClientResponse) -> tuple[int, Any]:
    """A response's status and body (parsed when it is JSON)."""
    text = await response.text()
    return response.status, json.loads(text) if response.content_type == "application/json" else text


def ingress_config(base: EngineConfig, smtp_port: int, voice: VoiceChannelConfig | None = None, **ingress: Any) -> EngineConfig:
    email = EmailChannelConfig(adapter="smtp", smtp_port=smtp_port, smtp_timeout_ms=3000,
                               sender=SenderConfig(email="sales@acme.test", name="Acme Sales"))  # fmt: skip
    return msgspec.structs.replace(base, channels=ChannelsConfig(email=email, voice=voice or base.channels.voice),
                                   ingress=IngressConfig(**ingress))  # fmt: skip


@asynccontextmanager
async def running(config: EngineConfig, voice: VoiceChannelConfig | None = None, plugins: PluginManager | None = None,
                  **ingress: Any) -> AsyncIterator[Deployment]:  # fmt: skip
    """A daemon sending to aiosmtpd and an ingress in front of it (on a free port, its public
    URL that port unless given), with an HTTP client; `plugins`: the installed ones unless given."""
    port = free_port()
    ingress.setdefault("public_url", f"http://127.0.0.1:{port}")
    with smtp_server() as (mail, smtp_port):
        deployed = ingress_config(config, smtp_port, voice, **ingress)
        async with Engine(deployed, scheduler=True, plugins=plugins) as engine:
            backend = engine._backend
            served = await serve_ingress(engine, backend.config, backend.metrics, "127.0.0.1", port)  # type: ignore[attr-defined]
            try:
                async with aiohttp.ClientSession() as http:
                    yield Deployment(engine, served, mail, http)
            finally:
                await served.close()
