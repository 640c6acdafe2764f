"""The `dee` command: each subcommand's output and exit code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dee.ops.cli import main

PLANS = Path("config/plans")


def test_plan_validate_accepts_the_shipped_plans(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "validate", str(PLANS / "sales-outreach-v2.yaml"), str(PLANS / "welcome-sequence.yaml")]) == 0
    out = capsys.readouterr().out
    assert "sales-outreach-v2.yaml: ok  (sales-outreach-v2, 13 steps" in out
    assert "welcome-sequence.yaml: ok  (welcome-sequence, 8 steps" in out


def test_plan_validate_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "id: bad\nname: Bad\nsteps:\n"
        "  - {id: a, type: wait, duration: {days: 1}}\n"
        "  - {id: a, type: end, outcome: x}\n"
        "  - {id: c, type: sendEmail, templateId: nope, subject: s}\n"
    )
    assert main(["plan", "validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "invalid" in out
    assert "a: duplicate step id" in out
    assert "c: unknown email template 'nope'" in out


def test_plan_validate_reports_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "validate", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().out


def test_plan_graph_mermaid_and_dot(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "graph", str(PLANS / "welcome-sequence.yaml")]) == 0
    mermaid = capsys.readouterr().out
    assert mermaid.startswith("flowchart TD")
    assert '-->|"events.hasClick(any)"|' in mermaid
    assert mermaid.count("-->") == 7  # 5 linear edges + 2 branch arms; ends have no successor
    assert main(["plan", "graph", str(PLANS / "welcome-sequence.yaml"), "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert '"check-engagement" -> "end-engaged" [label="events.hasClick(any)"];' in dot
    assert '"end-checked-in" ->' not in dot


def test_plugins_lists_builtins_with_their_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) >= {"dee_flow", "dee_email", "dee_voice"}
    assert rows["dee_flow"]["source"].startswith("entry point of dee ")
    assert rows["dee_flow"]["provides"] == ["step type wait", "step type branch", "step type end"]
    assert "voice adapter simulated" in rows["dee_voice"]["provides"]


def test_simulate_small_run_replays_and_verifies(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", str(PLANS / "sales-outreach-v2.yaml"), "--contacts", "40", "--days", "10", "--quiet", "--memory"])
    out = capsys.readouterr().out
    assert code == 0
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^completed\s+(\w+)\s+(\d+)$", out, re.M)}
    assert sum(counts.values()) == 40
    assert set(counts) <= {"replied", "no_response"}
    assert "replay: 40/40 runs identical" in out
    assert "audit chains: 40/40 valid" in out
    assert "run.completed" in out


def test_simulate_is_reproducible(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["simulate", str(PLANS / "sales-outreach-v2.yaml"), "--contacts", "30", "--days", "10", "--quiet", "--memory"]
    main(args)
    first = capsys.readouterr().out
    main(args)
    second = capsys.readouterr().out

    def table(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("completed")]

    assert table(first) == table(second)


def test_bad_config_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "dee.toml"
    config.write_text("[scheduler]\nticks = 3\n")
    assert main(["--config", str(config), "plugins"]) == 2
    assert "dee: invalid configuration" in capsys.readouterr().err


# ---- behaving like a Unix tool -----------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert re.fullmatch(r"dee \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_config_is_accepted_before_and_after_the_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "dee.toml"
    config.write_text('config_dir = "nowhere"\n', encoding="utf-8")
    plan = str(PLANS / "welcome-sequence.yaml")
    for argv in (["--config", str(config), "plan", "validate", plan], ["plan", "validate", plan, "--config", str(config)],
                 ["plan", "--config", str(config), "validate", plan]):  # fmt: skip
        assert main(argv) == 2  # the file was read: its config_dir does not exist
        assert "config_dir" in capsys.readouterr().err
    assert main(["plan", "validate", plan]) == 0


def test_usage_and_configuration_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["runs", "list", "--no-such-option"])
    assert done.value.code == 2
    assert capsys.readouterr().err == "dee: unrecognized arguments: --no-such-option (see `dee --help`)\n"
    broken = tmp_path / "dee.toml"
    broken.write_text("[scheduler\n", encoding="utf-8")
    assert main(["--config", str(broken), "plugins"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"dee: {broken}")


def test_json_output_of_the_read_commands_that_need_no_services(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    plugins = json.loads(capsys.readouterr().out)
    assert {p["name"] for p in plugins} >= {"dee_flow", "dee_email", "dee_voice"}
    assert main(["plan", "validate", "--json", str(PLANS / "welcome-sequence.yaml"), "missing.yaml"]) == 1
    verdicts = json.loads(capsys.readouterr().out)
    assert [(v["file"], v["valid"]) for v in verdicts] == [(str(PLANS / "welcome-sequence.yaml"), True), ("missing.yaml", False)]


def test_a_closed_pipe_ends_quietly() -> None:
    import fcntl
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    fcntl.fcntl(write, 1031, 4096)  # F_SETPIPE_SZ: the schema (12 KB) cannot all fit in the pipe
    proc = subprocess.Popen([sys.executable, "-m", "dee", "schema"], stdout=write, stderr=subprocess.PIPE)
    os.close(write)
    assert os.read(read, 10)  # like `dee schema | head -c 10`
    os.close(read)
    _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (141, b"")
