"""``docs/benchmarks.md``: every figure, ratios to the baseline (b) and the ceiling (e), plots,
the machine, and how to regenerate. Generated whole from a run's results, so the document
never mixes figures from different runs."""

from __future__ import annotations

import os
from pathlib import Path

from bench.contenders.registry import BASELINE, CEILING
from bench.plots import plot_latency, plot_throughput
from bench.results import ContenderResult, RunResult

__all__ = ["write_report"]

METHOD = """\
## Method

- **Input.** {records:,} records ({trades:,} trades over {tickers} tickers from
  `tradestats.loadgen.TradeGenerator(seed={seed})`, plus one closing trade per partition), JSON
  values keyed by ticker, {partitions} partitions, produced once per run before any contender
  starts. Event time advances at a fixed {event_rate:,.0f} trades per second ({event_seconds:.0f} s
  of event time), so every contender sees the same windows whatever its speed; timestamps never
  decrease within a partition, so no trade is late anywhere. The closing trades (on tickers
  `ZZEND*`, left out of every check) are stamped a window and an advance after the last trade:
  they close every regular window in contenders that emit final results.
- **Contenders** run one at a time, each as its own process with a fresh consumer group and
  state directory, reading the same topic from the beginning, committing every second (the
  tradestats default; Quix Streams' default is 5 s, Kafka Streams' 30 s, faust's 2.8 s - one
  value for all makes "everything committed" equally observable).
- **Throughput** = input records / seconds from the first record consumed to *done*: the
  group's committed offsets reach the end offsets and the output topic has not grown for
  {quiet:.0f} s (done = the later of the two events). Start-up (process start to first record)
  is reported separately. **CPU s** is the process's user + system time over the same
  interval (all threads); **trades/CPU s** is less sensitive to a noisy shared machine than
  wall-clock rates. **Peak RSS** is the kernel's high-water mark (`VmHWM`) of the process.
- **Changelog records / 1,000 trades** = the sum of the end offsets of the contender's
  changelog topics after the run, divided by the input records, x 1,000.
- **Correctness** is checked before a speed counts: every window of {sample} is compared with
  the brute-force oracle (`tests/oracle.py`): for final results, exactly the expected windows
  with the oracle's values; for contenders that emit updates, the last update of each window.
- **Emit latency** is a separate phase per contender: a fresh topic fed at a fixed
  {latency_rate:,.0f} trades/s for {latency_seconds:.0f} s with wall-clock timestamps; latency
  of a window = arrival at the harness of its complete result (the record whose `countTrades`
  covers every trade sent for it) - window end, or 0 for an update that arrived before the
  window ended (its consumer cannot know it is final before then). Windows starting in the first
  {latency_warmup:.0f} s or ending in the last second are not measured. A rate close to a
  contender's throughput would measure queueing instead: see the *latency load* column (the
  latency phase's input rate as a share of the contender's measured throughput).
- Ratios are computed within this one run, side by side: the machine is shared and absolute
  numbers move between runs.
"""


NOTES = """\
## Notes on the contenders

- **(a) tradestats** runs as deployed (`python -m tradestats worker`), configured by environment
  variables only, all defaults except the topics, app id, data directory and web port. It is
  not instrumented for the benchmark: its clock starts at its log line `ready: active partitions`
  (partitions assigned, state restored; it starts fetching at once): a fetch early, never late.
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
- **(c) Quix Streams** runs in a virtual environment of its own (it requires `pydantic<2.14`,
  the project pins 2.14). `hopping_window(5000, 1000).reduce(...)` computing the same
  statistics, `.final(closing_strategy="partition")`: windows close on the partition's stream
  time as in Kafka Streams; Quix's default (`"key"`) would leave every ticker's last windows
  open. Checkpoint (commit) interval 1 s instead of its default 5 s.
- **(d) Kafka Streams** (`bench/kstreams`, Java 17, Kafka Streams 4.1.2): the talk's topology
  with `TimeWindows.ofSizeWithNoGrace(5 s).advanceBy(1 s)`, Gson serdes as in the talk's demo,
  `commit.interval.ms=1000` (default 30 s), default record cache (10 MB) and JVM options.
  Without suppress it emits updates, coalesced per commit by the cache; **(d2)** adds
  `suppress(untilWindowCloses(unbounded()))` and emits final results.
- **(e) bare aiokafka**: a consumer group reading in batches of up to 20,000 records, each
  value decoded by msgspec into a typed struct (the fastest JSON decoder in the project's
  environment; orjson is not installed there), uvloop, auto-commit every second. No state, no
  output: the ceiling for a Python consumer on this machine.
"""


def _ratio(value: float | None, reference: float | None) -> str:
    if not value or not reference:
        return "-"
    return f"{value / reference:.2f}x"


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _row(c: ContenderResult, base: ContenderResult | None, ceil: ContenderResult | None) -> str:
    t, lat, ok = c.throughput, c.latency, c.correctness
    rate = t.rate if t else None
    base_rate = base.throughput.rate if base and base.throughput else None
    ceil_rate = ceil.throughput.rate if ceil and ceil.throughput else None
    correct = "n/a" if ok is None else ("yes" if ok.passed else "**NO**")
    if c.errors:
        correct = "**failed**"
    saturation = (
        f"{lat.rate / rate:.0%}" if lat is not None and rate else "-"
    )  # latency-phase input rate as a share of the contender's throughput
    cells = [
        f"({c.key}) {c.name}",
        _fmt(rate),
        _ratio(rate, base_rate),
        _ratio(rate, ceil_rate),
        _fmt(t.trades_per_cpu_second if t else None),
        _fmt(t.cpu_seconds if t else None, ".1f"),
        _fmt(t.peak_rss_bytes / 2**20 if t else None),
        _fmt(t.changelog_per_1000 if t else None, ",.1f"),
        _fmt(lat.p50_ms if lat else None),
        _fmt(lat.p99_ms if lat else None),
        saturation,
        _fmt(t.startup_seconds if t else None, ".1f"),
        correct,
    ]
    return "| " + " | ".join(cells) + " |"


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def write_report(result: RunResult, path: Path, plots_dir: Path) -> None:
    throughput_png = plots_dir / "benchmarks-throughput.png"
    latency_png = plots_dir / "benchmarks-latency.png"
    plot_throughput(result, throughput_png)
    plot_latency(result, latency_png)
    by_key = {c.key: c for c in result.contenders}
    base, ceil = by_key.get(BASELINE), by_key.get(CEILING)
    s, d, m = result.settings, result.dataset, result.machine
    header = (
        "| contender | trades/s | vs (b) | vs (e) | trades/CPU s | CPU s | peak RSS MiB "
        "| changelog / 1k trades | p50 ms | p99 ms | latency load (saturation) | start-up s "
        "| correct |"
    )
    lines = [
        "# Benchmarks: tradestats and its peers",
        "",
        "Generated by `python -m bench` (`bench/`); do not edit by hand - regenerate.",
        "",
        f"Run {result.started}, {result.seconds / 60:.0f} min. "
        + (
            "All contenders ran and produced correct output."
            if result.ok
            else "**Some contenders failed or produced wrong output: see below.**"
        ),
        "",
        "## Results",
        "",
        header,
        "|" + "|".join(["---"] + ["---:"] * 11 + [":---:"]) + "|",
        *(_row(c, base, ceil) for c in result.contenders),
        "",
        "Contenders: " + "; ".join(f"({c.key}) {c.title}" for c in result.contenders) + ".",
        "",
        f"![throughput]({_relative(throughput_png, path.parent)})",
        "",
        f"![emit latency]({_relative(latency_png, path.parent)})",
        "",
    ]
    problems = [c for c in result.contenders if not c.ok]
    if problems:
        lines += ["## Failures", ""]
        for c in problems:
            for error in c.errors:
                lines += [f"- ({c.key}) {c.name}:", "", "```", error[-3000:], "```", ""]
            if c.correctness is not None and not c.correctness.passed:
                lines += [f"- ({c.key}) {c.name} output: {c.correctness.detail}", ""]
    lines += ["## Correctness", ""]
    for c in result.contenders:
        detail = c.correctness.detail if c.correctness else "no output to check"
        lines.append(f"- ({c.key}) {c.name}: {detail}")
    lines += [
        "",
        METHOD.format(
            records=d.get("records", 0),
            trades=s["trades"],
            tickers=s["tickers"],
            seed=s["seed"],
            partitions=s["partitions"],
            event_rate=s["event_rate"],
            event_seconds=d.get("event_seconds", 0),
            quiet=s["quiet_seconds"],
            sample="all tickers" if s["sample"] <= 0 else f"{s['sample']} tickers (evenly spread)",
            latency_rate=s["latency_rate"],
            latency_seconds=s["latency_seconds"],
            latency_warmup=s["latency_warmup"],
        ),
        NOTES,
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']}, {m['logical_cores']} logical cores "
        f"({m['physical_cores']} physical); memory {m['memory_gib']} GiB; {m['os']}",
        f"- Python {m['python']}, Java {m['java']}; load average at start "
        f"{', '.join(map(str, m['load_average_at_start']))}",
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
