"""The README's Python examples run as written (a quickstart that fails is worse than none)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), namespace)
    if index == 0:
        out = capsys.readouterr().out
        assert "status='completed'" in out and "outcome='no_response'" in out
        assert out.rstrip().endswith("True\nTrue")
