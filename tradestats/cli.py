"""The ``tradestats`` command: ``worker`` runs the service, ``loadgen`` produces trades."""

from __future__ import annotations

import sys

import click

from tradestats.settings import ConfigError, Settings, load_settings

__all__ = ["main"]


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Live trade statistics over hopping windows (configured by environment variables)."""


@main.command()
def worker() -> None:
    """Run the stream-processing worker (web server on WEB_PORT) until SIGTERM/SIGINT."""
    settings = _settings()
    from tradestats.service.worker import run_worker

    sys.exit(run_worker(settings))


@main.command()
@click.option(
    "--rate",
    type=float,
    default=10.0,
    show_default=True,
    help="Trades per second; 0 = as fast as possible.",
)
@click.option("--count", type=int, default=None, help="Stop after this many trades.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option(
    "--tickers",
    "ticker_count",
    type=int,
    default=10,
    show_default=True,
    help="Number of tickers: the original ten, then synthetic ones.",
)
@click.option(
    "--types",
    default="ASK,BID",
    show_default=True,
    help="Trade types to draw from (the original demo used only ASK).",
)
@click.option("--seed", type=int, default=None, help="Seed for a reproducible stream.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option(
    "--log-every",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="With --no-progress: seconds between the log lines giving the rate.",
)
def loadgen(
    rate: float,
    count: int | None,
    duration: float | None,
    ticker_count: int,
    types: str,
    seed: int | None,
    progress: bool,
    log_every: float,
) -> None:
    """Produce realistic trades to TRADES_TOPIC (runs until --count/--duration, SIGTERM or
    Ctrl-C; then prints a summary)."""
    from tradestats.loadgen import run_loadgen, stop_on_signals

    stop_requested = stop_on_signals()  # first: as PID 1 an unhandled SIGTERM is ignored
    settings = _settings()

    report = run_loadgen(
        settings,
        rate=rate or None,
        count=count,
        duration=duration,
        ticker_count=ticker_count,
        types=[t.strip() for t in types.split(",")],
        seed=seed,
        progress=progress,
        stop_requested=stop_requested,
        log_interval=log_every,
    )
    click.echo(
        f"sent {report.sent} trades ({report.bytes / 1e6:.1f} MB) over {len(report.per_ticker)}"
        f" tickers in {report.seconds:.1f} s: {report.rate:,.0f} trades/s",
        err=True,
    )


if __name__ == "__main__":
    main()
