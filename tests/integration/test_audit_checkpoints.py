"""Successive signed checkpoints on the real PostgreSQL: each consistent with the next (RFC 9162
consistency proofs over the leaf log), a forged earlier one and a rewritten leaf log caught,
runs that went on or started after a checkpoint fine, archived runs not missing; the inclusion
proof a run's JSON export carries, checked offline; the daemons' periodic checkpoint."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import asyncpg
import msgspec
import pytest

from dee import Engine, EngineConfig
from dee.archive.maintenance import run_archive
from dee.checkpoint.keys import load_signer
from dee.checkpoint.note import Checkpoint, sign_note
from dee.checkpoint.periodic import checkpoint_loop, checkpoint_once
from dee.checkpoint.store import LOCK_KEY
from tests.integration.archive_helpers import DAY, PERIOD, contact
from tests.integration.checkpoint_helpers import PLAN, checks, cli_environment, dee, new_key, start, superuser, verify, with_key


@pytest.fixture
def keyed(deployment: EngineConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EngineConfig:
    config = with_key(deployment, new_key(tmp_path / "signing.pem"), retention_days=30)
    cli_environment(config, monkeypatch)
    return config


async def take(path: Path) -> str:
    code, note = await dee("audit", "checkpoint", "--output", str(path))
    assert code == 0, note
    return note


async def test_successive_checkpoints_are_consistent_and_a_forged_earlier_one_is_caught(keyed: EngineConfig, tmp_path: Path) -> None:
    async with Engine(keyed, scheduler=True) as engine:
        for n in range(2):
            await engine.execute(PLAN, contact(n), {"product": "DEE"})
        await engine.run_until_idle()
        first = await take(tmp_path / "first.txt")  # the runs wait: they go on after it
        assert await take(tmp_path / "again.txt") == first  # nothing changed: the same note
        await engine.advance_clock(3 * DAY)
        await start(engine, 10, 2)
        second = await take(tmp_path / "second.txt")
    assert (first.splitlines()[1], second.splitlines()[1]) == ("2", "6")  # the 2 runs again (they ended), and 2 new ones
    code, report = await verify(tmp_path / "first.txt")
    assert (code, report["findings"]) == (0, [])
    assert (report["checkpoint"]["committed"], report["checkpoint"]["newer"]) == (2, 2)
    code, report = await verify(tmp_path / "second.txt")
    assert (code, report["findings"], report["checkpoint"]["committed"]) == (0, [], 4)

    # the signing key's holder forges the first checkpoint: same size, another tree
    origin, size = first.splitlines()[:2]
    signer = load_signer(str(keyed.audit.signing_key_file), origin)
    forged = tmp_path / "forged.txt"
    forged.write_text(sign_note(Checkpoint(origin, int(size), hashlib.sha256(b"forged").digest()).text(), signer))
    code, report = await verify(forged)
    assert code == 1 and {c for c, _ in checks(report)} == {"checkpoint.consistency"}

    # an insider rewrites the leaf log to match a rewritten run: the stored checkpoints no longer hash from it
    async with superuser(keyed) as conn:
        await conn.execute("UPDATE audit_checkpoint_leaves SET head = repeat('a', 64) WHERE idx = 0")
    code, report = await verify(tmp_path / "second.txt")
    assert code == 1 and "checkpoint.leaves" in {c for c, _ in checks(report)}


async def test_an_archived_run_is_not_missing(keyed: EngineConfig, tmp_path: Path) -> None:
    async with Engine(keyed, scheduler=True) as engine:
        runs = await start(engine, 0, 3)
        await take(tmp_path / "checkpoint.txt")
        await engine.advance_clock(2 * PERIOD + 5 * DAY)
    report = await run_archive(keyed, no_archive=True)  # retention without an archive: the entries are gone for good
    assert report.partitions[0].action == "dropped"
    async with superuser(keyed) as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE run_id = ANY($1::text[])", runs) == 0
    code, result = await verify(tmp_path / "checkpoint.txt")
    assert (code, result["findings"]) == (0, [])
    assert (result["checkpoint"]["committed"], result["checkpoint"]["archived"]) == (3, 3)
    async with superuser(keyed) as conn:  # but an archived run's recorded head is still held to the checkpoint
        await conn.execute("UPDATE runs SET head = repeat('b', 64) WHERE run_id = $1", runs[0])
    code, result = await verify(tmp_path / "checkpoint.txt")
    assert code == 1 and checks(result) == {("checkpoint.rewritten", runs[0])}


async def test_an_exported_run_carries_its_inclusion_proof_and_checks_offline(keyed: EngineConfig, tmp_path: Path) -> None:
    async with Engine(keyed, scheduler=True) as engine:
        runs = await start(engine, 0, 3)
        await take(tmp_path / "checkpoint.txt")
        later = await start(engine, 5, 1)
    code, vkey = await dee("audit", "checkpoint", "--public-key")
    assert code == 0
    exported = tmp_path / "run.json"
    code, out = await dee("audit", "export", runs[1], "--format", "json", "--output", str(exported))
    assert code == 0, out
    document = json.loads(exported.read_text())
    section = document["checkpoint"]
    assert (section["treeSize"], section["leaf"]["runId"], section["leaf"]["seq"]) == (3, runs[1], len(document["entries"]))
    assert section["note"] == (tmp_path / "checkpoint.txt").read_text()
    code, out = await dee("audit", "verify-export", str(exported), "--public-key", vkey.strip())
    assert code == 0, out

    document["entries"][-1]["output"]["outcome"] = "replied"
    exported.write_text(json.dumps(document))
    code, out = await dee("audit", "verify-export", str(exported), "--public-key", vkey.strip(), "--json")
    assert code == 1 and json.loads(out)["problems"], out

    code, out = await dee("audit", "export", later[0], "--format", "json", "--output", str(tmp_path / "later.json"))
    assert code == 0 and json.loads((tmp_path / "later.json").read_text())["checkpoint"] is None
    code, out = await dee("audit", "verify-export", str(tmp_path / "later.json"), "--public-key", vkey.strip())
    assert code == 1 and "no checkpoint" in out


async def test_the_periodic_checkpoint_runs_one_at_a_time(keyed: EngineConfig) -> None:
    config = msgspec.structs.replace(keyed, audit=msgspec.structs.replace(keyed.audit, checkpoint_interval_s=60))
    async with Engine(config, scheduler=True) as engine:
        await start(engine, 0, 2)
    holder = await asyncpg.connect(config.database)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            assert await checkpoint_once(config) is None  # another daemon is at it: this one skips its turn
        assert await checkpoint_once(config) == 2
        root = await holder.fetchval("SELECT root FROM audit_checkpoints WHERE size = 2")
        note = await holder.fetchval("SELECT note FROM audit_checkpoints WHERE size = 2")
    finally:
        await holder.close()
    assert note.splitlines()[2] == base64.b64encode(bytes.fromhex(root)).decode()

    # the loop the daemons run: a checkpoint every interval, once something changed
    async with Engine(config, scheduler=True) as engine:
        await start(engine, 5, 1)
    loop = asyncio.create_task(checkpoint_loop(msgspec.structs.replace(
        config, audit=msgspec.structs.replace(config.audit, checkpoint_interval_s=1))))  # fmt: skip
    try:
        conn = await asyncpg.connect(config.database)
        try:
            for _ in range(100):
                if await conn.fetchval("SELECT max(size) FROM audit_checkpoints") == 3:  # the new run added
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the periodic checkpoint did not come")
        finally:
            await conn.close()
    finally:
        loop.cancel()


async def test_a_rotated_key_signs_on_and_the_old_notes_still_verify_with_the_old_key(
    keyed: EngineConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Engine(keyed, scheduler=True) as engine:
        await start(engine, 0, 2)
        old_note = await take(tmp_path / "old.txt")
        code, old_vkey = await dee("audit", "checkpoint", "--public-key")
        monkeypatch.setenv("DEE_AUDIT_SIGNING_KEY_FILE", str(new_key(tmp_path / "new.pem")))
        handover = await take(tmp_path / "handover.txt")  # the same tree, under the new key
        assert handover != old_note and handover.split("\n\n")[0] == old_note.split("\n\n")[0]
        await start(engine, 5, 1)
        await take(tmp_path / "new.txt")
    for note in ("handover.txt", "new.txt"):
        code, report = await verify(tmp_path / note)  # the configured (new) key; the stored old-key note is no finding
        assert (code, report["findings"]) == (0, []), note
    code, report = await verify(tmp_path / "old.txt", "--public-key", old_vkey.strip())
    assert (code, report["findings"]) == (0, [])
    code, report = await verify(tmp_path / "old.txt")
    assert code == 1 and [f["check"] for f in report["findings"]] == ["checkpoint.signature"]
