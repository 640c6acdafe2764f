"""Daemon processes for `dee bench`: `dee run` subprocesses on a scratch deployment.

The benchmark measures the real path, so the partitions are owned by separate `dee run`
processes exactly as in production; the bench process itself is only a client.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import TypeVar

import asyncpg

from dee.config import EngineConfig
from dee.errors import ConfigError
from dee.scheduler.coordinator import assignment

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def project_of(config: EngineConfig) -> Path:
    """The project whose plans the bench runs (the daemons read it too): `config_dir`."""
    if config.config_dir is None:
        raise ConfigError("dee bench runs the project's plans/sales-outreach-v2.yaml: no project found (config_dir)")
    return Path(config.config_dir)


class DaemonProcess:
    """One `dee run` (or another long-running command: `dee ingress`) with its own instance
    name, log file and metrics port. The caller's environment goes along without its `DEE_*`
    variables; `settings` are such variables it passes on (below what the process must have of
    its own: servers, namespace, clock, instance, metrics port); `env` adds settings of its own."""

    def __init__(self, config: EngineConfig, instance: str, log_dir: Path, command: str = "run",
                 env: dict[str, str] | None = None, settings: Mapping[str, str] | None = None) -> None:  # fmt: skip
        self.instance = instance
        self.command = command
        self.metrics_port = free_port()
        self.log_path = log_dir / f"{instance}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DEE_") and k not in ("DATABASE_URL", "REDIS_URL")}
        self.env.update(settings or {})
        self.env.update({
            "DATABASE_URL": config.database, "REDIS_URL": config.redis, "DEE_NAMESPACE": config.namespace,
            "DEE_CONFIG_DIR": str(project_of(config).resolve()),
            "DEE_SCHEDULER_CLOCK": config.scheduler.clock, "DEE_SCHEDULER_PARTITIONS": str(config.scheduler.partitions),
            "DEE_SCHEDULER_MAX_RUNS_PER_TICK": str(config.scheduler.max_runs_per_tick),
            "DEE_INSTANCE": instance, "DEE_METRICS_ENABLED": "true", "DEE_METRICS_HOST": "127.0.0.1",
            "DEE_METRICS_PORT": str(self.metrics_port), "PYTHONUNBUFFERED": "1",
        })  # fmt: skip
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "dee", self.command], env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def memory_kb(self) -> tuple[int, int]:
        """(current RSS, peak RSS) in KiB, from /proc."""
        assert self.proc is not None
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
        return fields["VmRSS"], fields["VmHWM"]

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
            raise RuntimeError(f"daemon {self.instance} exited; its log ends with:\n{tail}")

    async def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the daemon drains and releases its leases), SIGKILL if it does not exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)


async def start_daemons(config: EngineConfig, count: int, log_dir: Path, timeout: float = 30.0) -> list[DaemonProcess]:
    """Start `count` daemons and wait until the partitions are split as they will stay (the
    coordinators' own assignment): a workload started on the first split saw partitions
    change hands, and wait out the hand-over, in its first seconds."""
    # the bench's own settings go along (its `DEE_*` variables, `DEE_CONFIG`): the daemons run on
    # the configuration the bench replays their runs with
    settings = {k: v for k, v in os.environ.items() if k.startswith("DEE_")}
    daemons = [DaemonProcess(config, f"bench-{k + 1}", log_dir, settings=settings) for k in range(count)]
    settled = assignment(config.scheduler.partitions, [d.instance for d in daemons])
    for daemon in daemons:
        daemon.start()
    conn = await asyncpg.connect(config.database)
    try:
        deadline = time.monotonic() + timeout
        while True:
            for daemon in daemons:
                daemon.check_alive()
            rows = await conn.fetch("SELECT partition, owner FROM partitions WHERE lease_until > now()")
            if {r["partition"]: r["owner"] for r in rows} == settled:
                return daemons
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemons did not settle on their split of {config.scheduler.partitions} partitions in {timeout} s")
            await asyncio.sleep(0.1)
    except BaseException:
        for daemon in daemons:
            await daemon.stop()
        raise
    finally:
        await conn.close()


async def while_alive(daemons: list[DaemonProcess], work: Awaitable[T]) -> T:
    """Await `work`, but fail at once (with the log's tail) if a daemon exits meanwhile: the
    bench would otherwise wait for an idleness that can no longer come."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                return task.result()
            for daemon in daemons:
                daemon.check_alive()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
