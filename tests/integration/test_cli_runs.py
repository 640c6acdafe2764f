"""`dee runs ...` and `dee audit verify` against a deployment with a daemon running."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from dee import ConfigError, ConsentRecord, Engine, EngineConfig, load_plan
from dee.ops.cli import main


@pytest.fixture
def cli_env(deployment: EngineConfig, monkeypatch: pytest.MonkeyPatch) -> EngineConfig:
    monkeypatch.setenv("DATABASE_URL", deployment.database)
    monkeypatch.setenv("REDIS_URL", deployment.redis)
    monkeypatch.setenv("DEE_NAMESPACE", deployment.namespace)
    monkeypatch.setenv("DEE_SCHEDULER_PARTITIONS", str(deployment.scheduler.partitions))
    monkeypatch.setenv("DEE_SCHEDULER_CLOCK", "manual")
    return deployment


async def dee(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run the CLI (its own event loop, in a thread); returns the exit code and stdout+stderr."""
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def test_runs_and_audit_commands(cli_env: EngineConfig, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    async with Engine(cli_env, scheduler=True) as engine:
        plan = load_plan("config/plans/sales-outreach-v2.yaml")
        contact = {"id": "k1", "email": "k1@acme.test", "phone": "+1555", "attributes": {"company": "A"}}
        run = await engine.execute(plan, contact, {"product": "DEE"})
        await engine.run_until_idle()

        code, out = await dee(capsys, "runs", "list")
        assert code == 0 and run.id in out and "1 of 1" in out
        code, out = await dee(capsys, "runs", "show", run.id)
        assert code == 0 and json.loads(out)["current_step"] == "wait-1"
        code, out = await dee(capsys, "runs", "pause", run.id)
        assert (code, out.strip()) == (0, f"{run.id}: paused")
        code, out = await dee(capsys, "runs", "pause", run.id)
        assert (code, out.strip()) == (2, f"dee: run {run.id}: cannot go from paused to paused: "
                                          "only an active or waiting run can be paused")  # fmt: skip
        code, out = await dee(capsys, "runs", "resume", run.id)
        assert (code, out.strip()) == (0, f"{run.id}: waiting")
        code, out = await dee(capsys, "runs", "timeline", run.id)
        assert code == 0 and "run.paused" in out and "run.resumed" in out
        code, out = await dee(capsys, "runs", "replay", run.id)
        assert (code, out.strip()) == (0, "identical")
        code, out = await dee(capsys, "audit", "verify")
        assert (code, out.strip()) == (0, "1/1 chains valid")
        code, out = await dee(capsys, "runs", "cancel", run.id, "--reason", "asked to stop")
        assert (code, out.strip()) == (0, f"{run.id}: cancelled")
        code, out = await dee(capsys, "audit", "export", run.id, "--output", str(tmp_path / "run.json"))
        exported = json.loads((tmp_path / "run.json").read_bytes())
        assert code == 0 and (exported["run"]["status"], exported["chain"]["valid"]) == ("cancelled", True)
        assert [e["action"] for e in exported["entries"]][-1] == "run.cancelled"
        code, out = await dee(capsys, "audit", "export", run.id, "--format", "pdf", "--output", str(tmp_path / "run.pdf"))
        assert code == 0 and (tmp_path / "run.pdf").read_bytes().startswith(b"%PDF-1.4")
        code, out = await dee(capsys, "runs", "show", "no-such-run")
        assert (code, out.strip()) == (2, "dee: run no-such-run not found")


async def test_read_commands_print_json(cli_env: EngineConfig, capsys: pytest.CaptureFixture[str]) -> None:
    async with Engine(cli_env, scheduler=True) as engine:
        contact = {"id": "k2", "email": "k2@acme.test", "phone": "+1555", "attributes": {"company": "A"}}
        run = await engine.execute(load_plan("config/plans/sales-outreach-v2.yaml"), contact, {"product": "DEE"})
        await engine.run_until_idle()
        code, out = await dee(capsys, "runs", "list", "--json")
        page = json.loads(out)
        assert code == 0 and page["total"] == 1 and page["runs"][0]["id"] == run.id
        code, out = await dee(capsys, "runs", "timeline", run.id, "--json")
        assert code == 0 and [line["action"] for line in json.loads(out)][:2] == ["run.started", "step.entered"]
        code, out = await dee(capsys, "runs", "replay", run.id, "--json")
        assert code == 0 and json.loads(out)["identical"] is True
        code, out = await dee(capsys, "audit", "verify", "--json")
        verdict = json.loads(out)
        assert code == 0 and (verdict["valid"], verdict["runs"], verdict["chains"][run.id]["valid"]) == (True, 1, True)
        code, out = await dee(capsys, "health", "--json")
        health = json.loads(out)
        assert health["checks"]["postgres"]["ok"] and health["checks"]["redis"]["ok"]
        assert code == (0 if health["healthy"] else 1)


async def test_the_compliance_report_prints_as_text_and_json(cli_env: EngineConfig, capsys: pytest.CaptureFixture[str]) -> None:
    async with Engine(cli_env, scheduler=True) as engine:
        await engine.record_consent(ConsentRecord(contact_id="k-tokyo", channel="voice", status="granted", source="form"))
        contact = {"id": "k-tokyo", "email": "k@acme.test", "phone": "+81312345678", "timezone": "Asia/Tokyo",
                   "attributes": {"company": "A", "first_name": "Kei"}}  # fmt: skip
        run = await engine.execute(load_plan("config/plans/sales-outreach-v2.yaml"), contact, {"product": "DEE"}, start_at=6 * 3600)
        await engine.advance_clock(10 * 86_400)  # the call is due at 03:00 in Tokyo and waits for 08:00
        now = await engine.now_tick()
        code, out = await dee(capsys, "audit", "compliance")
        assert code == 0 and out.startswith(f"compliance report, ticks 0..{now} (a tick is 1000 ms)\n")
        assert f"  tick 644400  k-tokyo  call-attempt  2026-01-13 08:00 Asia/Tokyo (contact)  within hours  run {run.id}\n" in out
        assert "deferrals: 1\n  tick 626400 -> 644400 (18000 ticks, 5:00:00)  k-tokyo  call-attempt (voice)  sent at tick 644400  " in out
        assert "denials: 0\n" in out and out.rstrip().endswith("audit chains: 1/1 valid")
        code, out = await dee(capsys, "audit", "compliance", "--from", "626400", "--to", "626400", "--json")
        report = json.loads(out)
        assert code == 0 and (report["period_from"], report["period_to"], report["policy_verdicts"]) == (626400, 626400, {"defer": 1})
        assert [(d["run_id"], d["until_tick"], d["sent_tick"], d["gates"]) for d in report["deferrals"]] == [
            (run.id, 644400, 644400, ["calling-hours"])]  # fmt: skip
        assert report["verdicts_by_gate"] == {"calling-hours": {"defer": 1}, "consent": {"allow": 1}, "suppression": {"allow": 1}}
        code, out = await dee(capsys, "audit", "compliance", "--from", "10", "--to", "9")
        assert (code, out.strip()) == (2, "dee: --to 9 is before --from 10")


async def test_an_unreachable_service_is_one_line_without_its_password(
    cli_env: EngineConfig, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "S3cretPassw0rd"
    wrong_db = cli_env.database.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@") + "_missing"
    monkeypatch.setenv("DATABASE_URL", wrong_db)
    code, out = await dee(capsys, "runs", "list")
    assert code == 3 and len(out.strip().splitlines()) == 1
    assert out.startswith("dee: cannot reach PostgreSQL at postgresql://postgres:***@") and "does not exist" in out
    monkeypatch.setenv("DATABASE_URL", cli_env.database)
    monkeypatch.setenv("REDIS_URL", f"redis://:{secret}@127.0.0.1:1/0")  # nothing listens on port 1
    code, out = await dee(capsys, "runs", "list")
    assert (code, out.strip()) == (3, "dee: cannot reach Redis at redis://:***@127.0.0.1:1/0: connection refused")
    code, out = await dee(capsys, "health")
    assert code == 1 and "FAIL  redis" in out and "redis://:***@127.0.0.1:1/0" in out
    for argv in (["migrate"], ["audit", "verify"], ["runs", "show", "x"]):
        code, out = await dee(capsys, *argv)
        assert secret not in out and "Traceback" not in out, argv


async def test_an_engine_is_a_client_unless_it_is_asked_to_schedule(cli_env: EngineConfig) -> None:
    async with Engine(cli_env) as client:
        assert client.scheduler is False and client._backend.runtime is None  # type: ignore[attr-defined]
        async with Engine(cli_env, scheduler=True) as daemon:
            assert daemon._backend.runtime is not None  # type: ignore[attr-defined]
            contact = {"id": "k3", "email": "k3@acme.test", "attributes": {"first_name": "Kim"}}
            run = await client.execute(load_plan("config/plans/welcome-sequence.yaml"), contact, {"product": "DEE"})
            await client.run_until_idle()  # the embedded daemon did the work; the client only asked
            assert (await client.get_run(run.id)).status == "waiting"
    with pytest.raises(ConfigError, match="memory:// engine is its own deployment"):
        Engine(EngineConfig(database="memory://"), scheduler=False)
