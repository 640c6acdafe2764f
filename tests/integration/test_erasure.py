"""Erasure on the real PostgreSQL, with a daemon: after `erase_contact`, no byte of the contact's
email or phone is left in any table — a `pg_dump` of the whole database holds neither, in any
of the encodings they could be stored in (plain, JSON-escaped, either case, URL-encoded,
base64, hex as bytea is dumped, E.164 and national formats) — though a template rendered the
email into the body and subject, an event and a consent carried it, and the contact had a
finished run and a running one; every chain still verifies. And `dee contacts erase` does the
same from the command line, one line and exit 0, again a no-op, a free-text reason exit 2."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import urllib.parse
from pathlib import Path

import msgspec
import pytest

from dee import ConsentRecord, Engine, EngineConfig, load_plan
from tests.integration.test_cli_runs import cli_env, dee

__all__ = ["cli_env"]

EMAIL = "Erin.O-Neil+news@Example.org"
PHONE = "+14155550123"
NATIONAL = ("(415) 555-0123", "415-555-0123", "415 555 0123", "4155550123")
DAY = 86_400

PLAN = """
id: erase-me
name: Erasure probe
steps:
  - id: hello
    type: sendEmail
    templateId: tmpl_erase
    subject: "For {{ contact.email }}"
  - id: pause
    type: wait
    duration: {days: 1}
  - id: done
    type: end
    outcome: finished
transitions:
  mode: linear
"""
TEMPLATE = """text: |
  Hello {{ contact.email }}, we will call {{ contact.phone }}.
html: |
  <p>Hello {{ contact.email }}, we will call {{ contact.phone }}.</p>
"""


def project(tmp_path: Path) -> Path:
    (tmp_path / "plans").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "plans" / "erase-me.yaml").write_text(PLAN)
    (tmp_path / "templates" / "tmpl_erase.yaml").write_text(TEMPLATE)
    return tmp_path


def encodings(value: str) -> set[str]:
    forms = {value, value.lower(), value.upper(), json.dumps(value)[1:-1], urllib.parse.quote(value, safe=""),
             urllib.parse.quote_plus(value), base64.b64encode(value.encode()).decode().rstrip("=")}  # fmt: skip
    return forms | {f.encode().hex() for f in list(forms)}  # bytea columns are dumped as hex


def pg_dump_binary() -> str:
    binary = shutil.which("pg_dump") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))), None)
    assert binary is not None, "pg_dump is installed with PostgreSQL"
    return str(binary)


async def pg_dump(database: str) -> str:
    binary = await asyncio.to_thread(pg_dump_binary)
    process = await asyncio.create_subprocess_exec(binary, "--no-owner", database, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    assert process.returncode == 0
    return out.decode()


def found(dump: str) -> list[str]:
    haystack = dump.lower()
    needles = encodings(EMAIL) | encodings(PHONE) | encodings(PHONE.removeprefix("+")) | {n for v in NATIONAL for n in encodings(v)}
    return sorted(n for n in needles if n.lower() in haystack)


async def test_after_an_erasure_no_table_holds_the_contacts_email_or_phone(deployment: EngineConfig, tmp_path: Path) -> None:
    config = msgspec.structs.replace(deployment, config_dir=str(project(tmp_path)))
    erin = {"id": "c-erin", "email": EMAIL, "phone": PHONE, "attributes": {"note": f"reach me at {EMAIL}"}}
    async with Engine(config, scheduler=True) as engine:
        plan = load_plan(tmp_path / "plans" / "erase-me.yaml")
        await engine.record_consent(ConsentRecord(contact_id="c-erin", channel="email", status="granted", source="form",
                                                  evidence={"email": EMAIL, "phone": PHONE}))  # fmt: skip
        finished = (await engine.execute(plan, erin, {})).id
        await engine.run_until_idle()
        await engine.advance_clock(DAY + 1)
        running = (await engine.execute(plan, erin, {})).id
        await engine.run_until_idle()
        await engine.ingest_event("email.opened", "c-erin", {"from": EMAIL}, step_id="hello", event_id="open-1")
        await engine.run_until_idle()
        other = (await engine.execute(plan, {"id": "c-otto", "email": "otto@example.org"}, {})).id
        await engine.run_until_idle()
        assert [(await engine.get_run(r)).status for r in (finished, running)] == ["completed", "waiting"]
        assert found(await pg_dump(config.database))  # the probe sees the data while it is there

        erasure = await engine.erase_contact("c-erin", "gdpr-art17")
        assert (erasure.runs, erasure.cancelled) == (2, [running])
        await engine.run_until_idle()
        assert found(await pg_dump(config.database)) == []
        verdicts = await engine.verify_audit_chains([finished, running, other])
        assert all(v.valid for v in verdicts.values()), verdicts
        assert (await engine.replay(finished)).erased and (await engine.replay(other)).identical
        assert "otto@example.org" in json.dumps([e.input for e in await engine.audit.get_by_run(other)])


async def test_dee_contacts_erase_on_a_running_daemon(cli_env: EngineConfig, capsys: pytest.CaptureFixture[str]) -> None:
    async with Engine(cli_env, scheduler=True) as engine:
        plan = load_plan("config/plans/sales-outreach-v2.yaml")
        run = (await engine.execute(plan, {"id": "k1", "email": "k1@acme.test", "attributes": {"company": "A"}}, {"product": "D"})).id
        await engine.run_until_idle()

        code, out = await dee(capsys, "contacts", "erase", "k1", "--reason", "gdpr-art17")
        assert (code, out) == (0, "contact k1: erased (1 run(s) scrubbed, 1 cancelled)\n")
        code, out = await dee(capsys, "contacts", "erase", "k1", "--reason", "gdpr-art17", "--json")
        assert code == 0 and json.loads(out) == {"contact_id": "k1", "already_erased": True, "runs": 0, "cancelled": []}
        code, out = await dee(capsys, "contacts", "erase", "k1", "--reason", "asked by k1@acme.test")
        assert code == 2 and out.startswith("dee: the reason of an erasure is a code") and "k1@acme.test" not in out

        code, out = await dee(capsys, "runs", "replay", run)
        assert (code, out.strip()) == (4, "erased: the run's contact was erased; its recorded inputs are gone, nothing to compare")
        code, out = await dee(capsys, "audit", "verify", run)
        assert code == 0, out
        assert (await engine.get_run(run)).outcome == "erased"
