"""An erasure is not tampering: runs whose contact is erased after a signed checkpoint (one that
had ended, one cancelled by the erasure) still verify against it, and their rows agree with
their chains (the `run_row` check reads the erasure's outcome from its `run.cancelled`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dee import Engine, EngineConfig
from tests.integration.archive_helpers import contact
from tests.integration.checkpoint_helpers import PLAN, cli_environment, dee, new_key, start, verify, with_key


async def test_runs_erased_after_a_checkpoint_verify_against_it(
    deployment: EngineConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = with_key(deployment, new_key(tmp_path / "signing.pem"))
    cli_environment(config, monkeypatch)
    checkpoint = tmp_path / "checkpoint.txt"
    async with Engine(config, scheduler=True) as engine:
        (ended,) = await start(engine, 0, 1)
        waiting = (await engine.execute(PLAN, contact(1), {"product": "DEE"})).id
        await engine.run_until_idle()
        assert (await engine.get_run(waiting)).status == "waiting"
        code, out = await dee("audit", "checkpoint", "--output", str(checkpoint))
        assert code == 0, out
        for n in (0, 1):
            await engine.erase_contact(contact(n)["id"], "gdpr-request")
        cancelled = await engine.get_run(waiting)
        assert (cancelled.status, cancelled.outcome) == ("cancelled", "erased")
        assert (await engine.get_run(ended)).outcome == "no_response"
    code, report = await verify(checkpoint)
    assert (code, report["findings"]) == (0, []), report
    code, out = await dee("audit", "verify", ended, waiting)
    assert code == 0, out
