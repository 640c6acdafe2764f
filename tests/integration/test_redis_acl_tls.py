"""DEE on a locked-down Redis, set up as docs/securing-redis.md tells operators to: an ACL user
for the daemons confined to the deployment's namespace and to the commands they issue, a more
restricted one for publishers, and TLS only (`rediss://` with the CA named in the URL, and a
client certificate where the server asks for one).

The rules live here once (`DAEMON_COMMANDS`, `daemon_rules`, `publisher_rules`): the first test
holds the document to exactly these lines, the others run DEE under them on a private
redis-server (tests.peers.redis_server; the shared Redis is not touched) and a fresh PostgreSQL
database. A workload that takes every code path that talks to Redis (enrolment, the reply
stream, emails sent through the SMTP adapter's send-once ledger, calls through the simulated
adapter's ledger script, dead letters, trims, the manual clock) completes with nothing refused
(`ACL LOG`), every granted command is one DEE issued (`INFO commandstats`), and then each thing
a user must not do is refused."""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError

from dee import Engine, EngineConfig, load_plan
from dee.bus import connect as redis_connect
from dee.bus.streams import DISPATCH_GROUP, GROUP, Keys
from dee.config import ChannelsConfig, EmailChannelConfig, PolicyConfig, SenderConfig
from dee.errors import ServiceUnavailableError
from dee.limits.settings import DeliverabilityConfig
from dee.ops import consents
from dee.ops.cli import main
from dee.ops.scratch import scratch_deployment
from dee.scheduler import tuning
from tests.integration.conftest import deployment_config
from tests.peers.redis_server import RedisServer, authority, redis_server
from tests.peers.smtp import Behaviour, smtp_server

DOC = Path("docs/securing-redis.md")  # the tests run from the repository root
OUTREACH = "config/plans/sales-outreach-v2.yaml"
VARS = {"product": "DEE"}
DAY = 86_400

# ---- the rules (what the document shows, for the namespace `dee`) ------------------------------

DAEMON, PUBLISHER = "dee-daemon", "dee-publisher"
PLACEHOLDERS = {DAEMON: "CHANGE-ME-daemon-password", PUBLISHER: "CHANGE-ME-publisher-password"}
DAEMON_COMMANDS = (
    "ping",  # connecting, and the pool's check of an idle connection
    "xadd", "xread",  # commands, replies, channel actions, results, dead letters; its own reply stream
    "xreadgroup", "xack", "xautoclaim", "xgroup|create",  # the partitions' and dispatchers' consumer groups
    "xpending", "xinfo|groups", "xtrim",  # trimming what every consumer is done with
    "exists", "del",  # the manual clock's idle probe; the reply stream on close, send locks
    "get", "set", "hset", "hget", "hincrby",  # the adapters' send-once ledgers
    "incrby", "pexpire",  # the counters of deliverability limits and budgets (inside their script)
    "evalsha", "script|load",  # the Lua scripts (the idle probe, the simulated ledger, admission)
)  # fmt: skip


def daemon_rules(ns: str) -> list[str]:
    return ["resetchannels", f"~{ns}:*", *(f"+{command}" for command in DAEMON_COMMANDS)]


def publisher_rules(ns: str) -> list[str]:
    """Write-only to the partitions' inbound streams; read and delete only reply streams."""
    return ["resetchannels", f"%W~{ns}:{{*}}:in", "+ping", "+xadd", f"(~{ns}:reply:* +xread +del)"]


RULES: dict[str, Callable[[str], list[str]]] = {DAEMON: daemon_rules, PUBLISHER: publisher_rules}


def acl_file_line(user: str, password: str, ns: str) -> str:
    return " ".join(["user", user, "on", f">{password}", *RULES[user](ns)])


def setuser_line(user: str, password: str, ns: str) -> str:
    return " ".join(["ACL", "SETUSER", user, "reset", "on", f">{password}", *RULES[user](ns)])


# ---- helpers ----------------------------------------------------------------------------------

Users = dict[str, str]  # user -> password


def new_users() -> Users:
    return {user: secrets.token_urlsafe(18) for user in RULES}


@asynccontextmanager
async def deployment_on(server: RedisServer, **changes: Any) -> AsyncIterator[EngineConfig]:
    """A fresh database and namespace (set up as the admin user), like conftest's `deployment`."""
    config = msgspec.structs.replace(deployment_config(f"dee_test_{uuid.uuid4().hex[:12]}"), redis=server.url(), **changes)
    async with scratch_deployment(config):
        yield config


def as_user(config: EngineConfig, server: RedisServer, user: str, users: Users, **url: Any) -> EngineConfig:
    return msgspec.structs.replace(config, redis=server.url(user, users[user], **url))


@asynccontextmanager
async def admin_of(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    admin = aioredis.from_url(server.url(), decode_responses=True)
    try:
        yield admin
    finally:
        await admin.aclose()


@asynccontextmanager
async def client_of(url: str) -> AsyncIterator[aioredis.Redis]:
    client = redis_connect.client(url)
    try:
        yield client
    finally:
        await client.aclose()


async def refusals(admin: aioredis.Redis) -> list[tuple[str, str, str]]:
    """What the server refused DEE's users (`ACL LOG`): (user, reason, command or key)."""
    return [(e["username"], e["reason"], e["object"]) for e in await admin.acl_log(256) if e["username"] in RULES]


async def commands_used(admin: aioredis.Redis) -> set[str]:
    return {name.removeprefix("cmdstat_") for name in await admin.info("commandstats")}


async def denied(call: Callable[[], Awaitable[object]]) -> bool:
    try:
        await call()
    except NoPermissionError:
        return True
    return False


def contact(cid: str, email: str | None = None) -> dict[str, Any]:
    return {"id": cid, "email": email or f"{cid}@example.com", "phone": "+15550001", "attributes": {"company": "Acme"}}


async def workload(daemon: Engine, publisher: Engine, undeliverable: str) -> dict[str, tuple[str, str | None]]:
    """The outreach plan for eight contacts, written by the publisher (enrolments, one of them a
    bulk, events, pause, resume, cancel) with the daemon's engine driving the manual clock;
    `undeliverable` is an address the email adapter refuses for good. Each run's (status, outcome)."""
    plan = load_plan(OUTREACH)
    # they agreed to be called: the call steps go out (and the daemon uses the voice ledger)
    await consents.grant(publisher, ["opened", "replied", "paused", "cancelled", "gone", *(f"bulk-{i}" for i in range(3))],
                         "voice", "web form")  # fmt: skip
    opened = await publisher.execute(plan, contact("opened"), VARS)
    await publisher.execute(plan, contact("replied"), VARS)
    paused = await publisher.execute(plan, contact("paused"), VARS)
    cancelled = await publisher.execute(plan, contact("cancelled"), VARS)
    await publisher.execute(plan, contact("gone", undeliverable), VARS)
    bulk = await publisher.bulk_execute(plan, [contact(f"bulk-{i}") for i in range(3)], VARS)
    assert (bulk.created, bulk.skipped, bulk.errors) == (3, 0, [])
    await daemon.run_until_idle()
    await publisher.ingest_event("email.opened", "opened", {}, step_id="initial-email")
    await publisher.ingest_event("email.replied", "replied", {}, step_id="initial-email")
    await publisher.pause_run(paused.id)
    await publisher.cancel_run(cancelled.id, "acl test")
    await daemon.advance_clock(DAY)
    assert (await publisher.get_run(paused.id)).status == "paused"
    await publisher.resume_run(paused.id)
    await daemon.advance_clock(10 * DAY)
    assert (await publisher.get_run(opened.id)).steps_completed == 10  # the warm path: email, email, call, email
    return {r.contact_id: (r.status, r.outcome) for r in (await publisher.list_runs()).runs}


EXPECTED = {
    "opened": ("completed", "no_response"), "replied": ("completed", "replied"), "paused": ("completed", "no_response"),
    "cancelled": ("cancelled", None), **{f"bulk-{i}": ("completed", "no_response") for i in range(3)},
}  # fmt: skip


@contextmanager
def env(monkeypatch: pytest.MonkeyPatch, config: EngineConfig, redis: str) -> Iterator[None]:
    """The CLI's environment for this deployment, with `redis` as REDIS_URL."""
    with monkeypatch.context() as patch:
        patch.setenv("DATABASE_URL", config.database)
        patch.setenv("REDIS_URL", redis)
        patch.setenv("DEE_NAMESPACE", config.namespace)
        patch.setenv("DEE_SCHEDULER_PARTITIONS", str(config.scheduler.partitions))
        yield


# ---- the tests --------------------------------------------------------------------------------


def test_the_document_shows_exactly_the_rules_tested_here() -> None:
    text = DOC.read_text()
    documented = re.findall(r"^(?:user|ACL SETUSER) dee-\S+ .*$", text, re.M)
    expected = [line(user, PLACEHOLDERS[user], "dee") for line in (acl_file_line, setuser_line) for user in RULES]
    assert sorted(documented) == sorted(expected), "\n".join(documented)
    for command in DAEMON_COMMANDS:  # the table that says why the daemon needs each one
        assert re.search(rf"^\| `{re.escape(command.upper().replace('|', chr(92) + '|'))}` \|", text, re.M), command


async def test_daemon_and_publisher_under_their_acl_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # trim on every iteration and dispatch round (normally every 500 and 1000), so XPENDING,
    # XINFO GROUPS and XTRIM run under the daemon's user within the test
    monkeypatch.setattr(tuning, "TRIM_EVERY_ITERATIONS", 1)
    monkeypatch.setattr(tuning, "DISPATCH_TRIM_EVERY_ROUNDS", 1)
    users, ns = new_users(), f"dee_test_{uuid.uuid4().hex[:12]}"
    acl = [acl_file_line(user, password, ns) for user, password in users.items()]  # the ACL file as documented
    refused_at = Behaviour(at_rcpt={"gone@example.com": "550 5.1.1 no such user"})
    with redis_server(tmp_path / "redis", acl=acl) as server, smtp_server(refused_at) as (mail, smtp_port):
        email = EmailChannelConfig(adapter="smtp", smtp_port=smtp_port, smtp_timeout_ms=3000, sender=SenderConfig(email="sales@acme.test"))
        limits = PolicyConfig(deliverability=DeliverabilityConfig(daily_limit=1000))  # admitted through the limits' script
        async with deployment_on(server, namespace=ns, channels=ChannelsConfig(email=email), policy=limits) as config, \
                admin_of(server) as admin:  # fmt: skip
            keys, other = Keys(ns), Keys(f"{ns}-other")  # a neighbouring deployment on the same server
            daemon_url, publisher_url = server.url(DAEMON, users[DAEMON]), server.url(PUBLISHER, users[PUBLISHER])
            await admin.config_resetstat()
            async with Engine(as_user(config, server, DAEMON, users), scheduler=True) as daemon, \
                    Engine(as_user(config, server, PUBLISHER, users)) as publisher, client_of(publisher_url) as raw:  # fmt: skip
                # a malformed entry: the publisher may write it, the daemon dead-letters it
                await raw.xadd(keys.inbound(0), {b"m": b"not a message"})
                seen = await workload(daemon, publisher, "gone@example.com")
            assert seen == {**EXPECTED, "gone": ("completed", "undeliverable")}, seen
            assert await refusals(admin) == []  # DEE was refused nothing
            used = await commands_used(admin)
            # every command granted to the daemon is one DEE issued, and DEE issued no other (aside
            # from logging in, which every user may, and what this test asked as the admin)
            assert used - {"hello", "auth"} - {"config|resetstat", "acl|log", "info"} == set(DAEMON_COMMANDS), used
            # the emails went out through SMTP, once each, the send-once ledger in Redis; the calls
            # through the simulated adapter's ledger; the malformed entry is a dead letter
            counts = mail.by_message_id()
            assert len(counts) == 17 and set(counts.values()) == {1}, counts
            answers = [k async for k in admin.scan_iter(f"{ns}:sent:email:answer:*")]
            attempts = await admin.hgetall(f"{ns}:sent:email:attempts")
            assert len(answers) == len(attempts) == 18 and set(attempts.values()) == {"1"}  # the 17 sent and the final 550
            assert set((await admin.hgetall(keys.simulated("voice", "sends"))).values()) == {"1"}
            [(_, dead)] = await admin.xrange(keys.dead(0))
            assert dead["orig:m"] == "not a message" and dead["source"] == keys.inbound(0)

            async with client_of(daemon_url) as d, client_of(publisher_url) as p:
                await p.xadd(keys.inbound(1), {b"m": b"{}"})  # what it may do: write commands, read and drop replies
                await p.xread({keys.reply("probe"): "0"})
                await p.delete(keys.reply("probe"))
                publisher_must_not = {
                    "XADD a channel action (a send)": lambda: p.xadd(keys.dispatch("email"), {b"m": b"{}"}),
                    "XADD a dead letter": lambda: p.xadd(keys.dead(0), {b"m": b"{}"}),
                    "XADD into a reply stream (a forged answer)": lambda: p.xadd(keys.reply("someone"), {b"m": b"{}"}),
                    "XADD to another namespace": lambda: p.xadd(other.inbound(0), {b"m": b"{}"}),
                    "XREAD the commands of other publishers": lambda: p.xread({keys.inbound(0): "0"}),
                    "XRANGE an inbound stream": lambda: p.xrange(keys.inbound(0)),
                    "XREAD a channel action": lambda: p.xread({keys.dispatch("email"): "0"}),
                    "XREADGROUP as the partitions' group": lambda: p.xreadgroup(GROUP, "x", {keys.inbound(0): ">"}),
                    "XACK a command": lambda: p.xack(keys.inbound(0), GROUP, "0-1"),
                    "XAUTOCLAIM a dispatcher's actions": lambda: p.xautoclaim(keys.dispatch("email"), DISPATCH_GROUP, "x", 0),
                    "XGROUP CREATE": lambda: p.xgroup_create(keys.inbound(0), "mine", id="0"),
                    "XTRIM an inbound stream": lambda: p.xtrim(keys.inbound(0), maxlen=0),
                    "DEL an inbound stream": lambda: p.delete(keys.inbound(0)),
                    "DEL another namespace's reply stream": lambda: p.delete(other.reply("x")),
                    "GET a sent email's answer": lambda: p.get(answers[0]),
                    "SET a send lock": lambda: p.set(f"{ns}:sent:email:lock:k", b"1"),
                    "HSET the simulated ledger": lambda: p.hset(keys.simulated("voice", "answers"), "k", "v"),
                    "EVALSHA": lambda: p.evalsha("0" * 40, 1, keys.inbound(0)),
                    "SCRIPT LOAD": lambda: p.script_load("return 1"),
                    "KEYS": lambda: p.keys("*"),
                    "SCAN": lambda: p.scan(0),
                    "PUBLISH": lambda: p.publish(f"{ns}:news", b"x"),
                    "CONFIG GET": lambda: p.config_get("*"),
                    "FLUSHALL": lambda: p.flushall(),
                }
                daemon_must_not = {
                    "SET outside the namespace": lambda: d.set(f"{other.ns}:sent:email:lock:k", b"1"),
                    "GET outside any namespace": lambda: d.get("unrelated"),
                    "XADD to another namespace": lambda: d.xadd(other.inbound(0), {b"m": b"{}"}),
                    "XREADGROUP another namespace": lambda: d.xreadgroup(GROUP, "x", {other.inbound(0): ">"}),
                    "DEL another namespace's stream": lambda: d.delete(other.dispatch("email")),
                    "HGETALL (not a command DEE issues)": lambda: d.hgetall(keys.simulated("voice", "sends")),
                    "EVAL": lambda: d.eval("return 1", 0),
                    "KEYS": lambda: d.keys("*"),
                    "SCAN": lambda: d.scan(0),
                    "SUBSCRIBE": lambda: d.execute_command("SUBSCRIBE", f"{ns}:news"),
                    "PUBLISH": lambda: d.publish(f"{ns}:news", b"x"),
                    "CONFIG SET": lambda: d.config_set("appendonly", "yes"),
                    "ACL SETUSER": lambda: d.acl_setuser("intruder", enabled=True),
                    "FLUSHDB": lambda: d.flushdb(),
                    "FLUSHALL": lambda: d.flushall(),
                }
                assert {what: await denied(call) for what, call in publisher_must_not.items()} == dict.fromkeys(publisher_must_not, True)
                assert {what: await denied(call) for what, call in daemon_must_not.items()} == dict.fromkeys(daemon_must_not, True)
            logged = await refusals(admin)
            assert {user for user, _, _ in logged} == {DAEMON, PUBLISHER} and {why for _, why, _ in logged} == {"command", "key"}
            assert await admin.exists(other.inbound(0), f"{other.ns}:sent:email:lock:k", "unrelated") == 0
            assert [g["name"] for g in await admin.xinfo_groups(keys.inbound(0))] == [GROUP]  # not deleted, nor a group added
            assert await admin.acl_getuser("intruder") is None

            # a publisher's credentials can neither run a daemon (it may not create the consumer
            # groups) nor drive the manual clock (its idle probe is a script)
            with pytest.raises(NoPermissionError):
                async with Engine(as_user(config, server, PUBLISHER, users), scheduler=True):
                    pass
            async with Engine(as_user(config, server, PUBLISHER, users)) as publisher:
                with pytest.raises(NoPermissionError):
                    await publisher.run_until_idle()


async def test_over_tls_with_the_ca_in_the_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    users = new_users()
    with redis_server(tmp_path / "redis", tls=True) as server:
        async with deployment_on(server) as config, admin_of(server) as admin:
            for user, password in users.items():  # as an operator would on a running server (redis-cli)
                assert await admin.execute_command(*setuser_line(user, password, config.namespace).split()) == "OK"
            daemon, publisher = as_user(config, server, DAEMON, users), as_user(config, server, PUBLISHER, users)
            assert publisher.redis.startswith(f"rediss://{PUBLISHER}:") and "?ssl_ca_certs=" in publisher.redis
            async with Engine(daemon, scheduler=True) as engine, Engine(publisher) as client:
                seen = await workload(engine, client, "gone@fail.test")  # the simulated adapter fails it for good
                # `dee health` with the publisher's URL: Redis over TLS, as the publisher
                capsys.readouterr()
                with env(monkeypatch, config, publisher.redis):
                    assert await asyncio.to_thread(main, ["health"]) == 0
                out = capsys.readouterr().out
                masked = rf"rediss://{PUBLISHER}:\*\*\*@127\.0\.0\.1:{server.port}/0\?ssl_ca_certs=\S+"
                assert re.search(rf"^ok +redis +{masked}$", out, re.M), out
                assert users[PUBLISHER] not in out
            assert seen == {**EXPECTED, "gone": ("failed", None)}, seen
            assert await refusals(admin) == []
            written = {k async for k in admin.scan_iter("*")}
            assert written and all(k.startswith(f"{config.namespace}:") for k in written), written
            assert set((await admin.hgetall(Keys(config.namespace).simulated("email", "sends"))).values()) == {"1"}
            # the server has no plaintext port
            plaintext = f"redis://{PUBLISHER}:{users[PUBLISHER]}@127.0.0.1:{server.port}/0"
            with pytest.raises(ServiceUnavailableError) as caught:
                async with Engine(msgspec.structs.replace(publisher, redis=plaintext)):
                    pass
            assert "reset by peer" in str(caught.value) and users[PUBLISHER] not in str(caught.value)


async def test_an_untrusted_certificate_is_named_in_one_line_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    users = new_users()
    with redis_server(tmp_path / "redis", tls=True) as server:
        async with deployment_on(server) as config, admin_of(server) as admin:
            await admin.execute_command(*setuser_line(PUBLISHER, users[PUBLISHER], config.namespace).split())
            password = users[PUBLISHER]
            other_ca = authority(tmp_path, "other-ca")
            untrusted = {
                "another CA": server.url(PUBLISHER, password, ca=other_ca),
                "no CA (the system's)": server.url(PUBLISHER, password).split("?")[0],
            }
            for why, url in untrusted.items():
                with pytest.raises(ServiceUnavailableError) as caught:
                    async with Engine(msgspec.structs.replace(config, redis=url)):
                        pass
                message = str(caught.value)
                assert message.startswith(f"cannot reach Redis at rediss://{PUBLISHER}:***@127.0.0.1:{server.port}/0"), (why, message)
                assert message.endswith(": TLS handshake failed (certificate verify failed: self-signed certificate in certificate chain)")
                assert "\n" not in message and password not in message, (why, message)
            # the CLI: one line on standard error, exit code 3 (unavailable); `dee health` says FAIL
            with env(monkeypatch, config, untrusted["another CA"]):
                capsys.readouterr()
                assert await asyncio.to_thread(main, ["runs", "list"]) == 3
                err = capsys.readouterr().err
                masked = rf"rediss://{PUBLISHER}:\*\*\*@127\.0\.0\.1:{server.port}/0\?ssl_ca_certs=\S+other-ca\.crt"
                verify_failed = r"TLS handshake failed \(certificate verify failed: [^)\n]+\)"
                assert re.fullmatch(rf"dee: cannot reach Redis at {masked}: {verify_failed}\n", err), err
                assert await asyncio.to_thread(main, ["health"]) == 1
                out = capsys.readouterr().out
                assert re.search(rf"^FAIL +redis +cannot reach Redis at {masked}: {verify_failed}$", out, re.M), out
                assert password not in out + err
            # trusted, but the wrong password: said so, again without it
            wrong = server.url(PUBLISHER, "not-" + password)
            with pytest.raises(ServiceUnavailableError) as caught:
                async with Engine(msgspec.structs.replace(config, redis=wrong)):
                    pass
            assert "authentication failed" in str(caught.value) and password not in str(caught.value), str(caught.value)


async def test_a_server_that_requires_client_certificates(tmp_path: Path) -> None:
    """`tls-auth-clients yes`: the URL names the client's certificate and key as well."""
    users = new_users()
    acl = [acl_file_line(PUBLISHER, users[PUBLISHER], "dee")]
    with redis_server(tmp_path / "redis", acl=acl, tls=True, auth_clients=True) as server:
        with_cert = server.url(PUBLISHER, users[PUBLISHER], client_cert=True)
        assert "&ssl_certfile=" in with_cert and "&ssl_keyfile=" in with_cert
        async with client_of(with_cert) as client:
            await redis_connect.ping(client, with_cert)
            assert await client.xadd(Keys("dee").inbound(0), {b"m": b"{}"})
        without = server.url(PUBLISHER, users[PUBLISHER])
        async with client_of(without) as client:
            with pytest.raises(ServiceUnavailableError) as caught:
                await redis_connect.ping(client, without)
        message = str(caught.value)
        assert message.startswith(f"cannot reach Redis at rediss://{PUBLISHER}:***@127.0.0.1:{server.port}/0"), message
        # the server's alert, or (when it closed the connection before the client read it) the reset
        ends = (": TLS handshake failed (tlsv13 alert certificate required)",
                f": Error while reading from 127.0.0.1:{server.port} : (104, 'Connection reset by peer')")  # fmt: skip
        assert message.endswith(ends), message
        assert "\n" not in message and users[PUBLISHER] not in message
