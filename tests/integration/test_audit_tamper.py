"""Tampering with the audit log as an insider with the database (the superuser, the
append-only triggers bypassed), each time against a signed checkpoint taken before it: every
case is found, and named by the check that finds it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dee import Engine, EngineConfig
from dee.checkpoint.keys import load_signer
from tests.integration.checkpoint_helpers import (
    Signed,
    checks,
    cli_environment,
    dee,
    edit_row,
    insider_key,
    new_key,
    rechain,
    resealed,
    rows_of,
    start,
    superuser,
    verify,
    with_key,
)  # fmt: skip


@pytest.fixture
async def signed(deployment: EngineConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Signed]:
    """Three finished runs and a checkpoint of them, signed with a key of the test's own."""
    config = with_key(deployment, new_key(tmp_path / "signing.pem"))
    cli_environment(config, monkeypatch)
    async with Engine(config, scheduler=True) as engine:
        runs = await start(engine, 0, 3)
        assert {(await engine.get_run(r)).outcome for r in runs} == {"no_response"}
    code, out = await dee("audit", "checkpoint", "--output", str(tmp_path / "checkpoint.txt"))
    assert code == 0, out
    assert out.splitlines()[1] == "3"  # three leaves: one per run
    yield Signed(config, runs, tmp_path / "checkpoint.txt", tmp_path)


async def test_an_untouched_database_verifies(signed: Signed) -> None:
    code, report = await verify(signed.checkpoint)
    assert (code, report["findings"], report["valid"]) == (0, [], True), report["findings"]
    assert (report["checkpoint"]["committed"], report["checkpoint"]["checked"], report["checkpoint"]["newer"]) == (3, 3, 0)
    code, out = await dee("audit", "verify")
    assert code == 0, out


async def test_an_edited_entry_breaks_its_chain(signed: Signed) -> None:
    run = signed.runs[0]
    async with superuser(signed.config) as conn:
        # contact data is sealed: without the key an insider can only alter the ciphertext
        await conn.execute("""UPDATE audit_log SET output = replace(output, '"sealed":"', '"sealed":"AAAA') """
                           "WHERE run_id = $1 AND action = 'run.completed'", run)  # fmt: skip
    code, report = await verify(signed.checkpoint)
    assert code == 1 and ("chain", run) in checks(report)


async def test_a_deleted_entry_breaks_its_chain(signed: Signed) -> None:
    run = signed.runs[1]
    async with superuser(signed.config) as conn:
        await conn.execute("DELETE FROM audit_log WHERE run_id = $1 AND seq = 3", run)
    code, report = await verify(signed.checkpoint)
    assert code == 1 and ("chain", run) in checks(report)


async def test_two_entries_swapped_break_the_chain(signed: Signed) -> None:
    run = signed.runs[2]
    async with superuser(signed.config) as conn:
        for old, new in ((2, -2), (3, 2), (-2, 3)):
            await conn.execute("UPDATE audit_log SET seq = $3 WHERE run_id = $1 AND seq = $2", run, old, new)
    code, report = await verify(signed.checkpoint)
    assert code == 1 and ("chain", run) in checks(report)


async def test_a_truncated_run_with_its_head_moved_back_is_caught_by_the_checkpoint(signed: Signed) -> None:
    run = signed.runs[0]
    async with superuser(signed.config) as conn:
        rows = await rows_of(conn, run)
        await conn.execute("DELETE FROM audit_log WHERE run_id = $1 AND seq > 3", run)
        await conn.execute("UPDATE runs SET seq = 3, head = $2 WHERE run_id = $1", run, rows[2].checksum)
    code, report = await verify(signed.checkpoint)
    assert code == 1
    assert ("checkpoint.truncated", run) in checks(report)
    assert ("chain", run) not in checks(report)  # the chain alone says nothing: it ends where the row says


async def test_a_deleted_run_is_missing(signed: Signed) -> None:
    run = signed.runs[1]
    async with superuser(signed.config) as conn:
        await conn.execute("DELETE FROM audit_log WHERE run_id = $1", run)
        await conn.execute("DELETE FROM runs WHERE run_id = $1", run)
    code, report = await verify(signed.checkpoint)
    assert code == 1 and checks(report) == {("checkpoint.missing_run", run)}
    code, out = await dee("audit", "verify")  # without the checkpoint, nothing shows it
    assert code == 0, out


async def test_a_consistent_rewrite_is_caught_by_the_checkpoint(signed: Signed) -> None:
    run = signed.runs[2]
    async with superuser(signed.config) as conn:
        key = await insider_key(conn, run)  # with the master key the database keeps: sealed anew
        await rechain(conn, run, lambda row: resealed(key, row, lambda output: {**output, "outcome": "replied"})
                      if row.action == "run.completed" else row)  # fmt: skip
        await edit_row(conn, run, outcome="replied")
    async with Engine(signed.config, scheduler=False) as engine:
        assert (await engine.audit.get_by_run(run))[-1].output["outcome"] == "replied"  # type: ignore[index]  # it reads as rewritten
    code, out = await dee("audit", "verify")
    assert code == 0, out  # the chain verifies and the row agrees with it
    code, report = await verify(signed.checkpoint)
    assert code == 1 and checks(report) == {("checkpoint.rewritten", run)}


async def test_a_sealed_part_moved_to_another_entry_does_not_open(signed: Signed) -> None:
    """Without the key an insider may still move ciphertext: the blob of the last entry's output
    put on the first's, the chain re-made around it. Each blob is bound to its run, seq and
    field, so plain verify names it (`sealed`), and the checkpoint sees the rewrite."""
    run = signed.runs[1]
    async with superuser(signed.config) as conn:
        rows = await rows_of(conn, run)
        moved = rows[-1].output
        await rechain(conn, run, lambda row: row._replace(output=moved) if row.seq == 1 else row)
    code, out = await dee("audit", "verify", "--json")
    assert code == 1 and {(f["check"], f["run_id"]) for f in json.loads(out)["findings"]} == {("sealed", run)}
    code, report = await verify(signed.checkpoint)
    assert code == 1 and ("checkpoint.rewritten", run) in checks(report)


async def test_a_moved_timestamp_is_caught_by_the_checkpoint(signed: Signed) -> None:
    run = signed.runs[0]
    async with superuser(signed.config) as conn:
        await rechain(conn, run, lambda row: row._replace(timestamp=row.timestamp.replace("2026", "2025")) if row.seq == 2 else row)
    code, report = await verify(signed.checkpoint)
    assert code == 1 and checks(report) == {("checkpoint.rewritten", run)}


async def test_an_edited_run_row_disagrees_with_its_chain(signed: Signed) -> None:
    run = signed.runs[1]
    async with superuser(signed.config) as conn:
        await edit_row(conn, run, outcome="replied")
    code, out = await dee("audit", "verify", "--json")
    assert code == 1
    assert {(f["check"], f["run_id"]) for f in json.loads(out)["findings"]} == {("run_row", run)}
    code, report = await verify(signed.checkpoint)
    assert code == 1 and checks(report) == {("run_row", run), ("checkpoint.run_row", run)}


async def test_a_checkpoint_with_a_bad_signature_is_refused(signed: Signed) -> None:
    note = signed.checkpoint.read_text()
    origin, size, root, rest = note.split("\n", 3)
    spoiled = signed.folder / "spoiled.txt"
    spoiled.write_text("\n".join([origin, str(int(size) + 1), root, rest]))
    code, report = await verify(spoiled)
    assert code == 1 and [f["check"] for f in report["findings"]] == ["checkpoint.signature"]
    code, vkey = await dee("audit", "checkpoint", "--public-key")
    assert code == 0 and vkey.startswith("dee.audit/")
    name, _, _ = vkey.strip().split("+", 2)
    other = load_signer(str(new_key(signed.folder / "other.pem")), name).verifier.vkey  # the same name, another key
    code, report = await verify(signed.checkpoint, "--public-key", other)
    assert code == 1 and [f["check"] for f in report["findings"]] == ["checkpoint.signature"]
    code, report = await verify(signed.checkpoint, "--public-key", vkey.strip())
    assert (code, report["findings"]) == (0, [])
