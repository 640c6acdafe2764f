"""Shared test set-up: tests run from the repository root, where `config/` lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("DEE_CONFIG_DIR", raising=False)
    for name in list(os.environ):
        if name.startswith(("DEE_SCHEDULER_", "DEE_CHANNELS_")):
            monkeypatch.delenv(name)
