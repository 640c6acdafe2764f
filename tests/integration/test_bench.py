"""`dee bench` end to end at a small N: real daemon processes, and only its correctness output
is checked (speed targets are for the benchmark itself, run by hand: see the README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from dee.ops.bench.workload import expected
from dee.stores.postgres.admin import with_database
from tests.integration.conftest import PG_DSN, REDIS_URL

REPO = Path(__file__).resolve().parents[2]


def test_dee_bench_at_a_small_n_reports_a_correct_run() -> None:
    contacts, idle = 120, 400
    database = with_database(PG_DSN, f"dee_test_{uuid.uuid4().hex[:12]}")
    done = subprocess.run(
        [sys.executable, "-m", "dee", "bench", "--contacts", str(contacts), "--daemons", "1,2",
         "--idle-runs", str(idle), "--database", database, "--redis", REDIS_URL, "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    want = expected(contacts)
    assert figures["correct"] is True and figures["problems"] == []
    assert figures["transitions"] == want.transitions == 1_007
    assert figures["replay_runs"] == figures["replay_identical"] == figures["chains_valid"] == contacts
    assert figures["idle_runs"] == idle
    for key in ("transitions_per_s_1_daemon", "transitions_per_s_2_daemon", "enrolments_per_s", "raw_rows_per_s",
                "replays_per_s", "write_efficiency", "idle_tick_ms", "idle_rss_growth_mb"):  # fmt: skip
        assert isinstance(figures[key], int | float), key
    # stored audit bytes per transition, ids and checksums included: about 1,990 in clear (whole
    # contexts in every step.entered made it about 2,700, and more the longer a run); sealing the
    # contact data (`[privacy] encrypt_contact_data`, on by default) adds about 600: base64, a
    # nonce, a tag and a key id per part, and ciphertext that TOAST cannot compress
    assert 1_000 < figures["audit_bytes_per_transition"] < 2_800


def test_the_daemons_run_on_the_benchs_own_settings() -> None:
    """The policy gates disabled in the bench's environment only: replay, which runs on the bench's
    settings, finds every run identical, so the daemons ran without the gates too."""
    database = with_database(PG_DSN, f"dee_test_{uuid.uuid4().hex[:12]}")
    done = subprocess.run(
        [sys.executable, "-m", "dee", "bench", "--contacts", "60", "--daemons", "1", "--database", database,
         "--redis", REDIS_URL, "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "DEE_PLUGINS_DISABLED": "dee_policy"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["correct"] is True and figures["replay_identical"] == 60
