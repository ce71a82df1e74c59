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
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from offchain.bots.bot_config import BotConfig, ConfigError, load_config, parse_config
from offchain.bots.keeper import Keeper, KeeperMarket, read_history_csv
from offchain.bots.keeper_models import CalibratedRiskModel, EwmaRiskModel, LiveRiskModel
from offchain.bots.liquidator import Liquidator
from offchain.bots.metrics import BotMetrics
from offchain.protocol.chain import EngineClient, FeedClient, RegistryClient
from offchain.protocol.config_files import ConfigFileError, one_line, read_text
from offchain.protocol.tx_sender import TxSender

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


def risk_model(
    cfg: BotConfig, registry: RegistryClient, markets: Sequence[KeeperMarket]
) -> LiveRiskModel:
    """The keeper's model: ``kind: calibrated`` (default, the backtested model; its first-tier
    rates are read from the registry) or ``kind: ewma``."""
    section = cfg.file.model.model_dump()
    kind = section.pop("kind")
    if kind == "ewma":
        from offchain.bots.bot_config import build

        return build(EwmaRiskModel, section, f"{cfg.source}: model")
    return CalibratedRiskModel(Tier0Rates(registry, [m.market_id for m in markets]), **section)


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
    files). No key or ``dry_run``: no sender (dry run)."""
    config = cfg.keeper_config()
    registry = RegistryClient(w3, registry_address)
    model = risk_model(cfg, registry, config.markets)
    sender = None if dry_run or key is None else TxSender(w3, key, cfg.sender_config())
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
    for market_id, (times, prices) in (
        config_histories(cfg) if histories is None else histories
    ).items():
        keeper.warm_up(market_id, times, prices)
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
    "keyfile_path",
    "load_config",
    "load_key",
    "parse_config",
    "read_history",
    "risk_model",
]
