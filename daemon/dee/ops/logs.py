"""Logging for DEE's processes: a level and a format an operator chooses (`[log]`, or
`DEE_LOG_LEVEL` / `DEE_LOG_FORMAT`), with the instance, partition and run of each record.

`text` is one line per record with `key=value` fields after the message; `json` is one JSON
object per line (`ts`, `level`, `logger`, `message`, the fields, and `error` with the traceback
when there is one) for log collectors. Credentials never appear: messages are redacted.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

from dee import logfields
from dee.config import LogConfig
from dee.redact import redact_text

FIELDS = ("instance", "partition", "run_id")
HANDLER_NAME = "dee"


class _Fields(logging.Filter):
    """Adds the context's fields to every record (an explicit `extra=` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in logfields.current().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = redact_text(super().format(record))
        extra = " ".join(f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None) is not None)
        return f"{line} {extra}" if extra else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                document[key] = value
        if record.exc_info:
            document["error"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(document, ensure_ascii=False, default=str)


def configure(config: LogConfig, default_level: str = "info", stream: TextIO | None = None) -> None:
    """Send DEE's records (and every library's warnings) to `stream` (stderr) in the chosen
    format; replaces the handler an earlier call installed (and only that one)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    handler.addFilter(_Fields())
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("dee").setLevel((config.level or default_level).upper())
