"""Operator commands: ``dmm keeper``, ``dmm liquidator``, ``dmm replay``, ``dmm status``.

Every command reads one YAML file (``offchain/keeper.example.yaml`` documents each field);
command-line options override it. Keys never come from a file in the repository: an ape account
alias (``--account``, passphrase from ``DMM_PASSPHRASE`` or a prompt) or an environment variable
(``DMM_KEEPER_KEY``, ``DMM_LIQUIDATOR_KEY``, ``DMM_REPLAY_KEY``). Without a key a bot runs dry.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import click
import yaml
from eth_account import Account
from eth_account.signers.local import LocalAccount

from offchain import WAD
from offchain.chain import (
    EngineClient,
    FeedClient,
    RegistryClient,
    connect,
    latest_block,
)
from offchain.keeper import (
    Keeper,
    KeeperConfig,
    KeeperMarket,
    read_history_csv,
)
from offchain.keeper_models import CalibratedRiskModel, EwmaRiskModel, LiveRiskModel
from offchain.liquidator import Liquidator, LiquidatorConfig, scan
from offchain.loop import LoopConfig, TooManyFailures, run_loop
from offchain.metrics import BotMetrics, serve
from offchain.replay import CrashScenario, crash_scenario, replay
from offchain.tx_sender import GWEI, SenderConfig, TxSender

log = logging.getLogger("dmm")


# ---------------------------------------------------------------------------------------------
# Configuration


def load_config(path: str | None) -> dict[str, Any]:
    """The YAML file as a dict (empty without a file)."""
    if path is None:
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise click.UsageError(f"{path}: expected a mapping at the top level")
    return data


def _pick(section: dict[str, Any], cls: type, renames: dict[str, str] | None = None) -> dict:
    """The keys of ``section`` that are fields of dataclass ``cls`` (after ``renames``)."""
    names = {f.name for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in (section or {}).items():
        key = (renames or {}).get(key, key)
        if key not in names:
            raise click.UsageError(f"unknown setting {key!r} for {cls.__name__}")
        out[key] = value
    return out


def sender_config(cfg: dict[str, Any]) -> SenderConfig:
    section = dict(cfg.get("sender") or {})
    for gwei_key, key in (
        ("priority_fee_gwei", "priority_fee"),
        ("max_fee_cap_gwei", "max_fee_cap"),
    ):
        if gwei_key in section:
            section[key] = int(float(section.pop(gwei_key)) * GWEI)
    return SenderConfig(**_pick(section, SenderConfig))


def loop_config(cfg: dict[str, Any]) -> LoopConfig:
    return LoopConfig(**_pick(cfg.get("loop") or {}, LoopConfig))


def keeper_markets(cfg: dict[str, Any]) -> tuple[KeeperMarket, ...]:
    markets = cfg.get("markets") or []
    if not markets:
        raise click.UsageError("the config needs a 'markets' list")
    return tuple(
        KeeperMarket(int(m["id"]), str(m["feed"]), str(m.get("name", ""))) for m in markets
    )


def load_key(alias: str | None, env_var: str) -> LocalAccount | None:
    """A signing key from an ape account alias or an environment variable; ``None`` if neither."""
    if alias:
        base = Path(os.environ.get("APE_DATA_FOLDER", Path.home() / ".ape"))
        keyfile = base / "accounts" / f"{alias}.json"
        if not keyfile.exists():
            raise click.UsageError(f"no ape account {alias!r} ({keyfile})")
        passphrase = os.environ.get("DMM_PASSPHRASE") or click.prompt(
            f"passphrase of {alias}", hide_input=True
        )
        return Account.from_key(Account.decrypt(json.loads(keyfile.read_text()), passphrase))
    raw = os.environ.get(env_var)
    if raw:
        return Account.from_key(raw.strip())
    return None


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


class Tier0Rates(Mapping[int, int]):
    """First-tier rates read from the registry on first use, so that a node that is down at
    start-up fails a tick (retried by the loop) rather than the start."""

    def __init__(self, registry: RegistryClient, market_ids: Sequence[int]) -> None:
        self.registry = registry
        self.market_ids = tuple(market_ids)
        self._rates: dict[int, int] = {}

    def __getitem__(self, market_id: int) -> int:
        if market_id not in self.market_ids:
            raise KeyError(market_id)
        if market_id not in self._rates:
            self._rates[market_id] = self.registry.tier0_rate(market_id)
        return self._rates[market_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self.market_ids)

    def __len__(self) -> int:
        return len(self.market_ids)


def risk_model(
    section: dict[str, Any], registry: RegistryClient, markets: Sequence[KeeperMarket]
) -> LiveRiskModel:
    """The keeper's model: ``kind: calibrated`` (default, the backtested model; its first-tier
    rates are read from the registry) or ``kind: ewma``."""
    settings = dict(section)
    kind = settings.pop("kind", "calibrated")
    if kind == "ewma":
        return EwmaRiskModel(**_pick(settings, EwmaRiskModel))
    if kind != "calibrated":
        raise click.UsageError(f"unknown model kind {kind!r}: use 'calibrated' or 'ewma'")
    allowed = {"bar_seconds", "horizon"}
    unknown = set(settings) - allowed
    if unknown:
        raise click.UsageError(f"unknown setting(s) {sorted(unknown)} for the calibrated model")
    return CalibratedRiskModel(Tier0Rates(registry, [m.market_id for m in markets]), **settings)


def build_keeper(
    cfg: dict[str, Any],
    w3: Any,
    registry_address: str,
    key: LocalAccount | None,
    dry_run: bool,
    echo: Any = print,
) -> Keeper:
    """A keeper from the config; histories named in the config are loaded. No key or
    ``dry_run``: no sender (dry run)."""
    config = KeeperConfig(
        markets=keeper_markets(cfg), **_pick(cfg.get("keeper") or {}, KeeperConfig)
    )
    registry = RegistryClient(w3, registry_address)
    model = risk_model(cfg.get("model") or {}, registry, config.markets)
    sender = None if dry_run or key is None else TxSender(w3, key, sender_config(cfg))
    keeper = Keeper(
        config,
        registry,
        FeedClient(w3),
        model,
        key,
        sender,
        None,
        BotMetrics("keeper"),
        echo=echo,
    )
    for m in cfg.get("markets", []):
        if m.get("history"):
            times, prices = read_history_csv(m["history"])
            keeper.warm_up(int(m["id"]), times, prices)
    return keeper


def build_liquidator(
    cfg: dict[str, Any], w3: Any, engine_address: str, key: LocalAccount | None, dry_run: bool
) -> Liquidator:
    """A liquidation bot from the config (dry run without a key)."""
    sender = None if dry_run or key is None else TxSender(w3, key, sender_config(cfg))
    section = dict(cfg.get("liquidator") or {})
    return Liquidator(
        EngineClient(w3, engine_address),
        sender,
        LiquidatorConfig(
            **_pick(section, LiquidatorConfig, {"subaccount": "liquidator_subaccount"})
        ),
        BotMetrics("liquidator"),
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
    "build_keeper",
    "build_liquidator",
    "keeper_command",
    "liquidator_command",
    "load_config",
    "load_key",
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
