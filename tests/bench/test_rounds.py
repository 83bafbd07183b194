"""A point run in several rounds: the median round stands for the contender, ratios are the
medians of the rounds' ratios, and one bad round fails the contender; the
rounds pair tradestats with the bare consumer."""

from __future__ import annotations

from bench.cli import run_order
from bench.contenders.registry import all_contenders
from bench.results import ContenderResult, Correctness, Throughput, combine_rounds


def run(key: str, rate: float, *, correct: bool = True, error: str = "") -> ContenderResult:
    """One round of contender ``key``: ``rate`` trades/s (1,000 trades)."""
    result = ContenderResult(key, key, key, "final")
    if error:
        result.errors.append(error)
        return result
    result.throughput = Throughput(
        trades=1000,
        seconds=1000 / rate,
        rate=rate,
        startup_seconds=1.0,
        cpu_seconds=1.0,
        peak_rss_bytes=1,
        changelog_records=0,
        output_records=0,
    )
    result.correctness = Correctness(correct, 10, f"rate {rate}")
    return result


def test_the_median_round_stands_for_the_contender() -> None:
    combined = combine_rounds([run("a", 300.0), run("a", 100.0), run("a", 200.0)])
    assert combined.ok
    assert combined.throughput is not None
    assert combined.throughput.rate == 200.0
    assert combined.correctness is not None
    assert combined.correctness.detail == "rate 200.0"
    assert [t.rate for t in combined.rounds] == [300.0, 100.0, 200.0]  # in run order


def test_an_even_count_takes_the_lower_middle_round() -> None:
    combined = combine_rounds([run("a", 400.0), run("a", 100.0), run("a", 300.0), run("a", 200.0)])
    assert combined.throughput is not None
    assert combined.throughput.rate == 200.0


def test_ratios_are_the_median_of_the_rounds_ratios() -> None:
    # Round 2 ran in a busy spell that slowed both: the ratio of the medians (200 / 400)
    # would mix rounds; the rounds' own ratios are 0.8, 0.9 and 0.5.
    own = combine_rounds([run("a", 240.0), run("a", 90.0), run("a", 200.0)])
    ceiling = combine_rounds([run("e", 300.0), run("e", 100.0), run("e", 400.0)])
    assert own.round_ratios(ceiling) == [0.8, 0.9, 0.5]
    assert own.ratio_to(ceiling) == 0.8


def test_a_single_round_is_the_plain_ratio() -> None:
    own, ceiling = combine_rounds([run("a", 150.0)]), combine_rounds([run("e", 200.0)])
    assert own.rounds == []
    assert own.round_ratios(ceiling) == []
    assert own.ratio_to(ceiling) == 0.75
    assert own.ratio_to(None) is None


def test_one_failed_or_wrong_round_fails_the_contender() -> None:
    failed = combine_rounds([run("a", 100.0), run("a", 0.0, error="stalled"), run("a", 300.0)])
    assert not failed.ok
    assert failed.errors == ["round 2: stalled"]
    assert failed.throughput is None
    assert failed.rounds == []
    wrong = combine_rounds([run("a", 100.0), run("a", 200.0), run("a", 300.0, correct=False)])
    assert not wrong.ok
    assert wrong.correctness is not None
    assert wrong.correctness.detail == "rate 300.0"


def test_rounds_pair_tradestats_with_the_ceiling_and_alternate_their_order() -> None:
    contenders = all_contenders()
    first = [c.key for c in run_order(contenders, 1)]
    assert first == ["a", "e", "b", "c", "d", "d2"]
    assert [c.key for c in run_order(contenders, 2)] == first[::-1]
    assert [c.key for c in run_order(contenders, 3)] == first
    # without either of the pair, the rest keep report order
    peers = [c for c in contenders if c.key in {"c", "d", "d2"}]
    assert [c.key for c in run_order(peers, 1)] == ["c", "d", "d2"]
