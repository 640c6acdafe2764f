"""What the `dee` command prints: JSON for programs (`--json`), text for people, progress bars
only on a terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec


def as_json(value: Any) -> str:
    """Any result (Structs, dataclasses, dicts) as indented JSON, keys in a stable order."""
    return json.dumps(msgspec.to_builtins(value), indent=2, default=str)


def emit(value: Any, json_wanted: bool, text: Callable[[], str]) -> None:
    """Print `value` as JSON, or `text()` for a person."""
    print(as_json(value) if json_wanted else text())


ProgressFn = Callable[[str, int, int], None]


@contextmanager
def progress(enabled: bool = True) -> Iterator[ProgressFn | None]:
    """A `(label, done, total)` callback drawing a progress bar on stderr when stderr is a
    terminal; None otherwise (a redirected log gets no redraw frames)."""
    if not (enabled and sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

    bars = Progress(TextColumn("{task.description:<11}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=False)  # fmt: skip
    tasks: dict[str, TaskID] = {}

    def update(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = bars.add_task(label, total=max(total, 1))
        bars.update(tasks[label], completed=done, total=max(total, 1))

    with bars:
        yield update
