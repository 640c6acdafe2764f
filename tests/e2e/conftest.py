"""End-to-end set-up: `dee run` as real subprocesses against the real PostgreSQL and Redis.

Each test gets a fresh, migrated deployment (its own database and Redis namespace, 16
partitions, a manual clock, a short lease TTL) and a `daemons` factory. Every daemon's output
goes to a log file (all incarnations of one instance in one file); at teardown any daemon still
running is killed and the logs are printed, which pytest shows for a failing test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dee import Engine
from dee.bus import connect as redis_connect
from dee.bus.streams import Keys
from dee.config import EngineConfig
from dee.ops.scratch import scratch_deployment
from tests.integration.conftest import deployment_config

REPO = Path(__file__).resolve().parents[2]
LEASE_TTL_MS = 1500
PARTITIONS = 16


def daemon_env(config: EngineConfig, instance: str) -> dict[str, str]:
    """The environment of one `dee run`: this deployment, this stable instance name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEE_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({
        "DATABASE_URL": config.database,
        "REDIS_URL": config.redis,
        "DEE_NAMESPACE": config.namespace,
        "DEE_SCHEDULER_CLOCK": config.scheduler.clock,
        "DEE_SCHEDULER_PARTITIONS": str(config.scheduler.partitions),
        "DEE_SCHEDULER_LEASE_TTL_MS": str(config.scheduler.lease_ttl_ms),
        "DEE_INSTANCE": instance,
        "DEE_METRICS_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    })  # fmt: skip
    return env


class Daemon:
    """One daemon slot: a stable instance name that can be started, killed and restarted."""

    def __init__(self, config: EngineConfig, instance: str, log_dir: Path) -> None:
        self.config = config
        self.instance = instance
        self.env = daemon_env(config, instance)
        self.log_path = log_dir / f"{instance}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.alive, f"{self.instance} is already running"
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {self.instance}: start #{self.starts} at {time.time():.3f} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dee", "run"], cwd=REPO, env=self.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    async def kill(self) -> None:
        """SIGKILL: no drain, no lease hand-back, nothing flushed."""
        assert self.proc is not None and self.alive, f"{self.instance} is not running"
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait)
        self.kills += 1
        self.note(f"SIGKILL at {time.time():.3f}")

    def note(self, line: str) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {self.instance}: {line} =====\n".encode())

    async def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for the exit code (the daemon drains first)."""
        assert self.proc is not None and self.alive, f"{self.instance} is not running"
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop_now(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()


DaemonFactory = Callable[[str], Daemon]


@pytest.fixture
async def e2e_deployment(request: pytest.FixtureRequest) -> AsyncIterator[EngineConfig]:
    """A migrated, empty deployment: 16 partitions, manual clock, 1.5 s leases (options from
    `@pytest.mark.deployment(...)`)."""
    marker = request.node.get_closest_marker("deployment")
    options = {"partitions": PARTITIONS, "lease_ttl_ms": LEASE_TTL_MS, **(marker.kwargs if marker else {})}
    config = deployment_config(f"dee_e2e_{uuid.uuid4().hex[:12]}", **options)
    async with scratch_deployment(config):
        yield config


@pytest.fixture
def daemons(e2e_deployment: EngineConfig, tmp_path: Path) -> Iterator[DaemonFactory]:
    """`daemons("a")` makes a daemon slot for instance `a` (not started yet)."""
    made: list[Daemon] = []

    def make(instance: str) -> Daemon:
        daemon = Daemon(e2e_deployment, instance, tmp_path)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.stop_now()
    for daemon in made:
        text = daemon.log()
        lines = text.splitlines()
        print(f"\n---------- log of daemon {daemon.instance} ({daemon.starts} starts, {daemon.kills} kills; "
              f"last 300 of {len(lines)} lines) ----------")  # fmt: skip
        print("\n".join(lines[-300:]))


# ---- helpers ------------------------------------------------------------------------------------


async def wait_for(check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}; last value: {last!r}")


async def lease_table(database: str) -> list[asyncpg.Record]:
    """partition, owner, epoch, whether the lease is unexpired (database clock), lease_until."""
    conn = await asyncpg.connect(database)
    try:
        return await conn.fetch(
            "SELECT partition, owner, epoch, lease_until > now() AS live, lease_until FROM partitions ORDER BY partition"
        )
    finally:
        await conn.close()


async def owners(database: str) -> dict[int, str | None]:
    """partition -> owner holding an unexpired lease (None when free or expired)."""
    return {r["partition"]: (r["owner"] if r["live"] else None) for r in await lease_table(database)}


async def simulated_sends(config: EngineConfig) -> dict[str, int]:
    """Idempotency key -> how often the simulated email and voice adapters sent it (their
    ledgers), through a client of the deployment's Redis (a single server or a cluster)."""
    redis = redis_connect.client(config.redis, max_connections=4)
    try:
        sent: dict[str, int] = {}
        for channel in ("email", "voice"):
            raw = await redis.hgetall(Keys(config.namespace).simulated(channel, "sends"))
            sent.update({k.decode().split("#")[0]: int(v) for k, v in raw.items()})
        return sent
    finally:
        await redis.aclose()


async def has_work(db: asyncpg.Pool | asyncpg.Connection) -> bool:
    """Something accepted and not yet fully processed: inbox or outbox rows, a run waiting for a
    channel result, or a timer due at the deployment's current tick."""
    return bool(await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM inbox) OR EXISTS (SELECT 1 FROM outbox) OR EXISTS "
        "(SELECT 1 FROM runs r, dee_meta m WHERE r.awaiting OR (r.wake_tick <= m.manual_tick AND r.status <> 'paused'))"
    ))  # fmt: skip


async def when_busy(db: asyncpg.Pool | asyncpg.Connection, timeout: float = 5.0) -> bool:
    """Wait (briefly) for a moment with work in progress; False if none came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await has_work(db):
            return True
        await asyncio.sleep(0.002)
    return False


@asynccontextmanager
async def engine_client(config: EngineConfig) -> AsyncIterator[Engine]:
    """`Engine(config, scheduler=False)` whose closing is bounded: a close that hangs fails the
    test (after the engine's background tasks were forced to end) instead of hanging the suite."""
    engine = Engine(config, scheduler=False)
    await engine.__aenter__()
    try:
        yield engine
    finally:
        await close_engine(engine)


async def close_engine(engine: Engine, timeout: float = 10.0) -> None:
    closing = asyncio.ensure_future(engine.__aexit__(None, None, None))
    done, _ = await asyncio.wait({closing}, timeout=timeout)
    if done:
        closing.result()
        return
    stuck = [t.get_name() for t in getattr(engine._backend, "_tasks", []) if not t.done()]
    for _ in range(100):  # cancel again until the background tasks really end
        for task in getattr(engine._backend, "_tasks", []):
            task.cancel()
        done, _ = await asyncio.wait({closing}, timeout=0.2)
        if done:
            break
    raise AssertionError(
        f"closing the Engine hung for {timeout:.0f} s: its background task(s) {stuck} did not end when cancelled "
        f"(dee.backends.daemon.DaemonBackend.stop cancels them and waits without a bound)"
    )
