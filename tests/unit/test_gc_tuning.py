"""`gc_tuning.tune` changes the collector of the process it runs in (so: a fresh one)."""

import subprocess
import sys

PROBE = (
    "import gc; from dee.ops import gc_tuning; before = gc.get_threshold(); gc_tuning.tune(); "
    "print(before[0], gc.get_threshold()[0], gc.get_threshold()[1:] == before[1:], gc.get_freeze_count() > 0)"
)


def test_tune_raises_the_young_threshold_and_freezes_what_is_loaded() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["700", "50000", "True", "True"]
