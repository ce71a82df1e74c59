"""From a YAML config to a running bot: the builders that ``dmm keeper``/``dmm liquidator``
(``offchain/cli_ops.py``) and the Silverback modules (``keeper_bot``, ``liquidator_bot``) share,
so that no bot module imports the command line.

A mistake in the config raises :class:`ConfigError` (a ``ValueError``) naming the key; the command
line turns it into a one-line usage error.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml
from eth_account import Account
from eth_account.signers.local import LocalAccount

from offchain.bots.bar_store import BarStore
from offchain.bots.keeper import Keeper, KeeperConfig, KeeperMarket, read_history_csv
from offchain.bots.keeper_models import CalibratedRiskModel, EwmaRiskModel, LiveRiskModel
from offchain.bots.liquidator import Liquidator, LiquidatorConfig
from offchain.bots.loop import LoopConfig
from offchain.bots.metrics import BotMetrics
from offchain.protocol.chain import EngineClient, FeedClient, RegistryClient
from offchain.protocol.tx_sender import GWEI, SenderConfig, TxSender
from offchain.risk.prices import load_candles
from offchain.risk.risk_config import RiskConfigError, load_risk_config

log = logging.getLogger("dmm.builders")


class ConfigError(ValueError):
    """A bot configuration that cannot be used; the message names the key."""


def load_config(path: str | None) -> dict[str, Any]:
    """The YAML file as a dict (empty without a file)."""
    if path is None:
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _pick(section: dict[str, Any], cls: type, renames: dict[str, str] | None = None) -> dict:
    """The keys of ``section`` that are fields of dataclass ``cls`` (after ``renames``)."""
    names = {f.name for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in (section or {}).items():
        key = (renames or {}).get(key, key)
        if key not in names:
            raise ConfigError(f"unknown setting {key!r} for {cls.__name__}")
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
        raise ConfigError("the config needs a 'markets' list")
    return tuple(
        KeeperMarket(int(m["id"]), str(m["feed"]), str(m.get("name", ""))) for m in markets
    )


def load_key(alias: str | None, env_var: str) -> LocalAccount | None:
    """A signing key from an ape account alias or an environment variable; ``None`` if neither."""
    if alias:
        base = Path(os.environ.get("APE_DATA_FOLDER", Path.home() / ".ape"))
        keyfile = base / "accounts" / f"{alias}.json"
        if not keyfile.exists():
            raise ConfigError(f"no ape account {alias!r} ({keyfile})")
        passphrase = os.environ.get("DMM_PASSPHRASE") or getpass.getpass(f"passphrase of {alias}: ")
        return Account.from_key(Account.decrypt(json.loads(keyfile.read_text()), passphrase))
    raw = os.environ.get(env_var)
    if raw:
        return Account.from_key(raw.strip())
    return None


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
    section: dict[str, Any], registry: RegistryClient, markets: Sequence[KeeperMarket]
) -> LiveRiskModel:
    """The keeper's model: ``kind: calibrated`` (default: the shipped margin model of
    ``deploy/risk.yaml``; first-tier rates read from the registry) or ``kind: ewma``.

    Keys of the calibrated model: ``config`` (risk configuration file, default the shipped
    one), ``store`` (SQLite file of finished bars, kept across restarts; default in memory),
    ``bar_seconds`` (3,600), ``vol_index_feeds`` (``{market_id: aggregator address}``)."""
    settings = dict(section)
    kind = settings.pop("kind", "calibrated")
    if kind == "ewma":
        return EwmaRiskModel(**_pick(settings, EwmaRiskModel))
    if kind != "calibrated":
        raise ConfigError(f"unknown model kind {kind!r}: use 'calibrated' or 'ewma'")
    allowed = {"bar_seconds", "config", "store", "vol_index_feeds"}
    unknown = set(settings) - allowed
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)} for the calibrated model")
    try:
        config = load_risk_config(settings.get("config"))
        for m in markets:
            config.by_id(m.market_id)
    except RiskConfigError as exc:
        raise ConfigError(str(exc)) from exc
    store_path = settings.get("store")
    if store_path is None:
        log.warning("model.store not set: finished bars are kept in memory, not across restarts")
    readers = {}
    if settings.get("vol_index_feeds"):
        readers = vol_index_readers(FeedClient(registry.w3), settings["vol_index_feeds"])
    return CalibratedRiskModel(
        Tier0Rates(registry, [m.market_id for m in markets]),
        config=config,
        store=BarStore(store_path or ":memory:"),
        bar_seconds=int(settings.get("bar_seconds", 3600)),
        vol_index=readers,
    )


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
            if isinstance(model, CalibratedRiskModel):  # the backtest's loader, the same bars
                model.seed(int(m["id"]), load_candles(m["history"])[0])
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
