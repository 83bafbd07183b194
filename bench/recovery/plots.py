"""The report's PNGs (matplotlib, headless): the state-size series, the startup phases, and
the segment-size comparison. Each returns the file name it wrote, for the report to link."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on CI or over SSH

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullFormatter

from bench.recovery.plan import format_bytes, format_count
from bench.recovery.report import KIND_TITLES, PHASE_NAMES
from bench.recovery.results import KINDS, RunResult, median

__all__ = ["write_plots"]

_COUNT = FuncFormatter(lambda x, _: format_count(int(x)))

_STYLE = {
    "warm-sigterm": ("tab:green", "o"),
    "warm-sigkill": ("tab:olive", "s"),
    "cold": ("tab:red", "^"),
    "standby": ("tab:blue", "D"),
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
    left.set(xscale="log", xlabel="stored aggregates", ylabel="seconds to /ready 200")
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
    return written
