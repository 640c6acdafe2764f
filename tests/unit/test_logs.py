"""Logs an operator can use: the level and format chosen by config, the instance, partition and
run of each record, no credentials, and a storage outage logged when it starts and when it
ends rather than once per retry."""

from __future__ import annotations

import io
import json
import logging

import pytest
import redis.exceptions as redis_errors

from dee import logfields
from dee.config import EngineConfig, LogConfig
from dee.errors import ConfigError
from dee.ops.logs import configure
from dee.scheduler.outages import Outages, service_of


def logged(config: LogConfig, emit: object) -> list[str]:
    stream = io.StringIO()
    configure(config, stream=stream)
    try:
        emit()  # type: ignore[operator]
    finally:
        configure(LogConfig(level="warning"), stream=io.StringIO())
    return stream.getvalue().splitlines()


def test_json_records_carry_the_instance_partition_and_run() -> None:
    def emit() -> None:
        token = logfields.partition.set(7), logfields.instance.set("dee-1")
        try:
            logging.getLogger("dee.worker").warning("partition busy with redis://:s3cret@redis:6379/0")
            logging.getLogger("dee.tick").error("run failed", extra={"run_id": "r-1"})
        finally:
            logfields.partition.reset(token[0])
            logfields.instance.reset(token[1])

    lines = [json.loads(line) for line in logged(LogConfig(format="json"), emit)]
    assert [(r["level"], r["logger"], r["partition"], r["instance"]) for r in lines] == [
        ("warning", "dee.worker", 7, "dee-1"), ("error", "dee.tick", 7, "dee-1")]  # fmt: skip
    assert lines[1]["run_id"] == "r-1"
    assert lines[0]["message"] == "partition busy with redis://:***@redis:6379/0"


def test_text_records_put_the_fields_after_the_message_and_honour_the_level() -> None:
    def emit() -> None:
        token = logfields.partition.set(3)
        try:
            logging.getLogger("dee.worker").info("shown at info")
            logging.getLogger("dee.worker").debug("not shown")
        finally:
            logfields.partition.reset(token)

    lines = logged(LogConfig(level="INFO"), emit)
    assert len(lines) == 1 and lines[0].endswith("INFO dee.worker shown at info partition=3")


def test_the_level_and_format_come_from_the_environment() -> None:
    config = EngineConfig.load(None, env={"DEE_LOG_LEVEL": "debug", "DEE_LOG_FORMAT": "json"})
    assert config.log == LogConfig(level="debug", format="json")
    with pytest.raises(ConfigError):
        EngineConfig.load(None, env={"DEE_LOG_LEVEL": "loud"})


def test_an_outage_is_logged_when_it_starts_and_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    outages = Outages(logging.getLogger("dee.test-outages"))
    with caplog.at_level(logging.DEBUG, logger="dee.test-outages"):
        for _ in range(124):  # a 15-second outage seen by a busy process
            outages.failed(redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."), "p3")
        assert outages.down == ["Redis"]
        outages.recovered("PostgreSQL")  # another service answering says nothing about Redis
        assert outages.down == ["Redis"]
        outages.recovered("Redis")
        outages.recovered("Redis")  # nothing more to say
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(" (")[0] for r in loud] == ["Redis unavailable", "Redis available again after 0.0 s"]
    assert "123" not in loud[0].getMessage() and "(124 failed attempts)" in loud[1].getMessage()
    assert not any(r.exc_info for r in caplog.records)
    assert outages.down == []


def test_errors_are_told_apart_by_service() -> None:
    import asyncpg

    assert service_of(redis_errors.TimeoutError()) == "Redis"
    assert service_of(asyncpg.InterfaceError("closed")) == "PostgreSQL"
    assert service_of(OSError("??")) == "storage"
