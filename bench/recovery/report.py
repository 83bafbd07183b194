"""``docs/recovery.md``: the tables, how they were measured, the machine, the command.

Everything numeric is computed from a :class:`RunResult`, so regenerating the report after a
new run (or with ``--from-results``) never leaves stale numbers behind. The observations are
computed too; only the explanations of mechanisms are fixed text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import fields

from bench.recovery.plan import format_bytes, format_count
from bench.recovery.results import (
    KINDS,
    KStreamsResult,
    Phases,
    Restart,
    RunResult,
    SizeResult,
    Takeover,
    median,
)

__all__ = [
    "KIND_TITLES",
    "cold_replay_rate",
    "cold_to_warm",
    "kstreams_rate",
    "render_report",
    "standby_rate",
]

KIND_TITLES = {
    "warm-sigterm": "Warm, SIGTERM",
    "warm-sigkill": "Warm, SIGKILL",
    "cold": "Cold (empty volume)",
    "standby": "Standby takeover",
}
PHASE_NAMES = [f.name for f in fields(Phases)]
#: Typographic characters for the Markdown, spelled as escapes to keep the source ASCII.
DASH, TIMES, DIVIDE = "\u2013", "\u00d7", "\u00f7"


def _table(header: list[str], rows: Iterable[list[str]], right_from: int = 1) -> str:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _secs(values: list[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return DASH
    text = f"{median(values):.2f}"
    if len(values) > 1:
        text += f" ({min(values):.2f}{DASH}{max(values):.2f})"
    return text


def _sec(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def _count(values: Iterable[int]) -> str:
    values = list(values)
    if not values:
        return DASH
    low, high = min(values), max(values)
    return f"{low:,}" if low == high else f"{low:,}{DASH}{high:,}"


def _median_phase(restarts: list[Restart], name: str) -> float | None:
    values = [getattr(r.phases, name) for r in restarts if getattr(r.phases, name) is not None]
    return median(values) if values else None


def _size_label(size: SizeResult) -> str:
    return format_count(size.state.target_aggregates)


#: Issue 12's targets: cold restore rate, and cold start-to-ready over warm at the largest state.
TARGET_RECORDS_PER_SECOND = 100_000
TARGET_COLD_TO_WARM = 3.0


def cold_replay_rate(size: SizeResult) -> float | None:
    """Changelog records per second of a cold start's *replay* phase (median over restarts)."""
    rates = [r.records_replayed / r.phases.replay for r in size.of_kind("cold") if r.phases.replay]
    return median(rates) if rates else None


def cold_to_warm(size: SizeResult) -> float | None:
    """Median cold start-to-ready over median warm (SIGTERM) start-to-ready."""
    cold = [r.seconds_to_ready for r in size.of_kind("cold")]
    warm = [r.seconds_to_ready for r in size.of_kind("warm-sigterm")]
    return median(cold) / median(warm) if cold and warm else None


def standby_rate(takeover: Takeover | None) -> float | None:
    """Standby records per second while the survivor built its standby copies."""
    if takeover is None or not takeover.standby_catchup_seconds:
        return None
    return takeover.standby_records / takeover.standby_catchup_seconds


def kstreams_rate(kstreams: KStreamsResult | None) -> float | None:
    """Kafka Streams' cold restore: records restored per second of restoring (median)."""
    if kstreams is None:
        return None
    rates = [
        r.records_restored / r.restore_seconds
        for r in kstreams.of_kind("cold")
        if r.restore_seconds
    ]
    return median(rates) if rates else None


def _rate(value: float | None) -> str:
    return DASH if value is None else f"{value:,.0f}"


def _times(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}{TIMES}"


def _results_table(run: RunResult) -> str:
    header = ["Stored aggregates"]
    for kind in (*KINDS, "standby"):
        header += [f"{KIND_TITLES[kind]}: s", "replayed"]
    with_kstreams = any(s.kstreams is not None for s in run.sizes)
    if with_kstreams:
        header += ["Kafka Streams, cold: s", "restored"]
    rows = []
    for size in run.sizes:
        row = [f"{size.state.aggregates:,}"]
        for kind in KINDS:
            restarts = size.of_kind(kind)
            row += [
                _secs([r.seconds_to_ready for r in restarts]),
                _count(r.records_replayed for r in restarts),
            ]
        takeover = size.takeover
        if takeover is None:
            row += [DASH, DASH]
        else:
            row += [_sec(takeover.restore_seconds), f"{takeover.records_replayed:,}"]
        if with_kstreams:
            cold = [] if size.kstreams is None else size.kstreams.of_kind("cold")
            row += [
                _secs([r.seconds_to_ready for r in cold]),
                _count(r.records_restored for r in cold),
            ]
        rows.append(row)
    return _table(header, rows)


def _rates_table(run: RunResult) -> str:
    header = [
        "Stored aggregates",
        "Cold: records replayed",
        "replay: s",
        "records/s",
        f"Cold {DIVIDE} warm start-to-ready",
        "Standby copy: records",
        "catch-up: s",
        "records/s",
    ]
    rows = []
    for size in run.sizes:
        cold = size.of_kind("cold")
        t = size.takeover
        rows.append(
            [
                f"{size.state.aggregates:,}",
                _count(r.records_replayed for r in cold),
                _secs([r.phases.replay for r in cold if r.phases.replay is not None]),
                _rate(cold_replay_rate(size)),
                _times(cold_to_warm(size)),
                DASH if t is None else f"{t.standby_records:,}",
                DASH if t is None else _sec(t.standby_catchup_seconds),
                _rate(standby_rate(t)),
            ]
        )
    return _table(header, rows)


def _kstreams_table(run: RunResult) -> str:
    header = [
        "Stored aggregates (tradestats)",
        "Changelog records written",
        "Left after compaction",
        "Windows live",
        "On disk",
        "Build",
        "Cold: s",
        "restored",
        "restoring: s",
        "records/s",
        "Warm: s",
        "restored",
        "tradestats cold: s",
    ]
    rows = []
    for size in run.sizes:
        ks = size.kstreams
        if ks is None:
            continue
        cold, warm = ks.of_kind("cold"), ks.of_kind("warm")
        rows.append(
            [
                f"{size.state.aggregates:,}",
                f"{ks.changelog_offsets:,}",
                f"{ks.changelog_records:,}",
                f"{ks.live_keys:,}",
                DASH if ks.changelog_disk_bytes is None else format_bytes(ks.changelog_disk_bytes),
                f"{ks.build_seconds:.0f} s",
                _secs([r.seconds_to_ready for r in cold]),
                _count(r.records_restored for r in cold),
                _secs([r.restore_seconds for r in cold if r.restore_seconds is not None]),
                _rate(kstreams_rate(ks)),
                _secs([r.seconds_to_ready for r in warm]),
                _count(r.records_restored for r in warm),
                _secs([r.seconds_to_ready for r in size.of_kind("cold")]),
            ]
        )
    return _table(header, rows)


def _baseline_table(run: RunResult) -> str:
    """This run's cold restores and standby takeovers beside the baseline's, size by size."""
    assert run.baseline is not None
    before = {s.state.target_aggregates: s for s in run.baseline.sizes}
    header = [
        "Stored aggregates",
        "Cold: s, before",
        "after",
        "Cold replay: records/s, before",
        "after",
        f"Cold {DIVIDE} warm, before",
        "after",
        "Standby takeover: s, before",
        "after",
        "Standby catch-up: records/s, before",
        "after",
    ]
    rows = []
    for size in run.sizes:
        old = before.get(size.state.target_aggregates)
        if old is None:
            continue
        takeovers = [old.takeover, size.takeover]
        rows.append(
            [
                f"{size.state.aggregates:,}",
                *(_secs([r.seconds_to_ready for r in s.of_kind("cold")]) for s in (old, size)),
                *(_rate(cold_replay_rate(s)) for s in (old, size)),
                *(_times(cold_to_warm(s)) for s in (old, size)),
                *(DASH if t is None else _sec(t.restore_seconds) for t in takeovers),
                *(_rate(standby_rate(t)) for t in takeovers),
            ]
        )
    return _table(header, rows)


def _kstreams_section(run: RunResult) -> list[str]:
    if not any(s.kstreams is not None for s in run.sizes):
        return []
    return [
        "## Kafka Streams restoring the same state",
        "",
        "Kafka Streams ran the talk's topology on each state's trades; its window store keeps "
        "one record per ticker and 5 s window (tradestats: one aggregate per ticker and 1 s "
        "pane, all of a ticker's panes in one record), so the same trades make a different "
        "number of changelog records. *Restoring*: its first partition's restore start to the "
        "last one's end (restore listener); records/s = records restored over it.",
        "",
        _kstreams_table(run),
        "",
    ]


def _baseline_segments_table(run: RunResult) -> str:
    assert run.baseline is not None
    before = {g.segment_bytes: g for g in run.baseline.segments}
    header = [
        "segment.bytes",
        "Records replayed (after)",
        "Cold: s, before",
        "after",
        "Replay: records/s, before",
        "after",
    ]
    rows = []
    for seg in run.segments:
        old = before.get(seg.segment_bytes)
        if old is None:
            continue
        rates = [
            median([r.records_replayed / r.phases.replay for r in g.cold if r.phases.replay] or [0])
            for g in (old, seg)
        ]
        rows.append(
            [
                format_bytes(seg.segment_bytes),
                _count(r.records_replayed for r in seg.cold),
                *(_secs([r.seconds_to_ready for r in g.cold]) for g in (old, seg)),
                *(_rate(rate or None) for rate in rates),
            ]
        )
    return _table(header, rows)


def _baseline_section(run: RunResult) -> list[str]:
    baseline = run.baseline
    if baseline is None:
        return []
    return [
        "## Before and after",
        "",
        f"*Before*: {baseline.label}, measured on the same machine "
        f"({baseline.started} to {baseline.finished}) with `{baseline.command}`. *After*: this "
        f"run ({run.started} to {run.finished}). Cold: median seconds to ready and the replay "
        "phase's rate; standby takeover: assigned → ready; standby catch-up: standby records "
        "per second from the survivor's first assignment to its copy being complete.",
        "",
        _baseline_table(run),
        "",
        *(
            [
                f"Cold restores of the {format_count(int(run.plan.get('segment_state', 0)))}"
                "-aggregate state under each changelog `segment.bytes` (see below), before and "
                "after:",
                "",
                _baseline_segments_table(run),
                "",
            ]
            if baseline.segments and run.segments
            else []
        ),
    ]


def _targets(run: RunResult) -> list[str]:
    """Issue 12's targets, met or not, from this run's largest state."""
    sizes = [s for s in run.sizes if s.of_kind("cold")]
    if not sizes:
        return []
    largest = sizes[-1]
    notes = []
    rate = cold_replay_rate(largest)
    if rate is not None:
        met = "met" if rate >= TARGET_RECORDS_PER_SECOND else "not met"
        notes.append(
            f"Cold restore rate at {largest.state.aggregates:,} aggregates: {rate:,.0f} "
            f"changelog records/s (target at least {TARGET_RECORDS_PER_SECOND:,}: {met})."
        )
    longest = max(
        (g for g in run.segments if g.cold and not g.shared_with_series),
        key=lambda g: g.state.changelog_records,
        default=None,
    )
    if longest is not None and longest.state.changelog_records > largest.state.changelog_records:
        replay = [r.phases.replay for r in longest.cold if r.phases.replay]
        if replay:
            notes.append(
                f"The longest replay measured, {format_bytes(longest.segment_bytes)} segments "
                f"({longest.state.changelog_records:,} records): {median(replay):.2f} s, "
                f"{longest.state.changelog_records / median(replay):,.0f} records/s."
            )
    ratio = cold_to_warm(largest)
    if ratio is not None:
        met = "met" if ratio <= TARGET_COLD_TO_WARM else "not met"
        notes.append(
            f"Cold start-to-ready at {largest.state.aggregates:,} aggregates: "
            f"{ratio:.1f}{TIMES} the warm start-to-ready (target at most "
            f"{TARGET_COLD_TO_WARM:.0f}{TIMES}: {met})."
        )
    return notes


def _phases_table(run: RunResult) -> str:
    header = ["State", "Restart", *PHASE_NAMES, "total", "slowest /ready answer"]
    rows = []
    for size in run.sizes:
        for kind in KINDS:
            restarts = size.of_kind(kind)
            if not restarts:
                continue
            phases = [_median_phase(restarts, name) for name in PHASE_NAMES]
            total = median([r.seconds_to_ready for r in restarts])
            slowest = max(r.slowest_answer_seconds for r in restarts)
            rows.append(
                [
                    _size_label(size),
                    KIND_TITLES[kind],
                    *map(_sec, phases),
                    _sec(total),
                    _sec(slowest),
                ]
            )
        if size.takeover is not None:
            t = size.takeover
            phases = [getattr(t.phases, name) for name in PHASE_NAMES]
            rows.append(
                [
                    _size_label(size),
                    "Standby (from kill)",
                    *map(_sec, phases),
                    _sec(t.total_seconds),
                    _sec(t.slowest_answer_seconds),
                ]
            )
    return _table(header, rows, right_from=2)


def _standby_table(run: RunResult) -> str:
    header = [
        "State",
        "Partitions taken over",
        "Kill → rebalance (detection)",
        "Kill → assigned",
        "Assigned → ready",
        "Kill → ready",
        "Records applied",
        "Offsets read",
        "Full restore would replay",
        "Standby records before the kill",
        "Rebalances",
    ]
    rows = []
    for size in run.sizes:
        t = size.takeover
        if t is None:
            continue
        rows.append(
            [
                _size_label(size),
                ", ".join(map(str, t.partitions)),
                _sec(t.detection_seconds),
                _sec(t.assigned_seconds),
                _sec(t.restore_seconds),
                _sec(t.total_seconds),
                f"{t.records_replayed:,}",
                DASH if t.offsets_replayed is None else f"{t.offsets_replayed:,}",
                f"{t.full_restore_records:,}",
                f"{t.standby_records:,}",
                str(t.rebalances),
            ]
        )
    return _table(header, rows, right_from=2)


def _states_table(run: RunResult) -> str:
    header = [
        "Target",
        f"Tickers {TIMES} panes",
        "Aggregates found",
        "Live keys",
        "segment.bytes",
        "Changelog records written",
        "Left after compaction",
        "On disk",
        "Build",
        "Cleaner wait",
        "/metrics scrape",
    ]
    states = [("series", s.state) for s in run.sizes] + [
        ("segments", s.state) for s in run.segments if not s.shared_with_series
    ]
    rows = []
    for _, st in states:
        rows.append(
            [
                format_count(st.target_aggregates),
                f"{st.tickers:,} {TIMES} {st.panes}",
                f"{st.aggregates:,}",
                f"{st.live_keys:,}",
                format_bytes(st.segment_bytes),
                f"{st.changelog_offsets:,}",
                f"{st.changelog_records:,}",
                DASH if st.changelog_disk_bytes is None else format_bytes(st.changelog_disk_bytes),
                f"{st.build_seconds:.0f} s",
                f"{st.cleaner_wait_seconds:.0f} s",
                f"{format_bytes(st.metrics_bytes)} in {st.metrics_seconds:.2f} s",
            ]
        )
    return _table(header, rows)


def _segments_table(run: RunResult) -> str:
    header = [
        "segment.bytes",
        "Changelog records written",
        "Left after compaction",
        "On disk",
        "Cold restart: s",
        "Records replayed",
        "Replayed per live key",
    ]
    rows = []
    for seg in run.segments:
        st = seg.state
        replayed = [r.records_replayed for r in seg.cold]
        rows.append(
            [
                format_bytes(seg.segment_bytes)
                + (" (the series' run)" if seg.shared_with_series else ""),
                f"{st.changelog_offsets:,}",
                f"{st.changelog_records:,}",
                DASH if st.changelog_disk_bytes is None else format_bytes(st.changelog_disk_bytes),
                _secs([r.seconds_to_ready for r in seg.cold]),
                _count(replayed),
                f"{median([float(x) for x in replayed]) / max(1, st.live_keys):.2f}",
            ]
        )
    return _table(header, rows)


def _ratio(a: float, b: float) -> str:
    return DASH if b <= 0 else f"{a / b:.1f}{TIMES}"


def _uncompacted_notes(run: RunResult) -> list[str]:
    """States whose changelog never left the first (active, never compacted) segment."""
    notes = []
    measured = [(s.state, s.of_kind("cold")) for s in run.sizes] + [
        (s.state, s.cold) for s in run.segments if not s.shared_with_series
    ]
    for state, cold in measured:
        if not cold or state.changelog_records < state.changelog_offsets:
            continue  # the cleaner removed something
        size = ""
        if state.changelog_disk_bytes is not None:
            per_partition = state.changelog_disk_bytes // max(1, state.partitions)
            size = f" (about {format_bytes(per_partition)} each)"
        replayed = median([float(r.records_replayed) for r in cold])
        notes.append(
            f"At {state.aggregates:,} aggregates with {format_bytes(state.segment_bytes)} "
            f"segments the changelog partitions{size} never left their first segment, the "
            "active one, which the log cleaner never compacts: the cold restart replayed "
            f"{replayed:,.0f} records, {replayed / max(1, state.live_keys):.1f} per live key "
            "(every version ever written)."
        )
    return notes


#: The shortest probe timeoutSeconds in k8s/base: the bound a /ready or /health answer must meet.
PROBE_TIMEOUT_SECONDS = 3.0


def _blocking_note(run: RunResult) -> list[str]:
    """How long the worker's event loop kept /ready waiting, at worst, during a start and
    during a takeover (a running worker, where a liveness probe is what would time out)."""
    starts = [
        (r.slowest_answer_seconds, s.state.aggregates, KIND_TITLES[r.kind].lower())
        for s in run.sizes
        for r in s.restarts
    ] + [
        (r.slowest_answer_seconds, s.state.aggregates, f"cold, {format_bytes(s.segment_bytes)}")
        for s in run.segments
        if not s.shared_with_series
        for r in s.cold
    ]
    takeovers = [
        (s.takeover.slowest_answer_seconds, s.state.aggregates)
        for s in run.sizes
        if s.takeover is not None
    ]
    if not starts or max(starts)[0] <= 0:
        return []
    seconds, aggregates, kind = max(starts)
    note = (
        f"The slowest `/ready` answer during a start took {seconds:.2f} s ({kind}, "
        f"{aggregates:,} aggregates)"
    )
    if takeovers:
        t_seconds, t_aggregates = max(takeovers)
        note += (
            f", and {t_seconds:.2f} s on the survivor during the standby takeover at "
            f"{t_aggregates:,} aggregates"
        )
    worst = max(seconds, max(takeovers)[0] if takeovers else 0.0)
    if worst < PROBE_TIMEOUT_SECONDS:
        note += (
            f": tradestats loads state into memory in a worker thread, so `/health` and "
            f"`/ready` kept answering well within a {PROBE_TIMEOUT_SECONDS:.0f} s probe timeout "
            "while it restored"
        )
    else:
        note += (
            f": longer than a {PROBE_TIMEOUT_SECONDS:.0f} s probe timeout, so a probe "
            "would have failed while the worker restored"
        )
    return [note + "."]


def _machine_note(run: RunResult) -> list[str]:
    """Say so when the machine was busy: such timings are preliminary."""
    cores = run.machine.get("logical_cores") or 1
    loads = [run.machine.get(k) or [0.0] for k in ("load_average_at_start", "load_average_at_end")]
    busiest = max(load[0] for load in loads)
    if busiest < 0.5 * cores:
        return []
    return [
        f"- The machine was busy (1-minute load average up to {busiest:.2f} on {cores} cores): "
        "treat these timings as preliminary and regenerate them on a quiet machine."
    ]


def _kstreams_note(run: RunResult) -> list[str]:
    """Kafka Streams beside tradestats at the largest state both were measured on."""
    sizes = [s for s in run.sizes if s.kstreams is not None and s.kstreams.of_kind("cold")]
    if not sizes:
        return []
    size = sizes[-1]
    ks = size.kstreams
    assert ks is not None
    ks_cold = median([r.seconds_to_ready for r in ks.of_kind("cold")])
    ks_warm = median([r.seconds_to_ready for r in ks.of_kind("warm")])
    ours = median([r.seconds_to_ready for r in size.of_kind("cold")])
    restored = median([float(r.records_restored) for r in ks.of_kind("cold")])
    return [
        f"On the trades of the {size.state.aggregates:,}-aggregate state Kafka Streams was "
        f"ready after a cold start in {ks_cold:.2f} s (warm: {ks_warm:.2f} s), restoring "
        f"{restored:,.0f} window records at {_rate(kstreams_rate(ks))} records/s; tradestats "
        f"was ready after a cold start in {ours:.2f} s, restoring "
        f"{median([float(r.records_replayed) for r in size.of_kind('cold')]):,.0f} records "
        f"(all of a ticker's panes in one) at {_rate(cold_replay_rate(size))} records/s: "
        + (
            f"ready {_ratio(ks_cold, ours)} sooner than Kafka Streams."
            if ours <= ks_cold
            else f"Kafka Streams was ready {_ratio(ours, ks_cold)} sooner."
        )
    ]


def _observations(run: RunResult) -> list[str]:
    notes = _targets(run) + _kstreams_note(run)
    sizes = [s for s in run.sizes if s.of_kind("cold")]
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]

        def med(size: SizeResult, kind: str, get: Callable[[Restart], float]) -> float:
            return median([get(r) for r in size.of_kind(kind)])

        growth = large.state.aggregates / max(1, small.state.aggregates)
        seconds = lambda r: r.seconds_to_ready  # noqa: E731
        notes.append(
            f"From {small.state.aggregates:,} to {large.state.aggregates:,} aggregates "
            f"({growth:.0f}{TIMES} the state), a warm SIGTERM restart went from "
            f"{med(small, 'warm-sigterm', seconds):.2f} s to "
            f"{med(large, 'warm-sigterm', seconds):.2f} s "
            f"({_ratio(med(large, 'warm-sigterm', seconds), med(small, 'warm-sigterm', seconds))}"
            f"), a cold restart from {med(small, 'cold', seconds):.2f} s to "
            f"{med(large, 'cold', seconds):.2f} s "
            f"({_ratio(med(large, 'cold', seconds), med(small, 'cold', seconds))})."
        )
        load = [r.phases.load for r in large.of_kind("warm-sigterm") if r.phases.load is not None]
        if load:
            notes.append(
                f"At {large.state.aggregates:,} aggregates the warm restart spent "
                f"{median(load):.2f} s (of {med(large, 'warm-sigterm', seconds):.2f} s) in the "
                "*load* phase: tradestats reads each partition's whole state from RocksDB into "
                "memory before it reports ready, so a warm restart is not free of the state "
                "size either."
            )
        boot = [r.phases.boot for s in sizes for r in s.restarts if r.phases.boot is not None]
        join = [r.phases.join for s in sizes for r in s.restarts if r.phases.join is not None]
        if boot and join:
            notes.append(
                f"Before any state is touched, every start spends about {median(boot):.2f} s "
                f"starting the interpreter and importing faust (*boot*) and {median(join):.2f} s "
                "starting services and joining the group (*join*): the floor under every restart."
            )
    takeovers = [s.takeover for s in run.sizes if s.takeover is not None]
    if takeovers:
        detections = [t.detection_seconds for t in takeovers if t.detection_seconds is not None]
        if detections:
            notes.append(
                f"A SIGKILLed worker's partitions stayed unowned for {median(detections):.1f} s "
                f"(median) before the survivor even started to rebalance: with static "
                f"membership the group waits for the dead member's session to expire "
                f"(KAFKA_SESSION_TIMEOUT_MS={run.plan.get('session_timeout_ms')}, counted from "
                "its last heartbeat), and the survivor learns of the rebalance at its next "
                "heartbeat (faust's default interval: 3 s)."
            )
    notes += _uncompacted_notes(run)
    notes += _blocking_note(run)
    if len(run.segments) >= 2:
        first, last = run.segments[0], run.segments[-1]
        a = median([float(r.records_replayed) for r in first.cold])
        b = median([float(r.records_replayed) for r in last.cold])
        notes.append(
            f"With {format_bytes(last.segment_bytes)} segments a cold restore replayed "
            f"{b:,.0f} records, with {format_bytes(first.segment_bytes)} segments {a:,.0f} "
            f"({_ratio(b, a)}), for the same {first.state.live_keys:,} live keys."
        )
    return notes


def render_report(run: RunResult, command: str, plots: list[str]) -> str:
    m = run.machine
    plan = run.plan
    quick = " (quick form: tiny sizes, only to check the harness)" if run.quick else ""
    parts = [
        "# Recovery, measured",
        "",
        f"How long a tradestats worker takes to become ready again, and how many changelog "
        f"records it replays, after a warm restart, a cold restart and a standby takeover, at "
        f"several state sizes, beside Kafka Streams restoring the same trades' state; and what "
        f"the changelog's segment size does to a cold restore{quick}. Measured on "
        f"{run.started[:10]} on the machine described below; regenerate with the command at "
        "the end.",
        "",
        *(f"![{p}]({p})" for p in plots),
        "",
        "## Time to ready and records replayed",
        "",
        "Seconds from worker process start to the first `200` on `/ready` (median of "
        f"{plan.get('repeat')} run(s); range in brackets), and changelog records replayed into "
        "the local store for the worker's active partitions. *Standby takeover*: seconds from the "
        "moment the survivor was assigned the dead worker's partitions to its `/ready` answering "
        "`200` for all partitions; the detection delay before that is in the takeover table. "
        "*Kafka Streams, cold*: the talk's topology restoring its window store from its "
        "changelog after a start on an emptied state directory, on the same trades (see below).",
        "",
        _results_table(run),
        "",
        "## Restore rate",
        "",
        "*Replay*: the cold start's replay phase (faust's recovery start → `Recovery complete`, "
        "see below); records/s = records replayed over it. *Cold ÷ warm*: median cold over "
        "median warm (SIGTERM) seconds to ready, the same state. *Standby copy*: the second "
        "worker's standby records before the kill, and the seconds from its first assignment "
        "to its standby counter reaching its final value (polled every 0.25 s). The survivor "
        "starts on an empty volume: faust starts standby replay only after the cold restore of "
        "the survivor's own active partitions, and loading those into memory runs alongside "
        "it, so this rate is a lower bound on the standby path itself (the bulk path logs its "
        "own figure, `standby copies caught up: ... records/s`).",
        "",
        _rates_table(run),
        "",
        *_baseline_section(run),
        "## Where the time goes",
        "",
        "Each start split at log lines the worker writes anyway (wall clock, ms): *boot* = "
        "process start → faust worker starting (interpreter, imports); *join* → partitions "
        "assigned (services, table registration, group join); *open* → changelog recovery starts "
        "(RocksDB opened, offsets read); *replay* → changelog replay complete; *load* → "
        "tradestats loaded its state from RocksDB into memory; *answer* → `/ready` answered "
        "(includes the 50 ms poll). Medians, seconds.",
        "",
        _phases_table(run),
        "",
        "## Standby takeover",
        "",
        "Two workers with `STANDBY_REPLICAS=1`; `tradestats-0` (owning all partitions) builds "
        "the state, `tradestats-1` joins, takes some partitions and keeps a standby copy of the "
        "others, which `tradestats-0` keeps. When `tradestats-1`'s standby replay has caught up, "
        "`tradestats-0` is SIGKILLed. *Detection*: kill → `tradestats-1`'s `/ready` turns 503 "
        "(its rebalance began: the dead member's session expired); *assigned*: its log line "
        "`Executing _on_partitions_assigned`; *ready*: `/ready` 200 with every partition.",
        "",
        _standby_table(run),
        "",
        *_kstreams_section(run),
        "## Segment size and cold restore",
        "",
        f"Cold restarts of a {format_count(int(plan.get('segment_state', 0)))}-aggregate state "
        "built the same way under different changelog `segment.bytes` "
        "(`CHANGELOG_SEGMENT_BYTES`, fixed when the changelog topic is created), after the log "
        "cleaner had settled. The cleaner never touches a partition's active segment, so the "
        "larger the segment, the more superseded versions a restore replays.",
        "",
        _segments_table(run),
        "",
        "## The states measured",
        "",
        "Built by a real worker from trades with explicit timestamps, one trade per ticker per "
        "1 s pane, pane after pane, each pane checkpointed before the next is produced: each "
        "ticker record is written once per pane (that many versions of each key in the "
        "changelog), and at the end every pane is still live. *Aggregates found* counts the pane "
        "aggregates in the latest changelog record of every live key (read back after the cleaner "
        "settled), which is the state a restore rebuilds.",
        "",
        _states_table(run),
        "",
        "## Observations",
        "",
        *(f"- {note}" for note in _observations(run)),
        "- Warm restarts replay (next to) nothing here because the worker is idle when it is "
        "stopped: its RocksDB store holds every checkpoint it wrote. Under load the tail is at "
        "most one checkpoint (one record per ticker of a partition plus its clock record), which "
        "`tests/scenarios/test_recovery.py` asserts.",
        "",
        "## How it was measured",
        "",
        f"- Broker: {run.broker}. Topics: `{plan.get('partitions')}` partitions, replication 1.",
        "- Workers: `python -m tradestats worker` processes, as deployed, via the scenario "
        "harness's local StatefulSet (`tests/scenarios/statefulset.py`: stable names, static "
        "membership, one data directory each). Settings: "
        f"`COMMIT_INTERVAL_MS={plan.get('commit_interval_ms')}`, "
        f"`KAFKA_SESSION_TIMEOUT_MS={plan.get('session_timeout_ms')}`, `STANDBY_REPLICAS=1`, "
        "`WINDOW_IDLE_CLOSE_MS=3600000` (nothing is idle-closed away), other settings default.",
        "- Warm SIGTERM / SIGKILL: stop the worker, start it on the same `DATA_DIR`. Cold: stop "
        "it, delete its `DATA_DIR`, start it. The restarted worker rejoins with the same static "
        "member id, so the group hands it its partitions back without waiting for a session "
        "timeout.",
        "- Time to ready: `/ready` polled every 50 ms from process start. Records replayed: "
        '`tradestats_changelog_records_restored_total{role="active"}` of the new process (the '
        "takeover: its increase on the survivor). faust's own recovery report (high-water minus "
        "local offset) is kept in the raw results as `offsets_replayed`.",
        "- Kafka Streams: the main benchmark's contender (d) (`bench/kstreams`, the talk's "
        "topology: 5 s windows advancing 1 s, one window store), one instance with one stream "
        "thread, static membership and the same session timeout; its changelog has the "
        "segment settings of tradestats' changelog. It processes the state run's trades once "
        "(committed), is stopped, and is started again on an emptied state directory (cold) "
        "and on the intact one (warm). Ready: its restore listener reported every changelog "
        "partition restored and it is `RUNNING`, seconds from process start (the JVM's start "
        "included, as the interpreter's is for tradestats).",
        "- The log cleaner: the broker wakes it every 2 s; before measuring cold restores the "
        "benchmark waits until the changelog's size on disk stops changing.",
        "- No load runs during the measurements, and the machine is not isolated: compare "
        "numbers within one run only.",
        "",
        "## Machine",
        "",
        f"- {m.get('cpu_model')}, {m.get('logical_cores')} logical cores, "
        f"{m.get('memory_gib')} GiB RAM; {m.get('os')}",
        f"- Python {m.get('python')}, Java {m.get('java')}, Kafka {m.get('kafka')}",
        f"- Load average (1, 5, 15 min) at start {m.get('load_average_at_start')}, at end "
        f"{m.get('load_average_at_end')}",
        f"- Date: {run.started} to {run.finished} ({run.duration_seconds / 60:.1f} min)",
        *_machine_note(run),
        "",
        "## Regenerate",
        "",
        "From the repository root (starts its own broker under `.local/bench-recovery-kafka` "
        "unless `KAFKA_BOOTSTRAP_SERVERS` is set; raw results and worker logs go to "
        "`.local/bench-recovery/`):",
        "",
        "```sh",
        command,
        "```",
        "",
        "Re-render this page and the plots from the raw results without measuring again: "
        "`.venv/bin/python -m bench.recovery --from-results <results.json>`"
        + ("." if run.quick else " (this page's: `bench/results/recovery.json`)."),
        *(
            [
                "",
                "The before/after section: the same command run on the code before the change "
                "(a `git worktree` of it with its own venv; `--no-kstreams` measures only "
                "tradestats), its results attached with `--from-results <results.json> "
                "--baseline <its results.json> --baseline-label '<what it is>'` (kept in the "
                "results file).",
            ]
            if run.baseline is not None
            else []
        ),
        "",
    ]
    return "\n".join(parts)
