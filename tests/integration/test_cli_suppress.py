"""`dee suppress import FILE` against a deployment with a daemon running: a real file in the FTC's
`area code,number` shape suppresses the contacts with those numbers on voice, importing it again
changes nothing, a file with a line that is no number imports nothing (unless `--skip-invalid`),
and bad usage is one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dee import Engine, EngineConfig, load_plan
from dee.ops.cli import main
from dee.records import NumberImport
from tests.contract.scenarios import VARS, contact, may_call
from tests.integration.test_cli_runs import cli_env, dee

__all__ = ["cli_env"]  # the fixture this module uses


async def test_a_do_not_call_file_is_imported_once(cli_env: EngineConfig, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    dnc = tmp_path / "dnc-2026-01.txt"
    dnc.write_text("# FTC National Do Not Call Registry, area code 202\n202,5550101\n202,5550102\n\n202,5550199\n")
    async with Engine(cli_env, scheduler=True) as engine:
        await may_call(engine, "k1", "k2")
        plan = load_plan("config/plans/sales-outreach-v2.yaml")
        runs = [(await engine.execute(plan, {**contact(cid), "phone": number}, VARS)).id
                for cid, number in (("k1", "+12025550101"), ("k2", "+12025550150"))]  # fmt: skip
        await engine.run_until_idle()

        code, out = await dee(capsys, "suppress", "import", str(dnc), "--region", "US", "--source", "ftc-2026-01")
        assert (code, out.splitlines()) == (0, [
            f"{dnc}: 3 numbers read: 3 newly listed (regulatory, voice), 0 listed before",
            "contacts with a listed number: 1, 1 suppressed now; 1 runs go on without voice",
        ])  # fmt: skip
        code, out = await dee(capsys, "suppress", "import", str(dnc), "--region", "US", "--source", "ftc-2026-01", "--json")
        summary = json.loads(out)
        assert code == 0 and summary == {"file": str(dnc), "level": "regulatory", "channel": "voice", "source": "ftc-2026-01",
                                         "invalid_skipped": 0, "read": 3, "new": 0, "listed": 3, "contacts": 1, "suppressed": 0,
                                         "runs_cancelled": 0, "runs_restricted": 0}  # fmt: skip
        code, out = await dee(capsys, "suppress", "import", str(dnc), "--region", "US")
        assert code == 0 and out.splitlines()[-1] == "nothing changed: every number was listed and every contact suppressed before"

        report = await engine.compliance.report(0, await engine.now_tick())
        assert [(s.contact_id, s.level, s.channel, s.source, s.reason) for s in report.suppressions] == [
            ("k1", "regulatory", "voice", "ftc-2026-01", "do-not-call list")]  # fmt: skip
        assert [(await engine.get_run(r)).status for r in runs] == ["waiting", "waiting"]


async def test_a_file_with_invalid_lines_imports_nothing_unless_told(
    cli_env: EngineConfig, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:  # fmt: skip
    bad = tmp_path / "list.csv"
    bad.write_text("name,phone\nJane,+1 202 555 0103\nSam,call me maybe\nAl,+44 20 7946 0958\n")
    async with Engine(cli_env, scheduler=True) as engine:
        code, out = await dee(capsys, "suppress", "import", str(bad), "--all-channels")
        assert (code, out.strip()) == (2, f"dee: {bad}: 1 invalid line (line 3 'Sam,call me maybe': not a phone number); "
                                          "nothing imported")  # fmt: skip
        assert await engine.suppress_numbers(["+12025550103"], channel=None) == NumberImport(read=1, new=1)  # it was not listed

        code, out = await dee(capsys, "suppress", "import", str(bad), "--all-channels", "--skip-invalid", "--reason", "asked")
        assert (code, out.splitlines()[0]) == (0, f"{bad}: 2 numbers read: 1 newly listed (regulatory, every channel), "
                                                  "1 listed before; 1 invalid lines skipped")  # fmt: skip


@pytest.mark.parametrize(("argv", "message"), [
    (["--level", "global", "--channel", "voice"], "dee: a global listing covers every channel: it takes no channel "
                                                  "(use --level channel or regulatory)"),
    (["--region", "XX"], "dee: unknown region 'XX': a country code such as US, GB or DE"),
    (["--source", " "], "dee: a listing needs a source (where the list comes from)"),
])  # fmt: skip
def test_a_bad_listing_is_one_line_before_anything_is_read(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str],
                                                           message: str) -> None:  # fmt: skip
    assert main(["suppress", "import", str(tmp_path / "not-read.txt"), *argv]) == 2  # refused before the file is opened
    assert capsys.readouterr().err == message + "\n"


def test_an_unknown_channel_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as done:
        main(["suppress", "import", str(tmp_path / "dnc.txt"), "--channel", "sms"])
    err = capsys.readouterr().err
    assert (done.value.code, err.count("\n")) == (2, 1) and err.startswith("dee: argument --channel: invalid choice: 'sms'")


def test_a_missing_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["suppress", "import", str(tmp_path / "absent.txt")]) == 2
    assert capsys.readouterr().err == f"dee: {tmp_path / 'absent.txt'}: No such file or directory\n"
