"""`dee migrate`, `dee health` and `dee simulate` against the real services."""

from __future__ import annotations

import re
import uuid

import pytest

from dee.ops.cli import main
from dee.stores.postgres.admin import drop_database, with_database
from tests.integration.conftest import PG_DSN, REDIS_URL


@pytest.fixture
def fresh_names(monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"dee_cli_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("DATABASE_URL", with_database(PG_DSN, name))
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("DEE_NAMESPACE", name)
    monkeypatch.setenv("DEE_SCHEDULER_PARTITIONS", "4")
    return name


async def test_simulate_on_postgres_and_redis_matches_the_in_memory_run(
    fresh_names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    database = with_database(PG_DSN, fresh_names + "_sim")
    try:
        args = ["simulate", "config/plans/sales-outreach-v2.yaml", "--contacts", "40", "--days", "10", "--quiet"]
        assert await _run_cli([*args, "--database", database]) == 0
        daemon = capsys.readouterr().out
        assert await _run_cli([*args, "--memory"]) == 0
        memory = capsys.readouterr().out
    finally:
        await drop_database(database)

    def table(text: str) -> list[str]:
        return re.findall(r"^completed\s+\w+\s+\d+$", text, re.M)

    assert table(daemon) == table(memory) and table(daemon)
    assert "replay: 40/40 runs identical" in daemon and "audit chains: 40/40 valid" in daemon


async def test_migrate_is_idempotent_and_health_reports(fresh_names: str, capsys: pytest.CaptureFixture[str]) -> None:
    database = with_database(PG_DSN, fresh_names)
    try:
        assert await _run_cli(["migrate"]) == 0
        assert "applied: 0001_init.sql" in capsys.readouterr().out
        assert await _run_cli(["migrate"]) == 0
        assert "up to date" in capsys.readouterr().out
        assert await _run_cli(["health"]) == 1  # no daemon owns the partitions
        out = capsys.readouterr().out
        assert re.search(r"ok\s+postgres", out) and re.search(r"ok\s+migrations\s+up to date", out)
        assert re.search(r"FAIL\s+partitions\s+0/4 owned", out)
    finally:
        await drop_database(database)


async def _run_cli(argv: list[str]) -> int:
    """The CLI runs its own event loop; run it in a thread so this test's loop is not nested."""
    import asyncio

    return await asyncio.to_thread(main, argv)
