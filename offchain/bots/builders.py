"""From a YAML config to a running bot: the builders that ``dmm keeper``/``dmm liquidator``
(``offchain/cli_ops.py``) and the Silverback modules (``keeper_bot``, ``liquidator_bot``) share,
so that no bot module imports the command line.

The file is validated by ``bot_config`` (strict schema). A mistake in it, in a key file or in a
history file raises :class:`ConfigError` (one line naming the file and the key); the command line
turns it into exit code 2. A key is never echoed, whatever is wrong with it.
"""

from __future__ import annotations

import csv
import getpass
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from offchain.bots.bar_store import BarStore
from offchain.bots.bot_config import BotConfig, ConfigError, load_config, parse_config
from offchain.bots.keeper import Keeper, KeeperMarket, read_history_csv
from offchain.bots.keeper_models import CalibratedRiskModel, EwmaRiskModel, LiveRiskModel
from offchain.bots.liquidator import Liquidator
from offchain.bots.metrics import BotMetrics
from offchain.protocol.chain import EngineClient, FeedClient, RegistryClient
from offchain.protocol.config_files import ConfigFileError, one_line, read_text
from offchain.protocol.tx_sender import TxSender
from offchain.risk.prices import load_candles
from offchain.risk.risk_config import RiskConfigError, load_risk_config

if TYPE_CHECKING:
    from offchain.bots.keeper_funding import FundingPlanner
    from offchain.bots.keeper_profiles import ProfilePlanner
    from offchain.bots.keeper_scenarios import ScenarioPlanner

log = logging.getLogger("dmm.builders")

MAX_HISTORY_BYTES = 256 * 2**20  # a warm-up file larger than this is a mistake, not a history


# ---------------------------------------------------------------------------------------------
# Keys


def keyfile_path(account: str) -> Path:
    """``--account``: a path to an encrypted key file, or an ape alias (its file in ape's
    ``accounts`` folder)."""
    if account.endswith(".json") or os.sep in account:
        return Path(account).expanduser()
    base = Path(os.environ.get("APE_DATA_FOLDER", Path.home() / ".ape"))
    return base / "accounts" / f"{account}.json"


def decrypt_keyfile(path: Path, passphrase: str) -> LocalAccount:
    """The key of an encrypted JSON key file (ape's and geth's format)."""
    try:
        text = read_text(path, "key file")
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not a key file (invalid JSON: {exc.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("crypto") or doc.get("Crypto"), dict):
        raise ConfigError(f"{path}: not an encrypted key file (no 'crypto' section)")
    try:
        secret = Account.decrypt(doc, passphrase)
    except ValueError as exc:
        if "MAC" in str(exc):
            raise ConfigError(
                f"{path}: wrong passphrase (the key file's MAC does not match)"
            ) from None
        raise ConfigError(f"{path}: cannot decrypt ({one_line(exc)})") from None
    except Exception as exc:
        raise ConfigError(f"{path}: not a usable key file ({type(exc).__name__})") from None
    return Account.from_key(secret)


def load_key(account: str | None, env_var: str) -> LocalAccount | None:
    """A signing key from ``--account`` (alias or key file; passphrase from ``DMM_PASSPHRASE``
    or a prompt) or from the environment variable ``env_var``; ``None`` if neither is set."""
    if account:
        path = keyfile_path(account)
        if not path.exists():
            raise ConfigError(f"--account {account}: no key file at {path}")
        passphrase = os.environ.get("DMM_PASSPHRASE")
        if passphrase is None:
            try:
                passphrase = getpass.getpass(f"passphrase of {account}: ")
            except (EOFError, KeyboardInterrupt):
                raise ConfigError(
                    f"--account {account}: no passphrase (set DMM_PASSPHRASE)"
                ) from None
        return decrypt_keyfile(path, passphrase)
    raw = os.environ.get(env_var)
    if raw is None or not raw.strip():
        return None
    try:
        return Account.from_key(raw.strip())
    except Exception:
        raise ConfigError(
            f"{env_var}: not a private key (expected 32 bytes as 64 hex digits)"
        ) from None


# ---------------------------------------------------------------------------------------------
# Histories


def read_history(path: Path, where: str) -> tuple[list[int], list[float]]:
    """A warm-up history CSV; every problem with the file is one line naming ``where``."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    if size > MAX_HISTORY_BYTES:
        raise ConfigError(
            f"{where}: {path} is {size / 2**20:,.0f} MB; a warm-up history needs the last few"
            f" thousand prices (limit {MAX_HISTORY_BYTES // 2**20} MB)"
        )
    try:
        read_text(path, "history file")
        times, prices = read_history_csv(path)
    except ConfigFileError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (ValueError, csv.Error, OSError) as exc:
        raise ConfigError(f"{where}: {path}: {one_line(exc)}") from None
    if not prices:
        raise ConfigError(f"{where}: {path}: no usable price rows")
    return times, prices


def config_histories(cfg: BotConfig) -> dict[int, tuple[list[int], list[float]]]:
    """The ``history:`` files of the config's markets, read and checked."""
    out: dict[int, tuple[list[int], list[float]]] = {}
    for i, m in enumerate(cfg.file.markets):
        if m.history:
            out[m.id] = read_history(cfg.path(m.history), f"{cfg.source}: markets[{i}].history")
    return out


# ---------------------------------------------------------------------------------------------
# Components


class Tier0Rates(Mapping[int, int]):
    """First-tier rates read from the registry on first use, so that a node that goes away
    later fails a tick (retried by the loop) rather than the start."""

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


def vol_index_readers(
    feeds: FeedClient, section: Mapping[Any, Any], max_age: int = 2 * 3600
) -> dict[int, Callable[[int], float | None]]:
    """``{market_id: feed address}`` of volatility-index aggregators (a Chainlink-style feed
    answering the annualised index in percent, e.g. DVOL) as readers for the model; a reading
    older than ``max_age`` seconds, or that cannot be read, is no reading."""

    def reader(address: str) -> Callable[[int], float | None]:
        def read(now: int) -> float | None:
            try:
                r = feeds.latest(address)
                if r.answer <= 0 or now - r.updated_at > max_age:
                    return None
                return r.answer / 10**r.decimals
            except Exception as exc:  # an index is optional: never fail the tick for it
                log.warning("volatility index %s unreadable: %s", address, exc)
                return None

        return read

    return {int(k): reader(str(v)) for k, v in (section or {}).items()}


def risk_model(
    cfg: BotConfig, registry: RegistryClient, markets: Sequence[KeeperMarket]
) -> LiveRiskModel:
    """The keeper's model: ``kind: calibrated`` (default: the shipped margin model of
    ``deploy/risk.yaml``; first-tier rates read from the registry) or ``kind: ewma``.

    Keys of the calibrated model: ``config`` (risk configuration file, default the shipped
    one), ``store`` (SQLite file of finished bars, kept across restarts; default in memory),
    ``bar_seconds`` (3,600), ``vol_index_feeds`` (``{market_id: aggregator address}``)."""
    section = cfg.file.model.model_dump()
    kind = section.pop("kind")
    if kind == "ewma":
        from offchain.bots.bot_config import build

        return build(EwmaRiskModel, section, f"{cfg.source}: model")
    where = f"{cfg.source}: model"
    try:
        config = load_risk_config(cfg.path(section["config"]) if section["config"] else None)
        for m in markets:
            config.by_id(m.market_id)
    except RiskConfigError as exc:
        raise ConfigError(f"{where}.config: {exc}") from exc
    store_path = section["store"]
    if store_path is None:
        log.warning("model.store not set: finished bars are kept in memory, not across restarts")
    readers = {}
    if section["vol_index_feeds"]:
        readers = vol_index_readers(FeedClient(registry.w3), section["vol_index_feeds"])
    return CalibratedRiskModel(
        Tier0Rates(registry, [m.market_id for m in markets]),
        config=config,
        store=BarStore(str(cfg.path(store_path)) if store_path else ":memory:"),
        bar_seconds=section["bar_seconds"],
        vol_index=readers,
    )


def funding_planner(cfg: BotConfig, w3: Any, feeds: FeedClient) -> FundingPlanner | None:
    """Each market's funding source (``markets[].funding``); ``None`` when no market has one."""
    from offchain.bots.engine_records import EngineRecords
    from offchain.bots.keeper_funding import FundingPlanner, MarketFunding
    from offchain.risk.funding import funding_model_from_config

    markets = {}
    for i, m in enumerate(cfg.file.markets):
        if m.funding is None:
            log.warning("market %d: no funding section: the keeper signs a funding rate of 0", m.id)
            continue
        where = f"{cfg.source}: markets[{i}].funding"
        try:
            model = funding_model_from_config(m.funding.section(), where)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        markets[m.id] = MarketFunding(m.id, model, m.funding.feed)
    if not markets:
        return None
    engine = cfg.file.engine
    records = EngineRecords(w3, str(engine)) if engine else None
    return FundingPlanner(markets, records, feeds)


def scenario_planner(cfg: BotConfig, w3: Any, keeper: Keeper) -> ScenarioPlanner | None:
    """The scenario planner of ``scenarios:`` on the keeper's bars (``None`` without it): ``K``,
    confidence and horizon from the shipped configuration's ``portfolio:`` section."""
    from offchain.bots.keeper_scenarios import ScenarioPlanner, history_bars
    from offchain.protocol.keeper_clients import ScenarioRegistryClient

    section = cfg.file.scenarios
    if section is None:
        return None
    config = _risk_config(cfg)
    if config.portfolio is None:
        raise ConfigError(f"{config.source}: no 'portfolio' section for the scenario keeper")
    model = keeper.model
    if isinstance(model, CalibratedRiskModel):
        bar_seconds = model.bar_seconds

        def bars(market_id: int, now: int) -> Any:
            return model.candles(market_id)[0]

    else:
        bar_seconds = 3600
        bars = history_bars(lambda m: (keeper.history[m].times, keeper.history[m].prices), 3600)
    granularity = keeper.config.cosign_granularity if keeper.config.cosign else 1
    return ScenarioPlanner(
        ScenarioRegistryClient(w3, section.registry),
        bars,
        keeper.market_names,
        config.portfolio.design(),
        bar_seconds=bar_seconds,
        refresh_fraction=section.refresh_fraction,
        groups=tuple(section.groups) if section.groups is not None else None,
        time_granularity=granularity,
    )


def profile_planner(cfg: BotConfig, w3: Any, keeper: Keeper) -> ProfilePlanner | None:
    """The profile planner of ``profiles:`` (``None`` without it), with the shipped class table
    at the section's scale."""
    from offchain.bots.engine_records import EngineRecords
    from offchain.bots.keeper_profiles import ProfilePlanner
    from offchain.protocol.keeper_clients import ProfileRegistryClient

    section = cfg.file.profiles
    if section is None:
        return None
    config = _risk_config(cfg)
    if config.profiles is None:
        raise ConfigError(f"{config.source}: no 'profiles' section for the profile keeper")
    try:
        table = config.profiles.table(section.scale)
    except KeyError as exc:
        raise ConfigError(f"{cfg.source}: profiles.scale: {exc.args[0]}") from None
    engine = str(cfg.file.engine)
    granularity = keeper.config.cosign_granularity if keeper.config.cosign else 1
    return ProfilePlanner(
        ProfileRegistryClient(w3, section.registry),
        EngineRecords(w3, engine, section.registry),
        table,
        interval_s=section.interval_seconds,
        refresh_s=section.refresh_seconds,
        start_block=section.start_block,
        time_granularity=granularity,
    )


def _risk_config(cfg: BotConfig) -> Any:
    model = cfg.file.model.model_dump()
    path = model.get("config")
    try:
        return load_risk_config(cfg.path(path) if path else None)
    except RiskConfigError as exc:
        raise ConfigError(f"{cfg.source}: model.config: {exc}") from exc


def build_keeper(
    cfg: BotConfig,
    w3: Any,
    registry_address: str,
    key: LocalAccount | None,
    dry_run: bool,
    echo: Any = print,
    histories: Mapping[int, tuple[list[int], list[float]]] | None = None,
) -> Keeper:
    """A keeper from the config, warmed up on ``histories`` (default: the config's ``history:``
    files), with the funding sources, scenario and profile planners and relay the config names.
    No key or ``dry_run``: no sender (dry run; scenarios are printed with the reference books'
    margins under them)."""
    from offchain.bots.keeper_reference import reference_report
    from offchain.protocol.keeper_clients import RelayClient

    config = cfg.keeper_config()
    registry = RegistryClient(w3, registry_address)
    model = risk_model(cfg, registry, config.markets)
    sender = None if dry_run or key is None else TxSender(w3, key, cfg.sender_config())
    feeds = FeedClient(w3)
    keeper = Keeper(
        config,
        registry,
        feeds,
        model,
        key,
        sender,
        None,
        BotMetrics("keeper"),
        echo=echo,
        funding=funding_planner(cfg, w3, feeds),
        relay=RelayClient(w3, cfg.file.relay) if cfg.file.relay else None,
    )
    keeper.scenarios = scenario_planner(cfg, w3, keeper)
    keeper.profiles = profile_planner(cfg, w3, keeper)
    if keeper.scenarios is not None and sender is None:
        feed_of = {m.market_id: m.feed for m in config.markets}
        keeper.reference = reference_report(registry, keeper.scenarios.client, feeds, feed_of)
    for market_id, (times, prices) in (
        config_histories(cfg) if histories is None else histories
    ).items():
        keeper.warm_up(market_id, times, prices)
    if isinstance(model, CalibratedRiskModel) and histories is None:
        # The backtest's loader on the same files: the model starts from the same bars.
        for i, m in enumerate(cfg.file.markets):
            if m.history:
                try:
                    model.seed(m.id, load_candles(cfg.path(m.history))[0])
                except ValueError as exc:
                    raise ConfigError(f"{cfg.source}: markets[{i}].history: {exc}") from None
    return keeper


def build_liquidator(
    cfg: BotConfig, w3: Any, engine_address: str, key: LocalAccount | None, dry_run: bool
) -> Liquidator:
    """A liquidation bot from the config (dry run without a key)."""
    sender = None if dry_run or key is None else TxSender(w3, key, cfg.sender_config())
    return Liquidator(
        EngineClient(w3, engine_address), sender, cfg.liquidator_config(), BotMetrics("liquidator")
    )


__all__ = [
    "BotConfig",
    "ConfigError",
    "Tier0Rates",
    "build_keeper",
    "build_liquidator",
    "config_histories",
    "decrypt_keyfile",
    "funding_planner",
    "keyfile_path",
    "load_config",
    "load_key",
    "parse_config",
    "profile_planner",
    "read_history",
    "risk_model",
    "scenario_planner",
    "vol_index_readers",
]
