"""``docs/benchmarks.md``: the density sweep (every figure per point, ratios to the ceiling (e)
and between contenders), the plots, emit latency, the machine, and how to regenerate.
Generated whole from a run's results, so the document never mixes figures from different runs."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.contenders.registry import CEILING, TRADESTATS
from bench.emitpath import STAGES
from bench.plots import plot_latency, plot_sweep
from bench.results import ContenderResult, RunResult

__all__ = ["write_report"]

METHOD = """\
## Method

- **Sweep.** {points} points with {trades} trades from
  `tradestats.loadgen.TradeGenerator(seed={seed})` at a fixed {event_rate:,.0f} trades per second
  of event time, plus one closing trade per partition (the thin points get fewer trades: they
  cost every contender far more per trade; the dense ones more, so that a run lasts several
  commit intervals and where a contender's last commit falls decides little). The number of
  tickers is event rate / density, so at 0.1 trades per ticker per second each ticker trades
  every 10 s and each trade opens five windows of its own (about 5 window results per trade),
  at 100 a window holds 500 trades of its ticker (0.01 per trade).
  The generator takes its tickers in turn, so every ticker has exactly the point's density.
  JSON values keyed by ticker, {partitions} partitions, produced before any contender starts;
  timestamps never decrease within a partition, so no trade is late anywhere. The closing
  trades (on tickers `ZZEND*`, left out of every check) are stamped a window and an advance
  after the last trade: they close every regular window in contenders that emit final results.
- **Contenders** run one at a time at each point (with `--rounds`, several times in turn:
  tradestats and the bare consumer side by side, then the peers; every other round in
  reverse order, so that a drift of the machine's speed does not land between the two runs
  of a ratio), each run as its own process with a fresh consumer group and state directory,
  reading the point's topic from the beginning, committing every second (the tradestats
  default; Quix Streams' default is 5 s, Kafka Streams' 30 s, faust's 2.8 s - one value for
  all makes "everything committed" equally observable).
- **Throughput** = input records / seconds from the first record consumed to *done*: the group's
  committed offsets reach the end offsets and the output topic has not grown for {quiet:.0f} s;
  done = the later of the commit reaching the end and the broker's append time of the last
  window result of a regular ticker (the output topics use log-append time). The closing
  tickers' own windows do not count: only a contender that closes windows by wall clock emits
  them at all (tradestats, 10 s after a partition's last trade), and counting them made every
  tradestats run that took longer than about 7 s look 10 s longer. **Window results/s** = the
  windows the input holds (every ticker's, counted from the input: the same number for every
  contender, whether it emits each once or updates it many times) / the same seconds. Start-up
  (process start to first record) is not counted. **CPU s** is the process's user + system time
  over the same interval (all threads); **trades/CPU s** is less sensitive to a noisy shared
  machine than wall-clock rates. **Peak RSS** is the kernel's high-water mark (`VmHWM`) of the
  process.
- **Changelog records / 1,000 trades** = the sum of the end offsets of the contender's
  changelog topics after the run, divided by the input records, x 1,000.
- **Correctness** is checked before a speed counts, at every point: every window of {sample} is
  compared with the brute-force oracle (`tests/oracle.py`): for final results, exactly the
  expected windows with the oracle's values; for contenders that emit updates, the last update
  of each window.
- **Emit latency** is a separate phase per contender, after the sweep: a fresh topic fed at a
  fixed {latency_rate:,.0f} trades/s over {latency_tickers} tickers for {latency_seconds:.0f} s with
  wall-clock timestamps; latency of a window = arrival at the harness of its complete result
  (the record whose `countTrades` covers every trade sent for it) - window end, or 0 for an
  update that arrived before the window ended (its consumer cannot know it is final before
  then). Windows starting in the first {latency_warmup:.0f} s or ending in the last second are
  not measured.
- Ratios are computed within this one run, side by side: the machine is shared and absolute
  numbers move between runs (see the load averages above).
"""


#: One paragraph per contender, by key: only the contenders of the run are described.
NOTES = {
    "a": """\
- **(a) tradestats** runs as deployed (`python -m tradestats worker`), configured by environment
  variables only, all defaults except the topics, app id, data directory and web port. It is
  not instrumented for the benchmark: its clock starts at its log line `ready: active partitions`
  (partitions assigned, state restored; it starts fetching at once): a fetch early, never late.
""",
    "b": """\
- **(b) faust textbook** (`bench/contenders/faust_app.py`): `Table(...).hopping(5, 1,
  expires=1 h)` on RocksDB, `table[ticker] += trade` (a read-modify-write of each of the
  trade's five windows, five changelog records per trade), `faust.Record` models. What the
  textbook gets wrong, and why it emits updates: faust's `on_window_close` fires from a
  wall-clock timer when windows expire by *wall-clock* time and tracks a single "last closed
  window" for the whole table, so with six partitions on one worker it skips windows, and on a
  backlog older than `expires` it drops windows that are still being updated. So after each
  trade it reads the five windows it changed (`.delta(0..4)`) and sends each to the output
  topic (five output records per trade, like Kafka Streams without a record cache); the last
  update of each window is checked. Part of its cost is that emission.
""",
    "c": """\
- **(c) Quix Streams** runs in a virtual environment of its own (it requires `pydantic<2.14`,
  the project pins 2.14). `hopping_window(5000, 1000).reduce(...)` computing the same
  statistics, `.final(closing_strategy="partition")`: windows close on the partition's stream
  time as in Kafka Streams; Quix's default (`"key"`) would leave every ticker's last windows
  open. Checkpoint (commit) interval 1 s instead of its default 5 s.
""",
    "d": """\
- **(d) Kafka Streams** (`bench/kstreams`, Java 17, Kafka Streams 4.1.2): the talk's topology
  with `TimeWindows.ofSizeWithNoGrace(5 s).advanceBy(1 s)`, Gson serdes as in the talk's demo,
  `commit.interval.ms=1000` (default 30 s), default record cache (10 MB) and JVM options.
  Without suppress it emits updates, coalesced per commit by the cache; **(d2)** adds
  `suppress(untilWindowCloses(unbounded()))` and emits final results.
""",
    "e": """\
- **(e) bare aiokafka**: a consumer group reading in batches of up to 20,000 records, each
  value decoded by msgspec into a typed struct (the fastest JSON decoder in the project's
  environment; orjson is not installed there), uvloop, auto-commit every second. No state, no
  output: the ceiling for a Python consumer on this machine.
""",
}


def _times(ratio: float | None) -> str:
    return "-" if not ratio else f"{ratio:.2f}x"


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _verdict(c: ContenderResult) -> str:
    if c.errors:
        return "**failed**"
    if c.correctness is None:
        return "n/a"
    return "yes" if c.correctness.passed else "**NO**"


def _sweep_rows(result: RunResult) -> list[str]:
    rows = []
    for point in result.points:
        ceil = point.by_key().get(CEILING)
        windows = point.dataset.get("windows", 0)
        per_trade = windows / point.dataset["records"] if point.dataset.get("records") else 0
        for c in point.contenders:
            t = c.throughput
            cells = [
                f"{point.density:g}",
                f"{point.tickers:,}",
                f"{point.dataset.get('records', 0):,}",
                f"{per_trade:.2f}",
                f"({c.key}) {c.name}",
                _fmt(t.rate if t else None),
                _fmt(t.windows_per_second if t and c.emission != "none" else None),
                _times(c.ratio_to(ceil)),
                _fmt(t.cpu_seconds if t else None, ".1f"),
                _fmt(t.trades_per_cpu_second if t else None),
                _fmt(t.peak_rss_bytes / 2**20 if t else None),
                _fmt(t.changelog_per_1000 if t else None, ",.1f"),
                _verdict(c),
            ]
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def _matrix(result: RunResult, value: str) -> list[str]:
    """Contenders down, densities across: ``value`` is "trades" or "windows" per second."""
    keys = list(dict.fromkeys(c.key for p in result.points for c in p.contenders))
    names = {c.key: c.name for p in result.points for c in p.contenders}
    header = "| contender | " + " | ".join(f"{p.density:g}" for p in result.points) + " |"
    lines = [header, "|---|" + "---:|" * len(result.points)]
    for key in keys:
        cells = []
        for point in result.points:
            c = point.by_key().get(key)
            t = c.throughput if c is not None else None
            if t is None or (value == "windows" and c is not None and c.emission == "none"):
                cells.append("-")
            else:
                cells.append(_fmt(t.rate if value == "trades" else t.windows_per_second))
        lines.append(f"| ({key}) {names[key]} | " + " | ".join(cells) + " |")
    return lines


def _targets(result: RunResult) -> list[str]:
    """Issue 11's ratios, within this run."""
    lines = []
    best = max(
        (
            (c.throughput.windows_per_second, p.density)
            for p in result.points
            for c in p.contenders
            if c.key == TRADESTATS and c.throughput is not None
        ),
        default=None,
    )
    if best is not None:
        lines.append(
            f"- tradestats, most window results/s: {best[0]:,.0f} (at {best[1]:g} trades/ticker/s)"
        )
    for point in result.points:
        by_key = point.by_key()
        own = by_key.get(TRADESTATS)
        parts = [
            f"{label} {_times(own.ratio_to(by_key.get(key)) if own else None)}"
            for key, label in (
                ("d", "vs Kafka Streams"),
                ("d2", "vs Kafka Streams + suppress"),
                ("c", "vs Quix Streams"),
                (CEILING, "vs the bare consumer"),
            )
            if key in by_key
        ]
        if own is not None and parts:
            lines.append(f"- at {point.density:g} trades/ticker/s: tradestats " + ", ".join(parts))
    return lines


def _rounds(result: RunResult) -> list[str]:
    """Every round's trades/s, when the points ran more than one round."""
    count = max((len(c.rounds) for p in result.points for c in p.contenders), default=0)
    if count < 2:
        return []
    lines = [
        f"Each contender ran {count} times at each point, in turn; the figures above are each "
        "one's median round, and its ratios the medians of the rounds' ratios (in each round "
        "tradestats and the bare consumer ran one right after the other). Trades/s of every "
        "round:",
        "",
        "| density | contender | "
        + " | ".join(f"round {n}" for n in range(1, count + 1))
        + " | vs (e), per round |",
        "|---:|---|" + "---:|" * (count + 1),
    ]
    for point in result.points:
        ceil = point.by_key().get(CEILING)
        for c in point.contenders:
            rates = [_fmt(t.rate) for t in c.rounds] or ["-"] * count
            ratios = " ".join(f"{r:.2f}" for r in c.round_ratios(ceil)) if c is not ceil else ""
            cells = [f"{point.density:g}", f"({c.key}) {c.name}", *rates, ratios or "-"]
            lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _latency_rows(result: RunResult) -> list[str]:
    rows = []
    for c in result.latency:
        lat = c.latency
        cells = [
            f"({c.key}) {c.name}",
            _fmt(lat.p50_ms if lat else None),
            _fmt(lat.p99_ms if lat else None),
            _fmt(lat.max_ms if lat else None),
            _fmt(lat.windows if lat else None),
            _fmt(lat.incomplete if lat else None),
            "**failed**" if c.errors else "yes",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _emit_path(profile: dict[str, Any]) -> list[str]:
    """The per-stage comparison written by ``python -m bench.emitpath --against``."""
    before, after = profile["before"], profile["after"]
    lines = [
        "## The emit path, before and after",
        "",
        "CPU microseconds per window result, per stage, in one process without a broker "
        f"(`bench/emitpath.py`): `{before['rev']}` ({before['commit'][:7]}) and "
        f"`{after['rev']}` ({after['commit'][:7]}), each density in a "
        f"fresh interpreter per tree, the trees alternating, the least of {profile['repeat']} "
        f"runs per stage; {profile['trades']:,} trades per density at "
        f"{profile['rate']:,.0f} trades/s of event time, batches of {profile['batch']:,} "
        f"records. Measured {profile['started']}, regenerated by:",
        "",
        "```",
        profile["command"],
        "```",
        "",
        "(then `python -m bench` puts it here). *process* folds the trades into the panes; "
        "*close and encode* computes the closed windows with their windowed keys and JSON "
        "values; *batch append* fills aiokafka record batches; *checkpoint* makes the state "
        "records. What happens after the batch is full (the producer, the broker's "
        "acknowledgement, the per-partition lanes that submit batches without the handler "
        "waiting for them) is not in it: the sweep above measures it.",
        "",
        "| density | results | tree | " + " | ".join(STAGES) + " | total | results/CPU s |",
        "|---:|---:|---|" + "---:|" * (len(STAGES) + 2),
    ]
    for point in profile["points"]:
        results = point["results"]
        for side, label in (("before", before["rev"]), ("after", after["rev"])):
            seconds = point[side]
            total = sum(seconds[stage] for stage in STAGES)
            cells = [
                f"{point['density']:g}",
                f"{results:,}",
                f"`{label}`",
                *(f"{seconds[stage] / results * 1e6:.2f}" for stage in STAGES),
                f"{total / results * 1e6:.2f}",
                f"{results / total:,.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _not_run(ran: Iterable[str]) -> list[str]:
    """A line naming the described contenders this run left out (``--only``)."""
    missing = [NOTES[key].split("**")[1] for key in NOTES if key not in set(ran)]
    if not missing:
        return []
    return [
        f"Not in this run (left out with `--only`, see the command below): {', '.join(missing)}.",
        "",
    ]


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def write_report(
    result: RunResult, path: Path, plots_dir: Path, emit_profile: dict[str, Any] | None = None
) -> None:
    """Write the whole document; ``emit_profile`` is ``python -m bench.emitpath --against``'s
    JSON, reported in a section of its own when given."""
    throughput_png = plots_dir / f"{path.stem}-throughput.png"
    plot_sweep(result, throughput_png)
    s, m = result.settings, result.machine
    contenders = {c.key: c for p in result.points for c in p.contenders}
    lines = [
        "# Benchmarks: tradestats and its peers",
        "",
        "Generated by `python -m bench` (`bench/`); do not edit by hand - regenerate.",
        "",
        f"Run {result.started}, {result.seconds / 60:.0f} min; load average "
        f"{', '.join(map(str, m['load_average_at_start']))} at the start, "
        f"{', '.join(map(str, result.load_average_at_end))} at the end (2 cores). "
        + (
            "All contenders ran and produced correct output at every point."
            if result.ok
            else "**Some contenders failed or produced wrong output: see below.**"
        ),
        "",
        "## Throughput across trade densities",
        "",
        f"![throughput against density]({_relative(throughput_png, path.parent)})",
        "",
        "Trades per second, one worker process, by density (trades per ticker per second):",
        "",
        *_matrix(result, "trades"),
        "",
        "Window results per second (the input's windows / seconds to done):",
        "",
        *_matrix(result, "windows"),
        "",
        "Within this run:",
        "",
        *_targets(result),
        "",
        "All figures, per point:",
        "",
        "| density | tickers | trades | windows / trade | contender | trades/s | window results/s "
        "| vs (e) | CPU s | trades/CPU s | peak RSS MiB | changelog / 1k trades | correct |",
        "|" + "|".join(["---:"] * 4 + ["---"] + ["---:"] * 7 + [":---:"]) + "|",
        *_sweep_rows(result),
        "",
        *_rounds(result),
        "Contenders: " + "; ".join(f"({c.key}) {c.title}" for c in contenders.values()) + ".",
        "",
    ]
    if result.latency:  # not with --no-latency
        latency_png = plots_dir / f"{path.stem}-latency.png"
        plot_latency(result, latency_png)
        lines += [
            "## Emit latency",
            "",
            f"![emit latency]({_relative(latency_png, path.parent)})",
            "",
            "| contender | p50 ms | p99 ms | max ms | windows | incomplete | ran |",
            "|---|---:|---:|---:|---:|---:|:---:|",
            *_latency_rows(result),
            "",
        ]
    if emit_profile is not None:
        lines += _emit_path(emit_profile)
    problems = [(p, c) for p in result.points for c in p.contenders if not c.ok]
    failed_latency = [c for c in result.latency if c.errors]
    if problems or failed_latency:
        lines += ["## Failures", ""]
        for point, c in problems:
            for error in c.errors:
                lines += [
                    f"- {point.density:g}: ({c.key}) {c.name}:",
                    "",
                    "```",
                    error[-3000:],
                    "```",
                    "",
                ]
            if c.correctness is not None and not c.correctness.passed:
                lines += [
                    f"- {point.density:g}: ({c.key}) {c.name} output: {c.correctness.detail}",
                    "",
                ]
        for c in failed_latency:
            for error in c.errors:
                lines += [f"- latency ({c.key}) {c.name}:", "", "```", error[-3000:], "```", ""]
    lines += ["## Correctness", ""]
    for point in result.points:
        for c in point.contenders:
            detail = c.correctness.detail if c.correctness else "no output to check"
            lines.append(f"- {point.density:g} trades/ticker/s, ({c.key}) {c.name}: {detail}")
    lines += [
        "",
        METHOD.format(
            points=len(result.points),
            trades=", ".join(f"{n:,}" for n in s["trades"]),
            seed=s["seed"],
            partitions=s["partitions"],
            event_rate=s["event_rate"],
            quiet=s["quiet_seconds"],
            sample="all tickers" if s["sample"] <= 0 else f"{s['sample']} tickers (evenly spread)",
            latency_rate=s["latency_rate"],
            latency_tickers=s["latency_tickers"],
            latency_seconds=s["latency_seconds"],
            latency_warmup=s["latency_warmup"],
        ),
        "## Notes on the contenders",
        "",
        *(NOTES[key].rstrip("\n") for key in contenders if key in NOTES),
        "",
        *_not_run(contenders.keys()),
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']}, {m['logical_cores']} logical cores "
        f"({m['physical_cores']} physical); memory {m['memory_gib']} GiB; {m['os']}",
        f"- Python {m['python']}, Java {m['java']}",
        "- Broker: the project's own Kafka 4.1.2 (KRaft, one node) on the same machine.",
        "",
        "## Regenerate",
        "",
        "```",
        result.command,
        "```",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
