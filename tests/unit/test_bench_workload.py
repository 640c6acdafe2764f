"""The outreach-v2 bench workload: its published figures, and a report that notices when the
engine's output differs from them."""

from __future__ import annotations

from collections import Counter

from dee.ops.bench.measure import REPLAY_ROWS_PER_READ, _chunks
from dee.ops.bench.report import BenchReport, Correctness, EngineFigures, ReplayFigures
from dee.ops.bench.workload import expected, first_reactions, path_of, second_reactions


def test_ten_thousand_contacts_split_into_the_published_paths_and_outcomes() -> None:
    want = expected(10_000)
    assert want.paths == Counter({"replied-first": 1_000, "warm-replied": 428, "warm-no-reply": 2_572, "cold": 6_000})
    assert want.outcomes == Counter({"replied": 1_428, "no_response": 8_572})
    # the 86,716 counts each replied run walking its branch to end-replied (+2 nodes);
    # under SPEC 4 the exit condition ends it when the reply arrives, in the wait it is in
    assert want.transitions == 86_716 - 2 * 1_428 == 83_860


def test_reactions_follow_the_contact_index() -> None:
    first = {(r.contact, r.event_type) for r in first_reactions(30)}
    assert (0, "email.replied") in first and (10, "email.replied") in first
    assert {(1, "email.opened"), (2, "email.opened"), (3, "email.opened"), (21, "email.opened")} <= first
    assert not any(c % 10 >= 4 for c, _ in first)
    assert [r.contact for r in second_reactions(100)] == [i for i in range(100) if i % 10 in (1, 2, 3) and i % 7 == 0]
    assert path_of(21) == "warm-replied" and path_of(22) == "warm-no-reply" and path_of(4) == "cold"


def correct_figures(contacts: int) -> Correctness:
    want = expected(contacts)
    return Correctness(runs=contacts, terminal=contacts, outcomes=Counter(want.outcomes), paths=Counter(want.paths),
                       wrong_paths=0, transitions=want.transitions, sends=want.sends, audit_rows=1, audit_bytes=400)  # fmt: skip


def report_with(correctness: Correctness, replay: ReplayFigures | None = None) -> BenchReport:
    report = BenchReport(contacts=correctness.runs, partitions=16, cores=2, expected=expected(correctness.runs), log_dir="-")
    report.engine.append(EngineFigures(1, 0.5, 2.0, 10, correctness.transitions, 80.0, correctness))
    report.replay = replay
    return report


def test_a_correct_run_has_no_problems() -> None:
    assert report_with(correct_figures(100), ReplayFigures(100, 100, 100, 0.1)).problems() == []


def test_every_kind_of_wrong_output_is_reported() -> None:
    base = correct_figures(100)
    wrong = [
        Correctness(**{**base.__dict__, "terminal": 99}),
        Correctness(**{**base.__dict__, "outcomes": Counter({"replied": 15, "no_response": 85})}),
        Correctness(**{**base.__dict__, "wrong_paths": 1}),
        Correctness(**{**base.__dict__, "transitions": base.transitions + 1}),
        Correctness(**{**base.__dict__, "sends": base.sends - 1}),
    ]
    for figures in wrong:
        assert len(report_with(figures).problems()) == 1, figures
    assert report_with(base, ReplayFigures(100, 99, 100, 0.1)).problems()
    assert report_with(base, ReplayFigures(100, 100, 98, 0.1)).problems()


def test_replay_reads_runs_in_chunks_of_about_a_fixed_number_of_rows() -> None:
    """Every run once, in order; a chunk closes once it holds REPLAY_ROWS_PER_READ rows (a run's
    head seq is its row count), so long runs make short chunks and the sort stays in memory."""
    seqs = [1, 30, 2_500, 7, 7, 1_990, 3, 4]
    heads = {f"run-{i}": (seq, "h") for i, seq in enumerate(seqs)}
    chunks = _chunks(sorted(heads), heads)
    assert [run for chunk in chunks for run in chunk] == sorted(heads)
    assert [[heads[r][0] for r in chunk] for chunk in chunks] == [[1, 30, 2_500], [7, 7, 1_990], [3, 4]]
    assert all(sum(heads[r][0] for r in chunk) >= REPLAY_ROWS_PER_READ for chunk in chunks[:-1])
    assert _chunks([], {}) == []
