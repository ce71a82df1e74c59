"""Operator commands: ``dmm keeper``, ``dmm liquidator``, ``dmm replay``, ``dmm status``,
``dmm dashboard``, ``dmm devnet``.

Every bot command reads one YAML file (``offchain/bots/keeper.example.yaml`` documents each key;
it is validated strictly, see ``offchain/bots/bot_config.py``); command-line options override
it. Keys never come from a file in the repository: an ape account alias or an encrypted key file
(``--account``, passphrase from ``DMM_PASSPHRASE`` or a prompt) or an environment variable
(``DMM_KEEPER_KEY``, ``DMM_LIQUIDATOR_KEY``, ``DMM_REPLAY_KEY``). Without a key a bot runs dry.

Before a bot starts, pre-flight checks (``offchain/bots/preflight.py``) hold the config against
the chain. Exit codes: 0 done, 1 runtime failure (node unreachable, a bot that kept failing),
2 configuration or usage mistake; each error is one line.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from offchain import WAD
from offchain.bots.bot_config import BotConfig
from offchain.bots.builders import (
    build_keeper,
    build_liquidator,
    config_histories,
    load_config,
    load_key,
    read_history,
)
from offchain.bots.loop import TooManyFailures, run_loop
from offchain.bots.metrics import BotMetrics, serve
from offchain.bots.preflight import (
    check_engine,
    check_histories,
    check_keeper_contracts,
    check_keeper_key,
    check_liquidator_funds,
    check_markets,
    check_profile_classes,
    check_registry,
)
from offchain.cli import (
    ConfigProblem,
    FiniteFloat,
    describe_rpc_error,
    error_exit_code,
    verbosity_options,
    write_json,
)
from offchain.protocol.chain import (
    EngineClient,
    FeedClient,
    RegistryClient,
    RpcUnavailable,
    connect,
    latest_block,
    rpc,
)

log = logging.getLogger("dmm")


# ---------------------------------------------------------------------------------------------
# Shared pieces


def operator_errors(f: Callable[..., Any]) -> Callable[..., Any]:
    """Errors as one line with the project's exit code, also when a command is invoked on its
    own (not through ``dmm``): a config mistake 2, anything at run time 1."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            code, message = error_exit_code(exc)
            log.debug("traceback of the error below", exc_info=True)
            raise (ConfigProblem(message) if code == 2 else click.ClickException(message)) from None

    return wrapper


config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config."
)
rpc_option = click.option("--rpc", help="JSON-RPC URL (overrides the config's 'rpc').")
account_option = click.option(
    "--account", help="ape account alias, or a path to an encrypted key file (*.json)."
)
json_option = click.option(
    "--json",
    "json_out",
    is_flag=False,
    flag_value="-",
    default=None,
    help="Also write JSON to a file ('--json' alone or '--json -': stdout instead of the table).",
)


def connect_node(cfg: BotConfig, url: str | None) -> Any:
    """A ``Web3`` on the node, which must answer now (exit code 1 if it does not)."""
    url = url or cfg.file.rpc
    if not url:
        raise ConfigProblem("no RPC URL: pass --rpc or set 'rpc' in the config")
    w3 = connect(str(url), timeout=cfg.file.rpc_timeout)
    try:
        rpc(lambda: w3.eth.chain_id)
    except RpcUnavailable as exc:
        raise click.ClickException(
            f"cannot reach the node at {url} ({describe_rpc_error(exc)})"
        ) from None
    return w3


def need(value: str | None, option: str, key: str) -> str:
    if not value:
        raise ConfigProblem(f"no {key}: pass {option} or set '{key}' in the config")
    return value


def run_bot(name: str, w3: Any, tick: Any, cfg: BotConfig, metrics: BotMetrics) -> None:
    port = cfg.metrics_port(name)
    if port:
        try:
            serve(metrics, int(port))
        except OSError as exc:
            raise ConfigProblem(
                f"{name}.metrics_port: cannot listen on {port} ({exc.strerror or exc})"
            ) from None
        log.info("%s: metrics and health on http://127.0.0.1:%s/metrics, /healthz", name, port)
    try:
        run_loop(name, w3, tick, cfg.loop_config(), metrics)
    except TooManyFailures as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        log.info("%s: interrupted, exiting", name)


def parse_histories(
    items: tuple[str, ...], market_ids: set[int]
) -> dict[int, tuple[list[int], list[float]]]:
    out = {}
    for item in items:
        market, sep, path = item.partition("=")
        if not sep or not market.strip().isdigit() or not path:
            raise click.BadParameter(f"{item!r}: expected MARKET_ID=CSV", param_hint="--history")
        if int(market) not in market_ids:
            raise click.BadParameter(
                f"{item!r}: market {int(market)} is not in the config's markets",
                param_hint="--history",
            )
        out[int(market)] = read_history(Path(path), "--history")
    return out


# ---------------------------------------------------------------------------------------------
# Bots


@click.command("keeper")
@config_option
@rpc_option
@account_option
@click.option("--registry", help="Registry address (overrides the config).")
@click.option("--dry-run", is_flag=True, help="Sign and print batches; send nothing.")
@click.option("--history", "histories", multiple=True, help="MARKET_ID=CSV warm-up history.")
@verbosity_options
@operator_errors
def keeper_command(
    config_path: str | None,
    rpc: str | None,
    account: str | None,
    registry: str | None,
    dry_run: bool,
    histories: tuple[str, ...],
) -> None:
    """Run the risk keeper: one signed batch per block for every market that changed."""
    cfg = load_config(config_path)
    markets = cfg.markets()
    cfg.keeper_config()  # the section's own checks, before anything else is asked
    ids = {m.market_id for m in markets}
    warm = {**config_histories(cfg), **parse_histories(histories, ids)}
    registry_address = need(registry or cfg.file.registry, "--registry", "registry")
    key = load_key(account, "DMM_KEEPER_KEY")
    w3 = connect_node(cfg, rpc)
    reg = RegistryClient(w3, registry_address)
    check_registry(w3, reg)
    readings = check_markets(w3, reg, FeedClient(w3), markets)
    check_keeper_key(reg, key.address if key else None, dry_run or key is None)
    check_histories(cfg, warm, readings)
    for note in check_keeper_contracts(w3, cfg, reg.address):
        log.info("pre-flight: %s", note)
    keeper = build_keeper(cfg, w3, registry_address, key, dry_run, echo=click.echo, histories=warm)
    if keeper.profiles is not None and cfg.file.profiles is not None:
        check_profile_classes(keeper.profiles, cfg.file.profiles.scale)
    log.info(
        "keeper: %d market(s), registry %s, %s",
        len(markets),
        reg.address,
        "DRY RUN (nothing is sent)" if keeper.sender is None else f"relaying from {key.address}",  # type: ignore[union-attr]
    )
    if keeper.cosigner is not None:
        log.info("keeper: co-signing through %s", keeper.cosigner.where)
    run_bot("keeper", w3, keeper.tick, cfg, keeper.metrics)


@click.command("liquidator")
@config_option
@rpc_option
@account_option
@click.option("--engine", help="Engine address (overrides the config).")
@click.option("--dry-run", is_flag=True, help="Scan and log the plan; send nothing.")
@verbosity_options
@operator_errors
def liquidator_command(
    config_path: str | None,
    rpc: str | None,
    account: str | None,
    engine: str | None,
    dry_run: bool,
) -> None:
    """Run the liquidation bot: scan every block, liquidate the unhealthy worst first."""
    cfg = load_config(config_path)
    settings = cfg.liquidator_config()
    cfg.loop_config()
    engine_address = need(engine or cfg.file.engine, "--engine", "engine")
    key = load_key(account, "DMM_LIQUIDATOR_KEY")
    w3 = connect_node(cfg, rpc)
    client = EngineClient(w3, engine_address)
    check_engine(w3, client, cfg.file.registry)
    collateral = check_liquidator_funds(
        client, key.address if key else None, settings.liquidator_subaccount, dry_run or key is None
    )
    bot = build_liquidator(cfg, w3, engine_address, key, dry_run)
    log.info(
        "liquidator: engine %s, %s",
        client.address,
        "DRY RUN (nothing is sent)"
        if bot.sender is None
        else f"acting from {key.address}/{settings.liquidator_subaccount}"  # type: ignore[union-attr]
        f" with {collateral / WAD:,.2f} USD of collateral",
    )
    run_bot("liquidator", w3, bot.tick, cfg, bot.metrics)


# ---------------------------------------------------------------------------------------------
# Replay and status


@click.command("replay")
@config_option
@rpc_option
@account_option
@click.option(
    "--feed", "feeds", multiple=True, help="Mock feed address (repeat; default: the config's)."
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False),
    help="Price CSV to replay (default: a seeded crash).",
)
@click.option(
    "--last", type=click.IntRange(min=1), default=48, show_default=True, help="The CSV's last N."
)
@click.option("--absolute", is_flag=True, help="Push the CSV's prices as they are.")
@click.option("--seed", type=int, default=7, show_default=True, help="Crash scenario seed.")
@click.option(
    "--crash-pct",
    type=FiniteFloat(0.0, low_open=True, high=1.0, high_open=True),
    default=0.3,
    show_default=True,
    help="Total fall of the seeded crash, in (0, 1).",
)
@click.option(
    "--start-price",
    type=FiniteFloat(0.0, low_open=True),
    help="Start the crash at this price (default: each feed's current price).",
)
@click.option(
    "--interval",
    type=FiniteFloat(0.0),
    default=1.0,
    show_default=True,
    help="Wall-clock seconds between steps.",
)
@click.option(
    "--step-seconds",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Devnet only: move the chain clock this far before each step (3600: one step an hour).",
)
@verbosity_options
@operator_errors
def replay_command(
    config_path: str | None,
    rpc: str | None,
    account: str | None,
    feeds: tuple[str, ...],
    csv_path: str | None,
    last: int,
    absolute: bool,
    seed: int,
    crash_pct: float,
    start_price: float | None,
    interval: float,
    step_seconds: int,
) -> None:
    """Push a price CSV or a seeded crash into devnet mock feeds, each as relative moves from
    the feed's current price (``--absolute``: the CSV's own prices)."""
    from offchain.devnet.replay import CrashScenario, crash_scenario, replay, scaled_paths
    from offchain.protocol.tx_sender import TxSender

    cfg = load_config(config_path)
    key = load_key(account, "DMM_REPLAY_KEY")
    if key is None:
        raise ConfigProblem("replay sends transactions: set DMM_REPLAY_KEY or pass --account")
    targets = list(feeds) or [m.feed for m in cfg.file.markets]
    if not targets:
        raise ConfigProblem("no feed: pass --feed or list markets with feeds in the config")
    if csv_path:
        _, prices = read_history(Path(csv_path), "--csv")
        prices = prices[-last:]
    else:
        prices = crash_scenario(
            CrashScenario(start_price=start_price or 1.0, crash_pct=crash_pct, seed=seed)
        )
    w3 = connect_node(cfg, rpc)
    client = FeedClient(w3)
    # None: the prices as they are; otherwise moves relative to each feed's current price.
    as_is = absolute or (start_price is not None and not csv_path)
    base = None if as_is else (prices[0] if csv_path else 1.0)
    paths = scaled_paths(client, targets, prices, base)
    sender = TxSender(w3, key, cfg.sender_config())

    def advance(_: int) -> None:
        if step_seconds:
            w3.provider.make_request("evm_increaseTime", [step_seconds])

    done = replay(sender, client, paths, interval=interval, before_step=advance)
    if not done:
        raise click.ClickException("nothing replayed: no prices to push")
    click.echo(f"replayed {len(done)} price(s) into {len(targets)} feed(s)")


@click.command("status")
@config_option
@rpc_option
@click.option("--registry", help="Registry address (overrides the config).")
@click.option("--engine", help="Engine address (overrides the config).")
@json_option
@verbosity_options
@operator_errors
def status_command(
    config_path: str | None,
    rpc: str | None,
    registry: str | None,
    engine: str | None,
    json_out: str | None,
) -> None:
    """Each market's multiplier, staleness and funding rate; liquidatable subaccounts."""
    from offchain.bots.liquidator import scan

    cfg = load_config(config_path)
    registry_address = need(registry or cfg.file.registry, "--registry", "registry")
    markets = cfg.markets()
    w3 = connect_node(cfg, rpc)
    reg = RegistryClient(w3, registry_address)
    check_registry(w3, reg)
    feeds = FeedClient(w3)
    block = latest_block(w3)
    now = block.timestamp
    rows: list[dict[str, Any]] = []
    for m in markets:
        row: dict[str, Any] = {"id": m.market_id, "name": m.name, "configured": True}
        if not reg.is_configured(m.market_id):
            rows.append({**row, "configured": False})
            continue
        state = reg.market_state(m.market_id)
        reading = feeds.latest(m.feed)
        rows.append(
            {
                **row,
                "multiplier": reg.multiplier(m.market_id) / WAD,
                "target": state.target / WAD,
                "stale": reg.is_stale(m.market_id),
                "age_seconds": now - state.updated_at if state.updated_at else None,
                "funding_rate_per_second": reg.funding_rate(m.market_id) / WAD,
                "price": reading.price,
                "feed_age_seconds": now - reading.updated_at,
            }
        )
    doc: dict[str, Any] = {"block": block.number, "time": now, "markets": rows}
    engine_address = engine or cfg.file.engine
    if engine_address:
        client = EngineClient(w3, engine_address)
        check_engine(w3, client, reg.address)
        result = scan(client)
        doc["engine"] = {
            "subaccounts_with_positions": result.scanned,
            "liquidatable": len(result.liquidatable),
            "scan_seconds": result.seconds,
            "insurance_fund_usd": client.insurance_fund() / WAD,
            "bad_debt_usd": client.bad_debt() / WAD,
        }
    if json_out is not None:
        write_json(doc, json_out)
        if json_out == "-":
            return
    click.echo(
        f"{'market':<12} {'multiplier':>10} {'target':>8} {'stale':>5} {'age s':>7}"
        f" {'funding/s':>12} {'price':>12} {'feed age s':>10}"
    )
    for m, row in zip(markets, rows, strict=True):
        if not row["configured"]:
            click.echo(f"{m.label:<12} not configured in the registry")
            continue
        age = row["age_seconds"] if row["age_seconds"] is not None else -1
        click.echo(
            f"{m.label:<12} {row['multiplier']:>10.4f} {row['target']:>8.4f}"
            f" {'yes' if row['stale'] else 'no':>5} {age:>7}"
            f" {row['funding_rate_per_second']:>12.3e} {row['price']:>12.2f}"
            f" {row['feed_age_seconds']:>10}"
        )
    if "engine" in doc:
        e = doc["engine"]
        click.echo(
            f"subaccounts with positions: {e['subaccounts_with_positions']};"
            f" liquidatable: {e['liquidatable']} (scan {e['scan_seconds']:.3f} s);"
            f" insurance fund {e['insurance_fund_usd']:,.2f} USD;"
            f" bad debt {e['bad_debt_usd']:,.2f} USD"
        )


# ---------------------------------------------------------------------------------------------
# Dashboard


@click.command("dashboard")
@config_option
@rpc_option
@click.option("--registry", help="Registry address (overrides the config).")
@click.option("--engine", help="Engine address (overrides the config).")
@click.option("--host", help="Listen address (overrides dashboard.host).")
@click.option(
    "--port", type=click.IntRange(1, 65535), help="Listen port (overrides dashboard.port)."
)
@verbosity_options
@operator_errors
def dashboard_command(
    config_path: str | None,
    rpc: str | None,
    registry: str | None,
    engine: str | None,
    host: str | None,
    port: int | None,
) -> None:
    """Serve the live risk page (read-only): markets, account health, funds, recent events and
    each market's margin over time; /api/snapshot has the same numbers as JSON."""
    from dataclasses import replace

    from offchain.bots.dashboard import RiskReader, SnapshotCache
    from offchain.bots.dashboard_app import bind, create_app, serve

    cfg = load_config(config_path)
    markets = cfg.markets()
    settings = cfg.dashboard_config()
    settings = replace(settings, host=host or settings.host, port=port or settings.port)
    registry_address = need(registry or cfg.file.registry, "--registry", "registry")
    engine_address = need(engine or cfg.file.engine, "--engine", "engine")
    url = str(need(rpc or cfg.file.rpc, "--rpc", "rpc"))
    w3 = connect(url, timeout=cfg.file.rpc_timeout)
    reader = RiskReader(
        RegistryClient(w3, registry_address),
        EngineClient(w3, engine_address),
        FeedClient(w3),
        markets,
        settings,
    )
    cache = SnapshotCache(reader.snapshot, url, min_interval=settings.refresh_seconds / 2)
    try:
        sock = bind(settings.host, settings.port)
    except OSError as exc:
        raise ConfigProblem(
            f"dashboard.port: cannot listen on {settings.host}:{settings.port}"
            f" ({exc.strerror or exc})"
        ) from None
    first = cache.get()
    if first["ok"]:
        log.info("dashboard: read block %d from %s", first["snapshot"]["block"], url)
    else:
        log.warning("dashboard: %s; the page shows it until the chain answers", first["error"])
    log.info(
        "dashboard on http://%s:%d/ (JSON: /api/snapshot, health: /healthz)",
        settings.host,
        settings.port,
    )
    serve(create_app(cache, settings), sock)


# ---------------------------------------------------------------------------------------------
# Devnet


@click.command("devnet")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Devnet file: node, system (mocks, markets), accounts, positions, bots"
    " [default: the repository's deploy/devnet.yaml].",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="out/devnet",
    show_default=True,
    help="Where the bot config, keys, histories, record and logs go.",
)
@click.option("--port", type=click.IntRange(1, 65535), help="Node port (overrides the file).")
@click.option(
    "--block-time", type=click.IntRange(min=1), help="Seconds per block (overrides the file)."
)
@click.option("--detach", is_flag=True, help="Leave the node running in the background.")
@click.option("--stop", is_flag=True, help="Stop a detached devnet (its pid file) and exit.")
@click.option("--bots", is_flag=True, help="Also run the keeper and the liquidator.")
@click.option(
    "--crash",
    is_flag=True,
    help="Also run both bots, replay a crash, and report when both have acted.",
)
@click.option("--once", is_flag=True, help="With --crash: stop everything once both acted.")
@click.option(
    "--timeout",
    type=FiniteFloat(1.0),
    default=180.0,
    show_default=True,
    help="Seconds to wait for the bots to start and to act.",
)
@verbosity_options
@operator_errors
def devnet_command(
    config_path: str | None,
    out_dir: str,
    port: int | None,
    block_time: int | None,
    detach: bool,
    stop: bool,
    bots: bool,
    crash: bool,
    once: bool,
    timeout: float,
) -> None:
    """A local devnet: anvil with a block time, the system deployed from a YAML, demo accounts
    funded and a ready bot config written; stays up until Ctrl-C."""
    from offchain.devnet.launch import DEFAULT_FILE, LaunchOptions, launch, stop_detached

    started = time.monotonic()
    if stop:
        click.echo(stop_detached(Path(out_dir)))
        return
    if once and not crash:
        raise click.UsageError("--once needs --crash")
    if detach and (bots or crash):
        raise click.UsageError("--detach starts the node only; run the bots on their own")
    options = LaunchOptions(
        config=Path(config_path) if config_path else DEFAULT_FILE,
        out=Path(out_dir),
        port=port,
        block_time=block_time,
        detach=detach,
        bots=bots or crash,
        crash=crash,
        once=once,
        timeout=timeout,
        started=started,
    )
    launch(options, echo=click.echo)


COMMANDS = [
    dashboard_command,
    devnet_command,
    keeper_command,
    liquidator_command,
    replay_command,
    status_command,
]

__all__ = [
    "COMMANDS",
    "dashboard_command",
    "devnet_command",
    "keeper_command",
    "liquidator_command",
    "replay_command",
    "status_command",
]
