"""The archive's pure parts: partition ranges and names, S3 locations, `[audit]` and `[bus]`
validation, checking a segment of a chain."""

from __future__ import annotations

import pytest

from dee import ConfigError, EngineConfig
from dee.archive.chains import check_rows
from dee.archive.s3 import Location
from dee.kernel.audit import EntryDraft, seal_rows
from dee.kernel.state import ZERO_CHECKSUM
from dee.stores.postgres.audit_partitions import Layout, period_ticks

EPOCH = 1_767_614_400_000  # 2026-01-05T12:00:00Z


def test_a_partition_is_a_whole_number_of_days_of_run_starts_named_after_its_first_day() -> None:
    shape = Layout(period_ticks(30, 1000), EPOCH, 1000)
    assert shape.period == 2_592_000
    assert [shape.period_of(t) for t in (0, 2_591_999, 2_592_000, -1)] == [0, 0, 1, -1]
    assert [shape.partition(k) for k in (0, 1)] == [("audit_log_20260105", 0, 2_592_000), ("audit_log_20260204", 2_592_000, 5_184_000)]
    assert shape.name(-1) == "audit_log_before_epoch_1"
    assert period_ticks(1, 7000) == 12_343  # rounded up: a period never falls short of its days


def test_s3_locations() -> None:
    assert Location.parse("s3://bucket/a/b/") == ("bucket", "a/b")
    assert Location.parse("s3://bucket").key("dep", "audit", "x") == "dep/audit/x"
    assert Location.parse("s3://bucket/p").uri("p/k") == "s3://bucket/p/k"
    for bad in ("bucket/prefix", "s3://", "https://bucket/x"):
        with pytest.raises(ConfigError):
            Location.parse(bad)


@pytest.mark.parametrize(
    ("audit", "bus", "message"),
    [
        ({"archive_to": "bucket/x"}, {}, "audit.archive_to: an S3 URI"),
        ({"retention_days": 0}, {}, "audit.retention_days: at least 1"),
        ({"partition_days": 0}, {}, "audit.partition_days: at least 1"),
        ({"s3_access_key_id": "AKIA"}, {}, "go together"),
        ({}, {"dedupe_days": 3}, "bus.dedupe_days: at least 7"),
    ],
)
def test_retention_settings_are_checked_at_load(audit: dict[str, object], bus: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EngineConfig.from_dict({"audit": audit, "bus": bus})


def test_s3_credentials_are_never_shown() -> None:
    config = EngineConfig.from_dict({"audit": {"s3_access_key_id": "AKIAEXAMPLE", "s3_secret_access_key": "hunter2"}})
    assert "hunter2" not in repr(config) and "AKIAEXAMPLE" not in repr(config)


def test_a_segment_of_a_chain_is_checked_from_where_it_starts() -> None:
    drafts = [EntryDraft("r", seq, "p", None, seq, "step.entered", output={"n": seq}) for seq in range(1, 6)]
    ids = iter(f"id-{n}" for n in range(10))
    rows = seal_rows(drafts, ZERO_CHECKSUM, "2026-01-05T12:00:00.000+00:00", lambda: next(ids))
    assert check_rows(rows, 5, rows[-1].checksum) is None
    assert check_rows(rows[2:], 5, rows[-1].checksum) is None  # entries 3..5: what a later archive holds
    assert check_rows(rows[2:], 6, "x") == "the run's chain head is at seq 6, the entries end at seq 5"
    assert check_rows([rows[2], rows[4]], None, None) == "seq 5 follows seq 3 (missing entry)"
    tampered = rows[3]._replace(output='{"n":99}')
    assert check_rows([rows[2], tampered, rows[4]], None, None) == "seq 4: checksum does not match the entry's content"
    assert check_rows([], None, None) == "no entries"
