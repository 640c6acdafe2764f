"""Which daemon wants which partition: rendezvous hashing with bounded load, and static keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from dee.scheduler.coordinator import assignment, parse_partition_key


@pytest.mark.parametrize("instances", [1, 2, 3, 4, 5, 16, 17])
def test_every_partition_has_one_owner_and_no_instance_holds_more_than_its_share(instances: int) -> None:
    names = [f"dee-{k}" for k in range(instances)]
    owners = assignment(16, names)
    assert sorted(owners) == list(range(16))
    assert max(Counter(owners.values()).values()) == -(-16 // instances)


def test_two_instances_split_sixteen_partitions_evenly_whatever_their_names() -> None:
    for pair in (["a", "b"], ["bench-1", "bench-2"], ["dee-0", "dee-1"], ["x", "y"]):
        assert sorted(Counter(assignment(16, pair).values()).values()) == [8, 8], pair


def test_every_instance_computes_the_same_assignment_from_the_same_live_set() -> None:
    # each daemon is its own process, with its own hash seed and its own order of the live set
    # (as its heartbeat query returned it): all must agree, or two would want one partition
    script = (
        "import json, random, sys; from dee.scheduler.coordinator import assignment; "
        "names = ['dee-0', 'dee-1', 'bench-2', 'x']; random.Random(int(sys.argv[1])).shuffle(names); "
        "print(json.dumps(assignment(16, names)))"
    )
    answers = set()
    for seed in range(4):
        env = {**os.environ, "PYTHONHASHSEED": str(seed * 7919 + 1)}
        done = subprocess.run([sys.executable, "-c", script, str(seed)], capture_output=True, text=True, env=env, check=True)
        answers.add(done.stdout)
    assert len(answers) == 1
    owners = json.loads(answers.pop())
    assert sorted(Counter(owners.values()).values()) == [4, 4, 4, 4]


def test_an_instance_joining_moves_only_part_of_the_partitions() -> None:
    before, after = assignment(16, ["a", "b"]), assignment(16, ["a", "b", "c"])
    moved = [p for p in range(16) if before[p] != after[p]]
    assert 0 < len(moved) < 16
    assert "c" in after.values()


def test_a_static_partition_key_names_ranges_and_single_partitions() -> None:
    assert parse_partition_key("0-3, 7,12", 16) == {0, 1, 2, 3, 7, 12}
    with pytest.raises(ValueError, match=r"outside 0\.\.15"):
        parse_partition_key("14-16", 16)
