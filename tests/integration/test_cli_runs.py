"""`dee runs ...` and `dee audit verify` against a deployment with a daemon running."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from dee import Engine, EngineConfig, load_plan
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
