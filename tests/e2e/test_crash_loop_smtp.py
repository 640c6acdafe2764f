"""The SIGKILL crash loop with real mail: the same workload and kill schedule as
`test_crash_loop.py`, with the `smtp` adapter sending to an SMTP server on loopback (aiosmtpd,
in this process), counted at the server by Message-ID.

SMTP cannot be exactly-once: a daemon killed after the server accepted DATA and before the
adapter stored that answer (one Redis write) sends again when the action is redelivered. The
window is that one write; every resend carries the same Message-ID, so a receiver can drop it.
The test holds: every email the audit log says was dispatched arrived, none arrived that was
not dispatched, every copy of a Message-ID is the same message, duplicates stay within what the
window allows (a kill catches at most the sends in DATA, one per pooled connection), and every
run ends as it did with simulated mail (the outcomes; the flaky domain is only flaky in the
simulation).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import asyncpg

from dee import EngineConfig
from tests.e2e.conftest import DaemonFactory, engine_client
from tests.e2e.test_crash_loop import END, KILLS, SEED, Driver, Figures, chaos, print_figures, reference_run, until_stalled
from tests.peers.smtp import Behaviour, smtp_server

TIMEOUT_MS = 2000  # a loopback server answers at once; a dead daemon's send locks lapse after 3x this
POOL = 4


async def test_sigkill_loop_with_real_smtp_loses_no_mail_and_resends_only_in_the_protocols_window(
    e2e_deployment: EngineConfig, daemons: DaemonFactory
) -> None:
    config = e2e_deployment
    figures = Figures()
    reference, _, figures.reference_s = await reference_run()
    total = sum(len(entries) for entries in reference.values())
    bounces = {f"crash-{i:03d}@bounce.test" for i in range(200) if i % 50 == 7}
    with smtp_server(Behaviour(at_rcpt=dict.fromkeys(bounces, "550 5.1.1 no such user"))) as (server, port):
        daemon = daemons("smtp-crash")
        daemon.env.update({"DEE_CHANNELS_EMAIL_ADAPTER": "smtp", "DEE_CHANNELS_EMAIL_SMTP_PORT": str(port),
                           "DEE_CHANNELS_EMAIL_SMTP_HOST": "127.0.0.1", "DEE_CHANNELS_EMAIL_SMTP_TIMEOUT_MS": str(TIMEOUT_MS),
                           "DEE_CHANNELS_EMAIL_SMTP_POOL_SIZE": str(POOL)})  # fmt: skip
        daemon.start()
        done = asyncio.Event()
        pool = await asyncpg.create_pool(config.database, min_size=1, max_size=4)
        try:
            async with engine_client(config) as client:
                started = time.monotonic()
                killer = asyncio.create_task(chaos(daemon, pool, config.database, random.Random(SEED), done, figures, total))
                try:
                    await until_stalled(Driver(client, figures, pool).workload(), pool, killer)
                finally:
                    done.set()
                    await killer
                if not daemon.alive:
                    daemon.start()
                await Driver(client, figures, pool).advance_to(END)
                figures.workload_s = time.monotonic() - started
                bounced = {r["run_id"] for r in await pool.fetch(
                    "SELECT run_id FROM runs WHERE contact_id = ANY($1::text[])", [a.split("@")[0] for a in bounces])}  # fmt: skip
                # read through the engine: the entries' contact data is sealed in the table
                dispatched = {
                    e.output["messageId"] for e in await client.audit.query(actions=["step.dispatched"])
                    if e.output and e.output.get("channel") == "email" and e.run_id not in bounced
                }  # fmt: skip
                outcomes = Counter(r["outcome"] for r in await pool.fetch("SELECT outcome FROM runs"))
            assert await daemon.terminate() == 0
        finally:
            await pool.close()
        received = server.by_message_id()
        copies: dict[str, set[tuple[str, str]]] = {r.message["Message-ID"]: set() for r in server.received}
        for r in server.received:
            text = r.message.get_body(("plain",))
            assert text is not None
            copies[r.message["Message-ID"]].add((str(r.message["Subject"]), str(text.get_content())))
    figures.duplicate_sends = sum(n - 1 for n in received.values())
    print_figures(figures)
    print(f"smtp: {len(received)} messages, {sum(received.values())} received, {figures.duplicate_sends} duplicates "
          f"after {figures.kills} kills")  # fmt: skip
    reference_outcomes = Counter(entries[-1].output.get("outcome") for entries in reference.values() if entries[-1].output)
    assert set(received) == dispatched, "every dispatched email arrives, and nothing else"
    assert all(len(bodies) == 1 for bodies in copies.values()), "a resent Message-ID is the same message"
    assert figures.duplicate_sends <= figures.kills * POOL  # each kill can catch at most the sends in DATA
    assert figures.kills == KILLS
    assert outcomes == reference_outcomes
    assert "Traceback" not in daemon.log()
