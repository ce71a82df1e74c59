"""From a YAML config to a running bot: the builders that ``dmm keeper``/``dmm liquidator``
(``offchain/cli_ops.py``) and the Silverback modules (``keeper_bot``, ``liquidator_bot``) share,
so that no bot module imports the command line.

A mistake in the config raises :class:`ConfigError` (a ``ValueError``) naming the key; the command
line turns it into a one-line usage error.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml
from eth_account import Account
from eth_account.signers.local import LocalAccount

from offchain.bots.keeper import Keeper, KeeperConfig, KeeperMarket, read_history_csv
from offchain.bots.keeper_models import CalibratedRiskModel, EwmaRiskModel, LiveRiskModel
from offchain.bots.liquidator import Liquidator, LiquidatorConfig
from offchain.bots.loop import LoopConfig
from offchain.bots.metrics import BotMetrics
from offchain.protocol.chain import EngineClient, FeedClient, RegistryClient
from offchain.protocol.tx_sender import GWEI, SenderConfig, TxSender


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
        raise ConfigError(f"unknown model kind {kind!r}: use 'calibrated' or 'ewma'")
    allowed = {"bar_seconds", "horizon"}
    unknown = set(settings) - allowed
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)} for the calibrated model")
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
