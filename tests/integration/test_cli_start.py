"""`dee runs start`: contacts from a JSON Lines file enrolled through a daemon, the consents
asked for recorded first (for the contacts it can enrol), a second start skipping who is enrolled; and a bad file, a bad
variable or a bad sample size refused in one line before anything is sent."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from dee import Engine, EngineConfig
from tests.integration.test_cli_runs import cli_env, dee

__all__ = ["cli_env"]  # the fixture, shared with test_cli_runs.py
PLAN = "config/plans/sales-outreach-v2.yaml"


def contacts_file(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "contacts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


async def test_start_enrols_a_files_contacts_with_their_consents_once(
    cli_env: EngineConfig, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    people = [{"id": f"s{i}", "email": f"s{i}@acme.test", "phone": f"+155500{i}", "attributes": {"company": "A"}} for i in (1, 2)]
    bad = {"id": "s3", "email": "s3@acme.test", "nickname": "no such field"}
    path = contacts_file(tmp_path, json.dumps(people[0]), "", json.dumps(people[1]), json.dumps(bad))
    async with Engine(cli_env, scheduler=True) as engine:
        code, out = await dee(capsys, "runs", "start", PLAN, "--contacts", path, "--var", "product=DEE", "--consent", "voice")
        lines = out.strip().splitlines()
        assert code == 1 and lines[0] == "sales-outreach-v2: 2 run(s) started, 0 skipped (already enrolled or suppressed), 1 refused"
        assert lines[1].startswith("dee: 1 contact(s) refused, first: s3: invalid contact: ") and len(lines) == 2
        await engine.run_until_idle()
        runs = (await engine.list_runs(plan_id="sales-outreach-v2")).runs
        assert sorted(r.contact_id for r in runs) == ["s1", "s2"] and {r.current_step for r in runs} == {"wait-1"}
        code, out = await dee(capsys, "runs", "start", PLAN, "--contacts", path, "--var", "product=DEE", "--json")
        result = json.loads(out.split("\ndee: ")[0])
        assert code == 1 and (result["created"], result["skipped"], len(result["errors"])) == (0, 2, 1)
    conn = await asyncpg.connect(cli_env.database)
    try:
        rows = await conn.fetch("SELECT contact_id, channel, status, source FROM consents ORDER BY contact_id")
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [(c, "voice", "granted", "dee runs start --consent") for c in ("s1", "s2")]


@pytest.mark.parametrize(("args", "message"), [
    (["--contacts", "{dir}/missing.jsonl"], "dee: {dir}/missing.jsonl: no such contacts file"),
    (["--contacts", "{file}"], "dee: {file}:2: not JSON (Expecting value)"),
    (["--sample", "0"], "dee: --sample 0: give at least one contact"),
    (["--sample", "3", "--var", "product"], "dee: --var 'product': expected KEY=VALUE"),
])  # fmt: skip
async def test_bad_input_is_refused_in_one_line_before_anything_is_sent(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    file = contacts_file(tmp_path, '{"id": "a"}', "not json", "[1, 2]")
    fill = {"dir": str(tmp_path), "file": file}
    code, out = await dee(capsys, "runs", "start", PLAN, *(a.format(**fill) for a in args))
    assert (code, out.strip()) == (2, message.format(**fill))  # no daemon, no database: refused before either is asked


async def test_a_contact_that_is_no_object_is_refused_with_its_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    file = contacts_file(tmp_path, '{"id": "a"}', "[1, 2]")
    code, out = await dee(capsys, "runs", "start", PLAN, "--contacts", file)
    assert (code, out.strip()) == (2, f"dee: {file}:2: a contact is a JSON object, not list")
