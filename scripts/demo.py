"""A devnet crash with the risk keeper and the liquidation bot at work (``make demo``).

    ape run demo --network ethereum:local:foundry
    ape run demo --network ethereum:local:foundry \\
        --prices ../shared/data/binance_btcusdt_1h.csv --from 2020-03-11 --to 2020-03-14

ape-foundry starts anvil and stops it when the script ends. The logic lives in
``offchain/devnet/`` (scenario, run, report); this script parses the options, sets up the log
and prints the summary.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from ape import accounts, chain
from ape.cli import ConnectedProviderCommand, network_option
from ape.logging import logger as ape_logger

from offchain.devnet.demo import run_demo
from offchain.devnet.scenario import (
    DEFAULT_SEED,
    DemoConfig,
    Scenario,
    demo_actors,
    seeded_scenario,
    window_scenario,
)
from offchain.devnet.summary import format_summary
from offchain.devnet.system import stop_devnet
from offchain.risk.prices import parse_date

QUIET_LOGGERS = ("dmm.tx", "dmm.replay")


def setup_logging() -> None:
    """Operator lines on stderr: the demo, the keeper and the bot; transaction plumbing off."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)-14s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("dmm")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    ape_logger.set_level("WARNING")


def pick_scenario(
    seed: int, prices: Path | None, eth_prices: Path | None, start: str | None, end: str | None
) -> Scenario:
    if prices is None:
        if eth_prices or start or end:
            raise click.UsageError("--eth-prices, --from and --to need --prices")
        return seeded_scenario(seed)
    if not start or not end:
        raise click.UsageError("--prices needs --from and --to")
    first, last = parse_date(start), parse_date(end)
    if first is None or last is None or first >= last:
        raise click.UsageError(f"--from {start} --to {end}: two dates, the first before the last")
    try:
        return window_scenario(prices, first, last, eth_prices)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@click.command(cls=ConnectedProviderCommand)
@network_option()
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True, help="Crash seed.")
@click.option(
    "--prices",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Hourly BTC candles (CSV) to replay instead of the seeded crash.",
)
@click.option(
    "--eth-prices",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Hourly ETH candles for the same window (default: ETH follows BTC's moves).",
)
@click.option("--from", "start", help="First close of the window (UTC date or time).")
@click.option("--to", "end", help="Last close of the window, inclusive.")
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("out/demo.png"),
    show_default=True,
    help="Where the PNG goes.",
)
def cli(
    seed: int,
    prices: Path | None,
    eth_prices: Path | None,
    start: str | None,
    end: str | None,
    chart: Path,
) -> None:
    """Deploy on a devnet, open leveraged positions, replay a crash with the keeper and the
    liquidation bot ticking each step, then print what happened."""
    setup_logging()
    try:
        scenario = pick_scenario(seed, prices, eth_prices, start, end)
        result = run_demo(
            demo_actors(accounts.test_accounts),
            scenario,
            chain.provider.uri,
            DemoConfig(chart=chart),
        )
    finally:
        stop_devnet(chain.provider)
    click.echo("")
    click.echo(format_summary(result))
    if not result.reconciliation.holds or result.unhandled:
        raise click.ClickException("the books do not balance or an unhealthy account was missed")
