"""The shipped risk configuration: one file (``deploy/risk.yaml``) for every consumer.

Per market it holds the registry side (tier schedule, initial ratio, guardrails with the funding
bound ``max_funding_rate``), the engine's funding reserve (seconds of the rate in force the paying
side carries in maintenance) and the model side (:class:`~offchain.risk.margin_model.MarginModel`
parameters and the keeper's hysteresis). Two more sections hold what the other margin inputs
need: ``portfolio:`` (the scenario groups' frozen parameters and the groups a deployment
configures, :func:`offchain.risk.portfolio_config.parse_portfolio`) and ``profiles:`` (the
account classes, their bounds, heartbeat and eligibility per deployment scale,
:func:`offchain.risk.profiles.parse_profiles`). ``dmm backtest`` replays it by default, the
keeper's model runs it, the devnet deploys it, and the deployment files must carry the same
values (``tests/risk/test_risk_config.py`` fails when any of them drift apart).

Numbers are written as in the deployment file: decimals as strings or numbers (``"0.005"`` is
0.5%), multipliers in units of the first tier's rate (``2`` is 2x), seconds as whole numbers.
A mistake raises :class:`RiskConfigError` naming the market and the key.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from offchain import WAD
from offchain.protocol.deploy_config import DeployConfigError, seconds, wad
from offchain.protocol.margin_math import Guardrails, Tier, validate_guardrails, validate_tiers
from offchain.risk.margin_model import MarginModel
from offchain.risk.portfolio_config import GroupEntry, PortfolioConfig, parse_portfolio
from offchain.risk.profiles import ProfileConfig, parse_profiles

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "deploy" / "risk.yaml"

GUARDRAIL_KEYS = {
    "min_multiplier": ("min_multiplier", "wad"),
    "max_multiplier": ("max_multiplier", "wad"),
    "max_increase": ("max_increase", "wad"),
    "max_decrease": ("max_decrease", "wad"),
    "min_decrease_interval": ("min_decrease_interval", "seconds"),
    "heartbeat": ("heartbeat", "seconds"),
    "stale_multiplier": ("stale_multiplier", "wad"),
    "increase_ramp": ("increase_ramp", "seconds"),
    "max_funding_rate_per_second": ("max_funding_rate", "wad"),
}
MODEL_FIELDS = {f.name: f for f in dataclasses.fields(MarginModel)}
MAX_FUNDING_RESERVE_S = 86_400  # the engine's bound (EngineGovernance.set_funding_reserve)


class RiskConfigError(ValueError):
    """The risk configuration is malformed; the message names the market and the key."""


@dataclass(frozen=True)
class MarketRisk:
    """One market's shipped risk configuration."""

    name: str
    market_id: int
    symbols: tuple[str, ...]
    tiers: tuple[Tier, ...]
    initial_ratio: int
    guardrails: Guardrails
    model: MarginModel
    hysteresis: float = 0.05
    funding_reserve_seconds: int = 0

    @property
    def tier0_rate(self) -> float:
        """The first tier's maintenance rate as a fraction of notional."""
        return self.tiers[0].maintenance_rate / WAD

    @property
    def floor_rate(self) -> float:
        """The lowest maintenance rate the registry allows (first tier at the minimum)."""
        return self.tiers[0].maintenance_rate * self.guardrails.min_multiplier / WAD / WAD

    @property
    def cap_rate(self) -> float:
        """The highest first-tier maintenance rate the registry allows."""
        return self.tiers[0].maintenance_rate * self.guardrails.max_multiplier / WAD / WAD

    def matches(self, asset: str) -> bool:
        """Whether a price file's asset name (``BTC/USDT``, ``binance_btcusdt_1h``) is this."""
        key = _norm(asset)
        return any(key == _norm(s) or key.startswith(_norm(s)) for s in self.symbols)


@dataclass(frozen=True)
class RiskConfig:
    """Every market of the file, the coverage it targets and where it was read from."""

    markets: tuple[MarketRisk, ...]
    confidence: float = 0.99
    source: str = ""
    dvol_weight: float = 0.5
    portfolio: PortfolioConfig | None = None
    groups: tuple[GroupEntry, ...] = ()
    profiles: ProfileConfig | None = None
    # The ``portfolio:`` and ``profiles:`` sections as read, for a writer that keeps them.
    sections: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def market(self, name: str) -> MarketRisk:
        """The market named ``name`` (case-insensitive), or the one whose symbols match."""
        for m in self.markets:
            if m.name.lower() == name.lower():
                return m
        for m in self.markets:
            if m.matches(name):
                return m
        names = ", ".join(m.name for m in self.markets)
        raise RiskConfigError(f"{self.source or 'risk config'}: no market for {name!r} ({names})")

    def by_id(self, market_id: int) -> MarketRisk:
        for m in self.markets:
            if m.market_id == market_id:
                return m
        raise RiskConfigError(f"{self.source or 'risk config'}: no market with id {market_id}")

    def group_market_ids(self, group: GroupEntry) -> tuple[int, ...]:
        """A group's market ids, in the group's order."""
        return tuple(self.market(name).market_id for name in group.markets)


def _norm(text: str) -> str:
    """``binance_btcusdt_1h_2018_2023`` -> ``btcusdt1h20182023``; ``BTC/USDT`` -> ``btcusdt``."""
    text = re.sub(r"^binance_", "", text.strip().lower())
    return re.sub(r"[^a-z0-9]", "", text)


def _model(raw: Any, where: str) -> MarginModel:
    if not isinstance(raw, dict):
        raise RiskConfigError(f"{where}: expected a mapping")
    unknown = sorted(set(raw) - set(MODEL_FIELDS))
    if unknown:
        raise RiskConfigError(f"{where}: unknown key(s) {unknown}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if value is not None and key not in ("name", "apc", "measure"):
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise RiskConfigError(f"{where}.{key}: {value!r} is not a number")
            try:
                number = float(value)
            except ValueError as exc:
                raise RiskConfigError(f"{where}.{key}: {value!r} is not a number") from exc
            is_int = MODEL_FIELDS[key].type in ("int", "int | None")
            value = int(number) if is_int and number == int(number) else number
        values[key] = value
    try:
        return MarginModel(**values)
    except (TypeError, ValueError) as exc:
        raise RiskConfigError(f"{where}: {exc}") from exc


def _guardrails(raw: Any, where: str) -> Guardrails:
    if not isinstance(raw, dict):
        raise RiskConfigError(f"{where}: expected a mapping")
    missing = sorted(set(GUARDRAIL_KEYS) - set(raw))
    unknown = sorted(set(raw) - set(GUARDRAIL_KEYS))
    if missing or unknown:
        raise RiskConfigError(f"{where}: missing {missing}, unknown {unknown}")
    values = {}
    for key, (name, kind) in GUARDRAIL_KEYS.items():
        parse = wad if kind == "wad" else seconds
        values[name] = parse(raw[key], f"{where}.{key}")
    g = Guardrails(**values)
    validate_guardrails(g)
    return g


def parse_market(raw: Any, index: int) -> MarketRisk:
    """One market entry, checked (the registry's own rules for tiers and guardrails)."""
    if not isinstance(raw, dict):
        raise RiskConfigError(f"markets[{index}]: expected a mapping")
    name = str(raw.get("name") or f"markets[{index}]")
    where = f"markets.{name}"
    try:
        market_id = raw["id"]
        if isinstance(market_id, bool) or not isinstance(market_id, int) or market_id <= 0:
            raise RiskConfigError(f"{where}.id: must be a positive integer")
        tiers = tuple(
            Tier(
                wad(t["notional_floor_usd"], f"{where}.tiers[{i}]"),
                wad(t["maintenance_rate"], f"{where}.tiers[{i}]"),
            )
            for i, t in enumerate(raw["tiers"])
        )
        validate_tiers(tiers)
        symbols = tuple(str(s) for s in raw.get("symbols", [name]))
        hysteresis = float(raw.get("hysteresis", 0.05))
        if not 0 <= hysteresis < 1:
            raise RiskConfigError(f"{where}.hysteresis: must lie in [0, 1), got {hysteresis}")
        reserve = seconds(raw.get("funding_reserve_seconds", 0), f"{where}.funding_reserve_seconds")
        if reserve > MAX_FUNDING_RESERVE_S:
            raise RiskConfigError(
                f"{where}.funding_reserve_seconds: {reserve} above the engine's one day"
            )
        market = MarketRisk(
            name=name,
            market_id=market_id,
            symbols=symbols,
            tiers=tiers,
            initial_ratio=wad(raw["initial_ratio"], f"{where}.initial_ratio"),
            guardrails=_guardrails(raw["guardrails"], f"{where}.guardrails"),
            model=_model(raw.get("model", {}), f"{where}.model"),
            hysteresis=hysteresis,
            funding_reserve_seconds=reserve,
        )
    except KeyError as exc:
        raise RiskConfigError(f"{where}: missing {exc.args[0]!r}") from exc
    except (TypeError, AttributeError) as exc:
        raise RiskConfigError(f"{where}: malformed ({exc})") from exc
    except DeployConfigError as exc:
        raise RiskConfigError(str(exc)) from exc
    except ValueError as exc:
        if isinstance(exc, RiskConfigError):
            raise
        raise RiskConfigError(f"{where}: {exc}") from exc
    if market.initial_ratio < WAD:
        raise RiskConfigError(f"{where}.initial_ratio: below 1")
    return market


def parse_risk_config(raw: Any, source: str = "") -> RiskConfig:
    """A whole configuration (already loaded from YAML)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("markets"), list):
        raise RiskConfigError(
            f"{source or 'risk config'}: expected a mapping with a 'markets' list"
        )
    markets = tuple(parse_market(m, i) for i, m in enumerate(raw["markets"]))
    if not markets:
        raise RiskConfigError(f"{source or 'risk config'}: no markets")
    ids = [m.market_id for m in markets]
    names = [m.name.lower() for m in markets]
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        raise RiskConfigError(f"{source or 'risk config'}: two markets share an id or a name")
    confidence = float(raw.get("confidence", 0.99))
    if not 0.5 < confidence < 1:
        raise RiskConfigError(f"confidence: must lie in (0.5, 1), got {confidence}")
    dvol = float(raw.get("dvol_candidate_weight", 0.5))
    if not 0 < dvol <= 1:
        raise RiskConfigError(f"dvol_candidate_weight: must lie in (0, 1], got {dvol}")
    unknown = sorted(set(raw) - TOP_LEVEL_KEYS)
    if unknown:
        raise RiskConfigError(f"{source or 'risk config'}: unknown key(s) {unknown}")
    portfolio, groups, profiles = None, (), None
    try:
        if raw.get("portfolio") is not None:
            portfolio, groups = parse_portfolio(raw["portfolio"])
        if raw.get("profiles") is not None:
            profiles = parse_profiles(raw["profiles"])
    except (ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) else str(exc)
        raise RiskConfigError(f"{source or 'risk config'}: {message}") from None
    by_name = {m.name.upper() for m in markets}
    for g in groups:
        missing = [name for name in g.markets if name not in by_name]
        if missing:
            raise RiskConfigError(
                f"portfolio.groups: group {g.group_id} names {missing}, not markets of the file"
            )
    sections = {k: raw[k] for k in ("portfolio", "profiles") if raw.get(k) is not None}
    return RiskConfig(markets, confidence, source, dvol, portfolio, groups, profiles, sections)


TOP_LEVEL_KEYS = {"confidence", "dvol_candidate_weight", "markets", "portfolio", "profiles"}


def load_risk_config(path: str | Path | None = None) -> RiskConfig:
    """Read and check a risk configuration (default: the shipped ``deploy/risk.yaml``)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        text = path.read_text()
    except OSError as exc:
        raise RiskConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "parse error"
        raise RiskConfigError(f"{path}: not valid YAML ({first})") from exc
    return parse_risk_config(raw, str(path))


__all__ = [
    "DEFAULT_CONFIG_PATH",
    "MarketRisk",
    "RiskConfig",
    "RiskConfigError",
    "load_risk_config",
    "parse_market",
    "parse_risk_config",
]
