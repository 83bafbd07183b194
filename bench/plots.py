"""The report's PNG plots: throughput bars and emit-latency bars (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.results import RunResult

__all__ = ["plot_latency", "plot_throughput"]


def plot_throughput(result: RunResult, path: Path) -> None:
    rows = [c for c in result.contenders if c.throughput is not None]
    names = [c.name for c in rows]
    rates = [c.throughput.rate if c.throughput else 0.0 for c in rows]
    colours = ["tab:green" if c.ok else "tab:red" for c in rows]
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    bars = ax.barh(names, rates, color=colours)
    ax.bar_label(bars, labels=[f"{r:,.0f}" for r in rates], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("trades per second, one worker process (higher is better)")
    ax.set_title(f"Sustained throughput, {result.dataset.get('records', 0):,} trades")
    ax.margins(x=0.15)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_latency(result: RunResult, path: Path) -> None:
    rows = [c for c in result.contenders if c.latency is not None and c.latency.windows]
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
