"""The stack of docker-compose.yml, run without Docker: its own commands and environments
(the image's ENV, then each service's), in the order its `depends_on` gives, as processes on
this machine. Only what a container network would answer is moved to loopback: `postgres` is
this machine's PostgreSQL (a database of the test's own), `redis` its Redis (a namespace of the
test's own), `mailpit` an SMTP server in this process (aiosmtpd), and each process gets a port
and an instance name of its own, as each container has its own address and host name.

`migrate` runs to completion, the two `dee` replicas and the `ingress` start and report ready
on their healthcheck's URL, the daemons split the partitions, then the `demo` service's command
enrols its sample contacts: every one of them gets the plan's first email, by SMTP, with
links to the stack's ingress, and the ingress accepts the one-click unsubscribe of one of them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from dee import Engine
from dee.config import EngineConfig
from dee.ops.bench.daemons import DaemonProcess, free_port
from dee.ops.cli import build_parser
from dee.ops.scratch import destroy_deployment
from dee.ops.simulate import contact_for
from dee.stores.postgres.admin import with_database
from tests.deploy.compose import container_env, load
from tests.integration.conftest import PG_DSN, REDIS_URL
from tests.peers.smtp import Recorder, smtp_server

SERVICES: dict[str, Any] = load()["services"]


class Stack:
    """The compose services' environments with the container network's names on loopback."""

    def __init__(self, app: Path, database: str, namespace: str, smtp_port: int, log_dir: Path) -> None:
        self.app, self.database, self.namespace, self.smtp_port, self.log_dir = app, database, namespace, smtp_port, log_dir
        self.processes: list[DaemonProcess] = []

    def env(self, service: str) -> dict[str, str]:
        env = container_env(SERVICES[service], self.app)
        assert urlsplit(env["DATABASE_URL"]).hostname == "postgres" and urlsplit(env["REDIS_URL"]).hostname == "redis"
        assert (env["DEE_CHANNELS_EMAIL_SMTP_HOST"], env["DEE_CHANNELS_EMAIL_SMTP_PORT"]) == ("mailpit", "1025")
        return {**env, "DATABASE_URL": self.database, "REDIS_URL": REDIS_URL, "DEE_NAMESPACE": self.namespace,
                "DEE_CHANNELS_EMAIL_SMTP_HOST": "127.0.0.1", "DEE_CHANNELS_EMAIL_SMTP_PORT": str(self.smtp_port)}  # fmt: skip

    def config(self) -> EngineConfig:
        return EngineConfig.load(env=self.env("dee"))

    def one_shot(self, service: str) -> subprocess.CompletedProcess[str]:
        """A `restart: "no"` service: its command, to the end."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("DEE_") and k not in ("DATABASE_URL", "REDIS_URL")}
        return subprocess.run([sys.executable, "-m", "dee", *SERVICES[service]["command"]], cwd=self.app,
                              env={**base, **self.env(service)}, capture_output=True, text=True, timeout=120)  # fmt: skip

    def start(self, service: str, instance: str) -> DaemonProcess:
        """One container of a long-running service; its metrics port stands for the image's 9464."""
        (command,) = SERVICES[service]["command"]
        process = DaemonProcess(self.config(), instance, self.log_dir, command, env=self.env(service))
        process.env.update(DEE_METRICS_PORT=str(process.metrics_port), DEE_INSTANCE=instance)
        if service == "ingress":
            self.ingress_port = free_port()
            process.env["DEE_INGRESS_PORT"] = str(self.ingress_port)
        process.start()
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(f"----- {p.instance} -----\n{p.log_path.read_text(errors='replace')[-4000:]}"
                         for p in self.processes if p.log_path.exists())  # fmt: skip


async def until(check: Callable[[], Awaitable[Any]], what: str, stack: Stack, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in stack.processes:
            process.check_alive()
        if result := await check():
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{stack.logs()}")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, Recorder]]:
    name = f"dee_compose_{uuid.uuid4().hex[:12]}"
    with smtp_server() as (server, port):
        built = Stack(tmp_path / "app", with_database(PG_DSN, name), name, port, tmp_path)
        try:
            yield built, server
        finally:
            for process in built.processes:
                await process.stop()
            await destroy_deployment(built.config())
            print(built.logs())


async def test_the_demo_mails_every_sample_contact_through_the_stacks_daemons(stack: tuple[Stack, Recorder]) -> None:
    built, server = stack
    migrated = built.one_shot("migrate")
    assert migrated.returncode == 0 and "applied:" in migrated.stdout, migrated.stderr
    daemons = [built.start("dee", f"dee-{k}") for k in (1, 2)]  # deploy.replicas: 2
    ingress = built.start("ingress", "ingress-1")
    async with aiohttp.ClientSession() as http:

        async def ready(process: DaemonProcess) -> bool:
            try:
                async with http.get(f"http://127.0.0.1:{process.metrics_port}/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientConnectionError:
                return False

        for process in [*daemons, ingress]:
            await until(lambda p=process: ready(p), f"{process.instance} to be ready", built)

        async def split() -> bool:
            owners = await asyncpg.connect(built.database)
            try:
                rows = await owners.fetch("SELECT DISTINCT owner FROM partitions WHERE lease_until > now()")
            finally:
                await owners.close()
            return {r["owner"] for r in rows} == {"dee-1", "dee-2"}

        await until(split, "both replicas to own partitions", built)
        demo = await asyncio.to_thread(built.one_shot, "demo")
        args = build_parser().parse_args(SERVICES["demo"]["command"])
        assert demo.returncode == 0, demo.stderr
        assert demo.stdout.strip() == (f"sales-outreach-v2: {args.sample} run(s) started, 0 skipped "
                                       "(already enrolled or suppressed), 0 refused")  # fmt: skip

        async def delivered() -> bool:
            return len(server.received) >= args.sample

        await until(delivered, f"{args.sample} emails at the SMTP server", built)
        await asyncio.sleep(1)  # nothing more arrives: one email per contact, not a copy per daemon
        expected = {str(contact_for(i)["email"]) for i in range(args.sample)}
        assert sorted(r.recipients[0] for r in server.received) == sorted(expected)
        config = built.config()
        public = config.ingress.public_url
        for received in server.received:
            mail = received.message
            assert mail["From"] == f"{config.channels.email.sender.name} <{config.channels.email.sender.email}>"
            assert mail["Subject"].startswith("DEE for Company ")
            assert mail["List-Unsubscribe"].startswith(f"<{public}/u/")
        assert len(server.by_message_id()) == args.sample

        first = server.received[0]
        unsubscribe = first.message["List-Unsubscribe"].strip("<>").replace(public, f"http://127.0.0.1:{built.ingress_port}")
        async with http.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}) as response:
            assert response.status == 200, await response.text()
    contact = first.recipients[0].split("@")[0]
    async with Engine(config, scheduler=False) as client:
        (run,) = (await client.list_runs(contact_id=contact)).runs
        assert (run.status, run.outcome) in (("completed", "unsubscribed"), ("cancelled", None))
        others = (await client.list_runs(status="waiting")).total
        assert others == args.sample - 1  # the rest wait for their follow-up, days from now
    for process in built.processes:
        await process.stop()
        assert process.proc is not None and process.proc.returncode == 0, built.logs()
