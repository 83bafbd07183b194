"""The report's PNGs (matplotlib, headless): the state-size series, the startup phases, and
the segment-size comparison. Each returns the file name it wrote, for the report to link."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI or over SSH

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullFormatter

from bench.recovery.plan import format_bytes, format_count
from bench.recovery.report import KIND_TITLES, PHASE_NAMES, cold_replay_rate, standby_rate
from bench.recovery.results import KINDS, RunResult, median

__all__ = ["write_plots"]

_COUNT = FuncFormatter(lambda x, _: format_count(int(x)))

_STYLE = {
    "warm-sigterm": ("tab:green", "o"),
    "warm-sigkill": ("tab:olive", "s"),
    "cold": ("tab:red", "^"),
    "standby": ("tab:blue", "D"),
    "kstreams-cold": ("tab:purple", "v"),
    "kstreams-warm": ("tab:pink", "P"),
}


def _sizes_plot(run: RunResult, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = [s.state.aggregates for s in run.sizes]
    for kind in KINDS:
        color, marker = _STYLE[kind]
        ys = [median([r.seconds_to_ready for r in s.of_kind(kind)]) for s in run.sizes]
        rs = [median([float(r.records_replayed) for r in s.of_kind(kind)]) for s in run.sizes]
        left.plot(xs, ys, marker=marker, color=color, label=KIND_TITLES[kind])
        right.plot(xs, rs, marker=marker, color=color, label=KIND_TITLES[kind])
    takeovers = [s for s in run.sizes if s.takeover is not None]
    if takeovers:
        color, marker = _STYLE["standby"]
        tx = [s.state.aggregates for s in takeovers]
        left.plot(
            tx,
            [s.takeover.restore_seconds or float("nan") for s in takeovers],  # type: ignore[union-attr]
            marker=marker,
            color=color,
            label="Standby takeover (assigned → ready)",
        )
        left.plot(
            tx,
            [s.takeover.total_seconds for s in takeovers],  # type: ignore[union-attr]
            marker=marker,
            color=color,
            linestyle="--",
            alpha=0.6,
            label="Standby takeover (kill → ready)",
        )
        right.plot(
            tx,
            [float(s.takeover.records_replayed) for s in takeovers],  # type: ignore[union-attr]
            marker=marker,
            color=color,
            label="Standby takeover",
        )
    with_kstreams = [s for s in run.sizes if s.kstreams is not None]
    for kind in ("cold", "warm"):
        color, marker = _STYLE[f"kstreams-{kind}"]
        label = f"Kafka Streams, {kind}"
        kx = [s.state.aggregates for s in with_kstreams]
        runs = [s.kstreams.of_kind(kind) for s in with_kstreams]  # type: ignore[union-attr]
        left.plot(
            kx,
            [median([r.seconds_to_ready for r in rs]) for rs in runs],
            marker=marker,
            color=color,
            linestyle=":",
            label=label,
        )
        right.plot(
            kx,
            [median([float(r.records_restored) for r in rs]) for rs in runs],
            marker=marker,
            color=color,
            linestyle=":",
            label=f"{label} (its window records)",
        )
    left.set(xscale="log", xlabel="stored aggregates", ylabel="seconds to ready")
    left.set_ylim(bottom=0)
    left.set_title("Time from process start to ready")
    right.set_xscale("log")
    right.set_yscale("symlog", linthresh=10)  # warm restarts replay 0: no plain log scale
    right.set_ylim(bottom=0)
    right.set(xlabel="stored aggregates", ylabel="changelog records replayed")
    right.set_title("Changelog records replayed")
    for ax in (left, right):
        ax.xaxis.set_major_formatter(_COUNT)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"tradestats recovery ({run.started[:10]})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _phases_plot(run: RunResult, path: Path) -> None:
    labels, stacks = [], []
    for size in run.sizes:
        for kind in KINDS:
            restarts = size.of_kind(kind)
            if restarts:
                labels.append(f"{format_count(size.state.target_aggregates)} {kind}")
                stacks.append(
                    [median([getattr(r.phases, n) or 0.0 for r in restarts]) for n in PHASE_NAMES]
                )
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(labels) + 1.5))
    left = [0.0] * len(labels)
    colors = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]
    for i, name in enumerate(PHASE_NAMES):
        widths = [stack[i] for stack in stacks]
        ax.barh(labels, widths, left=left, color=colors[i], label=name)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("seconds (medians)")
    ax.set_title("Where a restart's time goes")
    ax.legend(ncol=len(PHASE_NAMES), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _segments_plot(run: RunResult, path: Path) -> None:
    labels = [format_bytes(s.segment_bytes) for s in run.segments]
    seconds = [median([r.seconds_to_ready for r in s.cold]) for s in run.segments]
    replayed = [median([float(r.records_replayed) for r in s.cold]) for s in run.segments]
    keys = [s.state.live_keys for s in run.segments]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    right.bar(labels, replayed, color="tab:red", label="replayed")
    right.plot(labels, keys, "k_", markersize=30, label="live keys (minimum)")
    right.set_ylabel("changelog records replayed")
    right.set_title("Cold restore: records replayed")
    right.legend(fontsize=8, loc="upper center")
    left.bar(labels, seconds, color="tab:orange")
    left.set_ylabel("seconds to /ready 200")
    left.set_title("Cold restore: time to ready")
    for ax in (left, right):
        ax.set_xlabel("changelog segment.bytes")
        ax.grid(True, axis="y", alpha=0.3)
    state = format_count(run.segments[0].state.target_aggregates)
    fig.suptitle(f"Changelog segment size, {state} stored aggregates", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _baseline_plot(run: RunResult, path: Path) -> None:
    """Cold start-to-ready and restore rates, before and after, at each state size."""
    assert run.baseline is not None
    before = {s.state.target_aggregates: s for s in run.baseline.sizes}
    pairs = [
        (before[s.state.target_aggregates], s)
        for s in run.sizes
        if s.state.target_aggregates in before
    ]
    xs = list(range(len(pairs)))
    width = 0.2
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, (name, color) in enumerate((("before", "tab:gray"), ("after", "tab:red"))):
        sizes = [pair[index] for pair in pairs]
        shift = (index - 0.5) * 2 * width
        left.bar(
            [x + shift for x in xs],
            [median([r.seconds_to_ready for r in s.of_kind("cold")]) for s in sizes],
            2 * width,
            color=color,
            label=name,
        )
        right.bar(
            [x + (index - 1.5) * width for x in xs],
            [cold_replay_rate(s) or 0.0 for s in sizes],
            width,
            color=color,
            label=f"cold replay, {name}",
        )
        right.bar(
            [x + (index + 0.5) * width for x in xs],
            [standby_rate(s.takeover) or 0.0 for s in sizes],
            width,
            color=color,
            alpha=0.5,
            hatch="//",
            label=f"standby catch-up, {name}",
        )
    left.set(ylabel="seconds to /ready 200", title="Cold start to ready")
    right.set_yscale("log")
    right.set_ylim(top=right.get_ylim()[1] * 10)  # room for the legend above the bars
    right.set(ylabel="changelog records/s", title="Restore rate")
    for ax in (left, right):
        ax.set_xticks(xs, [format_count(after.state.target_aggregates) for _, after in pairs])
        ax.set_xlabel("stored aggregates")
        ax.grid(True, axis="y", which="both", alpha=0.3)
    left.legend(fontsize=8)
    right.legend(fontsize=8, ncol=2, loc="upper center")
    fig.suptitle(f"Before and after: {run.baseline.label}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(run: RunResult, out_dir: Path) -> list[str]:
    """Write the PNGs into ``out_dir``; returns their file names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if run.sizes:
        _sizes_plot(run, out_dir / "recovery-sizes.png")
        _phases_plot(run, out_dir / "recovery-phases.png")
        written += ["recovery-sizes.png", "recovery-phases.png"]
    if run.segments:
        _segments_plot(run, out_dir / "recovery-segments.png")
        written.append("recovery-segments.png")
    if run.baseline is not None and run.sizes:
        _baseline_plot(run, out_dir / "recovery-before-after.png")
        written.append("recovery-before-after.png")
    return written
