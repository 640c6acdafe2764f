"""Contacts to enrol from the command line (`dee runs start`): a JSON Lines file, one contact
object per line, or the sample contacts of `dee simulate`. A file's lines are only parsed here;
each contact is checked by `Engine.bulk_execute`, so one bad contact never stops the others."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from dee.engine import as_contact
from dee.errors import ConfigError
from dee.ops.simulate import contact_for


def sample(count: int) -> list[dict[str, Any]]:
    """`count` sample contacts, the same as `dee simulate`'s (`contact-0000000`, ...)."""
    if count < 1:
        raise ConfigError(f"--sample {count}: give at least one contact")
    return [contact_for(i) for i in range(count)]


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The contact objects of a JSON Lines file (`-`: standard input); blank lines are skipped.
    A line that is not a JSON object is refused with its line number, before anything is sent."""
    if path == "-":
        return list(_objects(sys.stdin, "<stdin>"))
    try:
        with Path(path).open(encoding="utf-8") as lines:
            return list(_objects(lines, path))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such contacts file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _objects(lines: Any, name: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{name}:{number}: a contact is a JSON object, not {type(value).__name__}")
        yield value


def valid_ids(contacts: list[dict[str, Any]]) -> list[str]:
    """The ids of the contacts `Engine.bulk_execute` will accept (consent is recorded for
    those only, not for a contact the enrolment refuses)."""
    ids = []
    for raw in contacts:
        try:
            ids.append(as_contact(raw).id)
        except (msgspec.ValidationError, TypeError):
            continue
    return ids


def variables(assignments: list[str]) -> dict[str, str]:
    """`KEY=VALUE` arguments as the runs' variables (string values)."""
    parsed: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--var {item!r}: expected KEY=VALUE")
        parsed[key.strip()] = value
    return parsed
