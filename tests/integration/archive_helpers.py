"""What the audit archive's tests share: a real S3 endpoint (moto in server mode on a loopback
port), a loopback HTTP proxy in front of it that can stall or spoil the first read of an object
(the faults between upload and drop), and a deployment with runs started over many partitions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, redirect_stderr, redirect_stdout
from io import StringIO
from typing import Any

import asyncpg
import msgspec
from aiobotocore.session import get_session
from aiohttp import ClientSession, web

from dee import Duration, Engine, EngineConfig, create_plan, steps, transitions
from dee.config import AuditConfig
from dee.ops.cli import main
from dee.plan.model import Plan

DAY = 86_400  # ticks: the test deployments tick once a second
PERIOD = 30 * DAY  # the default audit.partition_days
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def with_archive(config: EngineConfig, endpoint: str, bucket: str, **audit: Any) -> EngineConfig:
    options = {"retention_days": 30, "archive_to": f"s3://{bucket}/dee/prod", "s3_endpoint_url": endpoint, "s3_region": "us-east-1",
               "s3_access_key_id": CREDENTIALS["aws_access_key_id"], "s3_secret_access_key": CREDENTIALS["aws_secret_access_key"],
               **audit}  # fmt: skip
    return msgspec.structs.replace(config, audit=AuditConfig(**options))


def bucket_of(config: EngineConfig) -> str:
    assert config.audit.archive_to is not None
    return config.audit.archive_to.removeprefix("s3://").split("/")[0]


def environment(config: EngineConfig) -> dict[str, str]:
    """The configuration as `DEE_*` variables, for a `dee` process."""
    audit = config.audit
    env = {
        "DATABASE_URL": config.database, "REDIS_URL": config.redis, "DEE_NAMESPACE": config.namespace,
        "DEE_SCHEDULER_PARTITIONS": str(config.scheduler.partitions), "DEE_SCHEDULER_CLOCK": config.scheduler.clock,
        "DEE_AUDIT_RETENTION_DAYS": str(audit.retention_days), "DEE_AUDIT_ARCHIVE_TO": audit.archive_to or "",
        "DEE_AUDIT_S3_ENDPOINT_URL": audit.s3_endpoint_url or "", "DEE_AUDIT_S3_REGION": audit.s3_region or "",
        "DEE_AUDIT_S3_ACCESS_KEY_ID": audit.s3_access_key_id or "", "DEE_AUDIT_S3_SECRET_ACCESS_KEY": audit.s3_secret_access_key or "",
    }  # fmt: skip
    return {k: v for k, v in env.items() if v}


async def dee(*argv: str) -> tuple[int, str]:
    """The CLI in a thread (its own event loop), with the environment as set; exit code and output."""
    out = StringIO()

    def call() -> int:
        with redirect_stdout(out), redirect_stderr(out):
            return main(list(argv))

    code = await asyncio.to_thread(call)
    return code, out.getvalue()


async def new_bucket(endpoint: str) -> str:
    name = f"dee-{uuid.uuid4().hex[:12]}"
    async with s3_client(endpoint) as client:
        await client.create_bucket(Bucket=name)
    return name


@asynccontextmanager
async def s3_client(endpoint: str) -> AsyncIterator[Any]:
    """A client of our own, to look at (and tamper with) what the archive wrote."""
    async with get_session().create_client("s3", endpoint_url=endpoint, region_name="us-east-1", **CREDENTIALS) as client:
        yield client


async def keys_in(endpoint: str, bucket: str) -> list[str]:
    async with s3_client(endpoint) as client:
        listed = await client.list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def short_plan(wait_days: int = 2, plan_id: str = "archive-short") -> Plan:
    return create_plan(id=plan_id, name="Archive test", steps=[
        steps.send_email(id="hello", template_id="tmpl_welcome", subject="Hi {{ contact.attributes.first_name }}"),
        steps.wait(id="pause", duration=Duration(days=wait_days)),
        steps.end(id="done", outcome="sent"),
    ], transitions=transitions.linear())  # fmt: skip


def contact(n: int) -> dict[str, Any]:
    return {"id": f"c-{n:03d}", "email": f"c{n}@acme.test", "attributes": {"company": "Acme", "first_name": f"C{n}"}}


async def start_runs(engine: Engine, months: int, per_month: int = 2, plan: Plan | None = None) -> dict[int, list[str]]:
    """`per_month` runs starting in each of `months` periods (a few days into it); run ids by period."""
    plan = plan or short_plan()
    started: dict[int, list[str]] = {}
    for month in range(months):
        for k in range(per_month):
            run = await engine.execute(plan, contact(month * per_month + k), {"product": "DEE"}, start_at=month * PERIOD + (3 + k) * DAY)
            started.setdefault(month, []).append(run.id)
    await engine.run_until_idle()
    return started


async def audit_rows(database: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(database)
    try:
        return [tuple(r) for r in await conn.fetch("SELECT * FROM audit_log ORDER BY run_id, seq")]
    finally:
        await conn.close()


async def live_partitions(database: str) -> list[str]:
    conn = await asyncpg.connect(database)
    try:
        found = await conn.fetch("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                 "WHERE i.inhparent = 'audit_log'::regclass ORDER BY c.relname")  # fmt: skip
        return [r["relname"] for r in found]
    finally:
        await conn.close()


Fault = Callable[[str], Awaitable[None]]  # called with the object key of the first archive object read back


@asynccontextmanager
async def s3_proxy(upstream: str, fault: Fault) -> AsyncIterator[str]:
    """An HTTP proxy on a loopback port that forwards every request to `upstream` as it came,
    except that the first GET of an archive object (`.jsonl.gz`) awaits `fault` first."""
    session = ClientSession(auto_decompress=False)
    faulted = asyncio.Event()

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        key = request.path.split("/", 2)[-1]
        if request.method == "GET" and key.endswith(".jsonl.gz") and not faulted.is_set():
            faulted.set()
            await fault(key)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-length", "transfer-encoding")}
        async with session.request(request.method, upstream + request.path_qs, headers=headers, data=body) as answer:
            payload = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in ("content-length", "transfer-encoding", "connection")}
            return web.Response(status=answer.status, headers=kept, body=payload)

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()
