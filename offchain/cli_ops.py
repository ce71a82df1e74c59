"""Operator commands: ``dmm keeper``, ``dmm liquidator``, ``dmm replay``, ``dmm status``.

Every command reads one YAML file (``offchain/bots/keeper.example.yaml`` documents each field);
command-line options override it. Keys never come from a file in the repository: an ape account
alias (``--account``, passphrase from ``DMM_PASSPHRASE`` or a prompt) or an environment variable
(``DMM_KEEPER_KEY``, ``DMM_LIQUIDATOR_KEY``, ``DMM_REPLAY_KEY``). Without a key a bot runs dry.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

import click

from offchain import WAD
from offchain.bots.builders import (
    ConfigError,
    build_keeper,
    build_liquidator,
    keeper_markets,
    load_config,
    load_key,
    loop_config,
    sender_config,
)
from offchain.bots.keeper import read_history_csv
from offchain.bots.liquidator import scan
from offchain.bots.loop import TooManyFailures, run_loop
from offchain.bots.metrics import BotMetrics, serve
from offchain.devnet.replay import CrashScenario, crash_scenario, replay
from offchain.protocol.chain import EngineClient, FeedClient, RegistryClient, connect, latest_block
from offchain.protocol.tx_sender import TxSender

log = logging.getLogger("dmm")


# ---------------------------------------------------------------------------------------------
# Configuration


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """A config mistake (:class:`ConfigError`) as a one-line usage error (exit code 2)."""
    try:
        yield
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


config_option = click.option(
    "--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="YAML config."
)
rpc_option = click.option("--rpc", help="JSON-RPC URL (overrides the config's 'rpc').")
account_option = click.option("--account", help="ape account alias holding the key.")
verbose_option = click.option("-v", "--verbose", is_flag=True, help="Debug logging.")


def _rpc(cfg: dict[str, Any], rpc: str | None) -> Any:
    url = rpc or cfg.get("rpc")
    if not url:
        raise click.UsageError("no RPC URL: pass --rpc or set 'rpc' in the config")
    return connect(str(url), timeout=float(cfg.get("rpc_timeout", 10)))


def _run(name: str, w3: Any, tick: Any, cfg: dict[str, Any], metrics: BotMetrics) -> None:
    port = cfg.get("metrics_port")
    if port:
        serve(metrics, int(port))
        log.info("%s: metrics and health on http://127.0.0.1:%s/metrics, /healthz", name, port)
    try:
        run_loop(name, w3, tick, loop_config(cfg), metrics)
    except TooManyFailures as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        log.info("%s: interrupted, exiting", name)


# ---------------------------------------------------------------------------------------------
# Commands


@click.command("keeper")
@config_option
@rpc_option
@account_option
@click.option("--registry", help="Registry address (overrides the config).")
@click.option("--dry-run", is_flag=True, help="Sign and print batches; send nothing.")
@click.option("--history", "histories", multiple=True, help="MARKET_ID=CSV warm-up history.")
@verbose_option
@usage_errors()
def keeper_command(
    config_path: str | None,
    rpc: str | None,
    account: str | None,
    registry: str | None,
    dry_run: bool,
    histories: tuple[str, ...],
    verbose: bool,
) -> None:
    """Run the risk keeper: one signed batch per block for every market that changed."""
    setup_logging(verbose)
    cfg = load_config(config_path)
    w3 = _rpc(cfg, rpc)
    key = load_key(account, "DMM_KEEPER_KEY")
    registry_address = registry or cfg.get("registry")
    if not registry_address:
        raise click.UsageError("no registry: pass --registry or set 'registry' in the config")
    keeper = build_keeper(cfg, w3, registry_address, key, dry_run, echo=click.echo)
    for item in histories:
        market_id, _, path = item.partition("=")
        times, prices = read_history_csv(path)
        keeper.warm_up(int(market_id), times, prices)
    config, sender, metrics = keeper.config, keeper.sender, keeper.metrics
    log.info(
        "keeper: %d market(s), registry %s, %s",
        len(config.markets),
        registry_address,
        "DRY RUN (nothing is sent)" if sender is None else f"relaying from {key.address}",
    )
    _run("keeper", w3, keeper.tick, cfg, metrics)


@click.command("liquidator")
@config_option
@rpc_option
@account_option
@click.option("--engine", help="Engine address (overrides the config).")
@click.option("--dry-run", is_flag=True, help="Scan and log the plan; send nothing.")
@verbose_option
@usage_errors()
def liquidator_command(
    config_path: str | None,
    rpc: str | None,
    account: str | None,
    engine: str | None,
    dry_run: bool,
    verbose: bool,
) -> None:
    """Run the liquidation bot: scan every block, liquidate the unhealthy worst first."""
    setup_logging(verbose)
    cfg = load_config(config_path)
    w3 = _rpc(cfg, rpc)
    engine_address = engine or cfg.get("engine")
    if not engine_address:
        raise click.UsageError("no engine: pass --engine or set 'engine' in the config")
    key = load_key(account, "DMM_LIQUIDATOR_KEY")
    bot = build_liquidator(cfg, w3, engine_address, key, dry_run)
    sender, metrics = bot.sender, bot.metrics
    log.info(
        "liquidator: engine %s, %s",
        engine_address,
        "DRY RUN (nothing is sent)" if sender is None else f"acting from {key.address}",
    )
    _run("liquidator", w3, bot.tick, cfg, metrics)


@click.command("replay")
@config_option
@rpc_option
@account_option
@click.option("--feed", "feeds", multiple=True, required=True, help="Mock feed address (repeat).")
@click.option("--csv", "csv_path", type=click.Path(exists=True), help="Price CSV to replay.")
@click.option("--last", type=int, default=48, show_default=True, help="Replay the CSV's last N.")
@click.option("--seed", type=int, default=7, show_default=True, help="Crash scenario seed.")
@click.option("--crash-pct", type=float, default=0.3, show_default=True)
@click.option("--start-price", type=float, default=60_000.0, show_default=True)
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds per step.")
@verbose_option
@usage_errors()
def replay_command(
    config_path: str | None,
    rpc: str | None,
    account: str | None,
    feeds: tuple[str, ...],
    csv_path: str | None,
    last: int,
    seed: int,
    crash_pct: float,
    start_price: float,
    interval: float,
    verbose: bool,
) -> None:
    """Push a price CSV or a seeded crash into devnet mock feeds."""
    setup_logging(verbose)
    cfg = load_config(config_path)
    w3 = _rpc(cfg, rpc)
    key = load_key(account, "DMM_REPLAY_KEY")
    if key is None:
        raise click.UsageError("replay sends transactions: set DMM_REPLAY_KEY or pass --account")
    if csv_path:
        _, prices = read_history_csv(csv_path)
        prices = prices[-last:]
    else:
        prices = crash_scenario(
            CrashScenario(start_price=start_price, crash_pct=crash_pct, seed=seed)
        )
    client = FeedClient(w3)
    sender = TxSender(w3, key, sender_config(cfg))
    replay(sender, client, {feed: prices for feed in feeds}, interval=interval)
    click.echo(f"replayed {len(prices)} prices into {len(feeds)} feed(s)")


@click.command("status")
@config_option
@rpc_option
@click.option("--registry", help="Registry address (overrides the config).")
@click.option("--engine", help="Engine address (overrides the config).")
@usage_errors()
def status_command(
    config_path: str | None, rpc: str | None, registry: str | None, engine: str | None
) -> None:
    """Each market's multiplier, staleness and funding rate; liquidatable subaccounts."""
    cfg = load_config(config_path)
    w3 = _rpc(cfg, rpc)
    registry_address = registry or cfg.get("registry")
    if not registry_address:
        raise click.UsageError("no registry: pass --registry or set 'registry' in the config")
    reg = RegistryClient(w3, registry_address)
    feeds = FeedClient(w3)
    now = latest_block(w3).timestamp
    click.echo(
        f"{'market':<12} {'multiplier':>10} {'target':>8} {'stale':>5} {'age s':>7}"
        f" {'funding/s':>12} {'price':>12} {'feed age s':>10}"
    )
    for m in keeper_markets(cfg):
        state = reg.market_state(m.market_id)
        reading = feeds.latest(m.feed)
        age = now - state.updated_at if state.updated_at else -1
        click.echo(
            f"{m.label:<12} {reg.multiplier(m.market_id) / WAD:>10.4f} {state.target / WAD:>8.4f}"
            f" {'yes' if reg.is_stale(m.market_id) else 'no':>5} {age:>7}"
            f" {reg.funding_rate(m.market_id) / WAD:>12.3e} {reading.price:>12.2f}"
            f" {now - reading.updated_at:>10}"
        )
    engine_address = engine or cfg.get("engine")
    if engine_address:
        engine_client = EngineClient(w3, engine_address)
        result = scan(engine_client)
        insurance = engine_client.insurance_fund() / WAD
        bad_debt = engine_client.bad_debt() / WAD
        click.echo(
            f"subaccounts with positions: {result.scanned};"
            f" liquidatable: {len(result.liquidatable)} (scan {result.seconds:.3f} s);"
            f" insurance fund {insurance:,.2f} USD; bad debt {bad_debt:,.2f} USD"
        )


COMMANDS = [keeper_command, liquidator_command, replay_command, status_command]

__all__ = [
    "COMMANDS",
    "keeper_command",
    "liquidator_command",
    "ops",
    "replay_command",
    "status_command",
]


@click.group("ops")
def ops() -> None:
    """Keeper, liquidation bot, replay and status (also mounted on ``dmm``)."""


for _command in COMMANDS:
    ops.add_command(_command)

if __name__ == "__main__":
    ops()
