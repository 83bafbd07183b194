"""The report's PNG plots: throughput against density (log scales) and emit-latency bars
(matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.results import RunResult

__all__ = ["plot_latency", "plot_sweep"]


def plot_sweep(result: RunResult, path: Path) -> None:
    """Trades/s and window results/s against density, one line per contender."""
    fig, (trades_ax, windows_ax) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110)
    keys = list(dict.fromkeys(c.key for p in result.points for c in p.contenders))
    for key in keys:
        densities, trades, windows = [], [], []
        name, emits = key, True
        for point in result.points:
            c = point.by_key().get(key)
            if c is None or c.throughput is None or not c.ok:
                continue
            name, emits = f"({key}) {c.name}", c.emission != "none"
            densities.append(point.density)
            trades.append(c.throughput.rate)
            windows.append(c.throughput.windows_per_second)
        if not densities:
            continue
        style = {"marker": "o", "linewidth": 2.5 if key == "a" else 1.3}
        trades_ax.plot(densities, trades, label=name, **style)
        if emits:
            windows_ax.plot(densities, windows, label=name, **style)
    for ax, what in ((trades_ax, "trades"), (windows_ax, "window results")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("trades per ticker per second of event time")
        ax.set_ylabel(f"{what} per second (higher is better)")
        ax.grid(True, which="both", alpha=0.3)
    trades_ax.set_title("Input throughput, one worker process")
    windows_ax.set_title("Window results per second")
    trades_ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_latency(result: RunResult, path: Path) -> None:
    rows = [c for c in result.latency if c.latency is not None and c.latency.windows]
    names = [c.name for c in rows]
    p50 = [c.latency.p50_ms or 0.0 for c in rows if c.latency]
    p99 = [c.latency.p99_ms or 0.0 for c in rows if c.latency]
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    positions = range(len(rows))
    ax.barh([p - 0.2 for p in positions], p50, height=0.4, label="p50")
    ax.barh([p + 0.2 for p in positions], p99, height=0.4, label="p99")
    ax.set_yticks(list(positions), names)
    ax.invert_yaxis()
    rate = rows[0].latency.rate if rows and rows[0].latency else 0
    ax.set_xlabel("ms from window end to complete result received (lower is better)")
    ax.set_title(f"Emit latency at a fixed {rate:,.0f} trades/s")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
