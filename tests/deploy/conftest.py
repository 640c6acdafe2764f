"""One loaded chart for the session, and each value set rendered once (rendering is the slow
part: a few milliseconds each, but the tests read the same releases many times)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import helm_python as helm
import pytest

from tests.deploy.chart import CHART, VALUE_SETS, Release, render


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def release(chart: helm.Chart) -> Callable[[str], Release]:
    """`release("full")`: the rendering of a value set of `VALUE_SETS`."""
    cache: dict[str, Release] = {}

    def get(name: str) -> Release:
        if name not in cache:
            cache[name] = render(chart, VALUE_SETS[name])
        return cache[name]

    return get
