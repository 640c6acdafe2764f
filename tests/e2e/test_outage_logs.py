"""A Redis outage in a running daemon is two log lines, not a traceback per retry: one warning
when it starts and one when it ends. Redis is reached through a TCP proxy on loopback that
the test cuts (every connection dropped, new ones refused) and restores; the daemon keeps
working once Redis answers again, and nothing it was asked is lost."""

from __future__ import annotations

import asyncio
import contextlib

from dee import EngineConfig, load_plan
from tests.e2e.conftest import DaemonFactory, engine_client, wait_for

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
OUTAGE_S = 4.0


class Proxy:
    """Forwards a loopback port to Redis until cut."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(REDIS_HOST, REDIS_PORT)
        self.links |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.links):
            writer.transport.abort()
        self.links.clear()
        await self.server.wait_closed()

    async def stop(self) -> None:
        if self.server is not None:
            await self.cut()


async def test_a_redis_outage_is_logged_when_it_starts_and_when_it_ends(e2e_deployment: EngineConfig, daemons: DaemonFactory) -> None:
    proxy = Proxy()
    await proxy.start()
    try:
        daemon = daemons("outage")
        daemon.env["REDIS_URL"] = f"redis://127.0.0.1:{proxy.port}/0"
        daemon.start()
        config = e2e_deployment  # the client talks to Redis directly
        async with engine_client(config) as engine:
            plan = load_plan("config/plans/welcome-sequence.yaml")
            contact = {"id": "o-1", "email": "o1@example.com", "attributes": {"first_name": "Ola"}}
            run = await engine.execute(plan, contact, {"product": "DEE"})
            await engine.run_until_idle()
            await proxy.cut()
            await asyncio.sleep(OUTAGE_S)
            await proxy.start()  # the same port again
            await engine.ingest_event("email.opened", "o-1", {}, run_id=run.id, step_id="welcome-email", event_id="o-open")
            await engine.run_until_idle()
            events = await engine.audit.query(run_id=run.id, actions=["event.received"])
            assert [e.input["type"] for e in events if e.input] == ["email.opened"]  # type: ignore[index]

        def outage_lines() -> list[str]:
            return [line for line in daemon.log().splitlines() if "Redis unavailable" in line or "Redis available again" in line]

        async def both_logged() -> bool:
            return len(outage_lines()) >= 2

        await wait_for(both_logged, 10, "the outage's two lines")
        log = daemon.log()
        lines = outage_lines()
        assert len(lines) == 2, lines
        assert "WARNING" in lines[0] and "Redis unavailable" in lines[0]
        assert "Redis available again after" in lines[1]
        assert "Traceback" not in log, log[-3000:]
        assert log.count("WARNING") <= 4, log[-3000:]  # the outage's two, and at most a lease's loss and retaking
    finally:
        await proxy.stop()
