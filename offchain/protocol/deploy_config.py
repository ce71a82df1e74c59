"""A reviewed deployment file, parsed and checked before anything is sent to a network.

``scripts/deploy.py`` deploys the registry and the engine from a YAML file such as
``deploy/testnet.example.yaml``. Every check here is a plain function of the parsed file, so the
same refusals are tested without a chain. A setting that is unsafe is refused with a message
naming the market and the field; nothing is deployed until the whole file passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from offchain import WAD
from offchain.protocol.margin_math import Guardrails, Tier, validate_guardrails, validate_tiers

# Limits beyond which a setting is refused as unsafe (not merely unusual).
MAX_PRICE_BAND = WAD // 10  # a trade more than 10% off the oracle is not a trade
MAX_PRICE_AGE = 24 * 3600
MIN_HEARTBEAT = 60


class DeployConfigError(ValueError):
    """The deployment file is malformed or asks for an unsafe setting."""


@dataclass(frozen=True)
class MarketSpec:
    """One market: registry schedule and guardrails plus the engine's market config."""

    market_id: int
    name: str
    tiers: list[Tier]
    initial_ratio: int
    guardrails: Guardrails
    feed: str
    max_price_age: int
    price_band: int
    liquidation_fee: int
    liquidator_share: int
    oi_cap: int
    # The feed aggregator's (minAnswer, maxAnswer), in the feed's decimals; None: not set.
    price_bounds: tuple[int, int] | None = None

    def engine_config(self) -> tuple[str, int, int, int, int, int]:
        """The engine's ``MarketConfig`` tuple, in field order."""
        return (
            self.feed,
            self.max_price_age,
            self.price_band,
            self.liquidation_fee,
            self.liquidator_share,
            self.oi_cap,
        )


@dataclass(frozen=True)
class DeploySpec:
    """The whole deployment: collateral, governance, keepers and markets."""

    collateral: str
    guardian: str
    keepers: list[str]
    signer_threshold: int
    exchanges: list[str] = field(default_factory=list)
    markets: list[MarketSpec] = field(default_factory=list)
    allow_single_signer: bool = False


def wad(value: Any, where: str) -> int:
    """A decimal written in the file (``"0.005"``, ``2``, ``"1e6"``) as an exact WAD integer."""
    try:
        scaled = Decimal(str(value)) * WAD
    except (InvalidOperation, ValueError) as exc:
        raise DeployConfigError(f"{where}: {value!r} is not a number") from exc
    if scaled != scaled.to_integral_value():
        raise DeployConfigError(f"{where}: {value!r} has more than 18 decimals")
    if scaled < 0:
        raise DeployConfigError(f"{where}: {value!r} is negative")
    return int(scaled)


def seconds(value: Any, where: str) -> int:
    """A whole number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DeployConfigError(f"{where}: {value!r} is not a whole number of seconds")
    return value


def address(value: Any, where: str) -> str:
    """A 0x-prefixed 20-byte address."""
    text = str(value)
    if not (text.startswith("0x") and len(text) == 42):
        raise DeployConfigError(f"{where}: {value!r} is not an address")
    try:
        int(text, 16)
    except ValueError as exc:
        raise DeployConfigError(f"{where}: {value!r} is not an address") from exc
    return text


def _require(mapping: dict, key: str, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise DeployConfigError(f"{where}: missing '{key}'")
    return mapping[key]


def price_bounds(e_raw: dict, where: str) -> tuple[int, int] | None:
    """The optional ``min_answer`` / ``max_answer`` pair (whole numbers in the feed's decimals)."""
    low, high = e_raw.get("min_answer"), e_raw.get("max_answer")
    if low is None and high is None:
        return None
    for name, value in (("min_answer", low), ("max_answer", high)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise DeployConfigError(
                f"{where}.{name}: give both bounds as whole numbers in the feed's decimals"
            )
    if not 0 <= low < high:
        raise DeployConfigError(f"{where}: min_answer {low} must be >= 0 and below {high}")
    return low, high


def parse_market(raw: dict, index: int) -> MarketSpec:
    """Parse and check one market entry."""
    name = str(raw.get("name", f"market[{index}]"))
    where = f"markets.{name}"
    market_id = _require(raw, "id", where)
    if isinstance(market_id, bool) or not isinstance(market_id, int) or market_id <= 0:
        raise DeployConfigError(f"{where}.id: must be a positive integer")
    tiers = [
        Tier(
            wad(_require(t, "notional_floor_usd", f"{where}.tiers[{i}]"), f"{where}.tiers[{i}]"),
            wad(_require(t, "maintenance_rate", f"{where}.tiers[{i}]"), f"{where}.tiers[{i}]"),
        )
        for i, t in enumerate(_require(raw, "tiers", where))
    ]
    g_raw = _require(raw, "guardrails", where)
    gw = f"{where}.guardrails"
    guardrails = Guardrails(
        min_multiplier=wad(_require(g_raw, "min_multiplier", gw), f"{gw}.min_multiplier"),
        max_multiplier=wad(_require(g_raw, "max_multiplier", gw), f"{gw}.max_multiplier"),
        max_increase=wad(_require(g_raw, "max_increase", gw), f"{gw}.max_increase"),
        max_decrease=wad(_require(g_raw, "max_decrease", gw), f"{gw}.max_decrease"),
        min_decrease_interval=seconds(
            _require(g_raw, "min_decrease_interval", gw), f"{gw}.min_decrease_interval"
        ),
        heartbeat=seconds(_require(g_raw, "heartbeat", gw), f"{gw}.heartbeat"),
        stale_multiplier=wad(_require(g_raw, "stale_multiplier", gw), f"{gw}.stale_multiplier"),
        increase_ramp=seconds(_require(g_raw, "increase_ramp", gw), f"{gw}.increase_ramp"),
        max_funding_rate=wad(
            _require(g_raw, "max_funding_rate_per_second", gw), f"{gw}.max_funding_rate"
        ),
    )
    e_raw = _require(raw, "engine", where)
    ew = f"{where}.engine"
    spec = MarketSpec(
        market_id=market_id,
        name=name,
        tiers=tiers,
        initial_ratio=wad(_require(raw, "initial_ratio", where), f"{where}.initial_ratio"),
        guardrails=guardrails,
        feed=address(_require(e_raw, "feed", ew), f"{ew}.feed"),
        max_price_age=seconds(_require(e_raw, "max_price_age", ew), f"{ew}.max_price_age"),
        price_band=wad(_require(e_raw, "price_band", ew), f"{ew}.price_band"),
        liquidation_fee=wad(_require(e_raw, "liquidation_fee", ew), f"{ew}.liquidation_fee"),
        liquidator_share=wad(_require(e_raw, "liquidator_share", ew), f"{ew}.liquidator_share"),
        oi_cap=wad(_require(e_raw, "oi_cap_usd", ew), f"{ew}.oi_cap_usd"),
        price_bounds=price_bounds(e_raw, ew),
    )
    check_market(spec)
    return spec


def check_market(m: MarketSpec) -> None:
    """Refuse a market whose settings the contracts accept but which would be unsafe to run."""
    where = f"markets.{m.name}"
    try:
        validate_tiers(m.tiers)
        validate_guardrails(m.guardrails)
    except ValueError as exc:
        raise DeployConfigError(f"{where}: {exc}") from exc
    if m.initial_ratio < WAD:
        raise DeployConfigError(f"{where}.initial_ratio: below 1 (initial under maintenance)")
    floor_rate = m.tiers[0].maintenance_rate * m.guardrails.min_multiplier // WAD
    if m.liquidation_fee >= floor_rate:
        raise DeployConfigError(
            f"{where}.engine.liquidation_fee: {m.liquidation_fee / WAD:.4%} is not below the "
            f"lowest maintenance rate {floor_rate / WAD:.4%}: every liquidation would leave "
            "the account in bad debt"
        )
    if not 0 < m.price_band <= MAX_PRICE_BAND:
        raise DeployConfigError(f"{where}.engine.price_band: must be in (0, 10%]")
    if not 0 < m.max_price_age <= MAX_PRICE_AGE:
        raise DeployConfigError(f"{where}.engine.max_price_age: must be in (0, 1 day]")
    if m.liquidator_share > WAD:
        raise DeployConfigError(f"{where}.engine.liquidator_share: above 100%")
    if m.oi_cap == 0:
        raise DeployConfigError(f"{where}.engine.oi_cap_usd: zero caps every trade")
    if m.guardrails.heartbeat < MIN_HEARTBEAT:
        raise DeployConfigError(f"{where}.guardrails.heartbeat: below {MIN_HEARTBEAT} s")
    if m.guardrails.stale_multiplier < m.guardrails.max_multiplier // 4:
        raise DeployConfigError(
            f"{where}.guardrails.stale_multiplier: a stale market must fall back to a "
            "conservative multiplier (at least a quarter of max_multiplier)"
        )


def parse_deploy_spec(raw: dict) -> DeploySpec:
    """Parse and check a whole deployment file (already loaded from YAML)."""
    if not isinstance(raw, dict):
        raise DeployConfigError("deployment file: expected a mapping at the top level")
    keepers = [address(k, "keepers") for k in _require(raw, "keepers", "deployment")]
    threshold = _require(raw, "signer_threshold", "deployment")
    allow_single = bool(raw.get("allow_single_signer", False))
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise DeployConfigError("signer_threshold: must be a positive integer")
    if len(set(k.lower() for k in keepers)) != len(keepers):
        raise DeployConfigError("keepers: the same keeper is listed twice")
    if threshold > len(keepers):
        raise DeployConfigError(
            f"signer_threshold: {threshold} is above the {len(keepers)} keepers listed"
        )
    if threshold == 1 and not allow_single:
        raise DeployConfigError(
            "signer_threshold: 1 lets a single leaked key move margins; use k >= 2 or set "
            "allow_single_signer: true for a test network"
        )
    markets = [parse_market(m, i) for i, m in enumerate(_require(raw, "markets", "deployment"))]
    ids = [m.market_id for m in markets]
    if len(set(ids)) != len(ids):
        raise DeployConfigError("markets: two markets share an id")
    return DeploySpec(
        collateral=address(_require(raw, "collateral", "deployment"), "collateral"),
        guardian=address(_require(raw, "guardian", "deployment"), "guardian"),
        keepers=keepers,
        signer_threshold=threshold,
        exchanges=[address(e, "exchanges") for e in raw.get("exchanges", [])],
        markets=markets,
        allow_single_signer=allow_single,
    )


def load_deploy_spec(path: Path) -> DeploySpec:
    """Read and check a deployment YAML file."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise DeployConfigError(f"{path}: not valid YAML ({exc})") from exc
    return parse_deploy_spec(raw)
