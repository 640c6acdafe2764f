"""The plugin's tests: against a local fake of SendGrid's Mail Send API (`fake_sendgrid`), over
real HTTP on loopback. They run from this folder (`pytest`, with the plugin installed) and in
DEE's own suite (which puts the plugin's folder on the path)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import dee_sendgrid  # noqa: F401  (installed)
except ImportError:  # DEE's suite, from a checkout
    sys.path.insert(0, str(HERE.parent))

from fake_sendgrid import FakeSendGrid  # noqa: E402


@pytest.fixture
async def sendgrid() -> AsyncIterator[FakeSendGrid]:
    fake = FakeSendGrid(api_key="SG.test-key")
    await fake.start()
    yield fake
    await fake.stop()
