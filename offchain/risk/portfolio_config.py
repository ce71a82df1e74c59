"""The portfolio margin's frozen parameters: K, residual, floor, initial ratio and guardrails.

Chosen on data up to 2021-12-31 by the rule of :mod:`offchain.risk.portfolio_calibration`
(run it with ``dmm backtest-portfolio --calibrate``) and frozen here as :data:`FROZEN_PORTFOLIO`,
the rule's output; 2022-2023 is reported with them untouched. The shipped risk configuration
(``deploy/risk.yaml``, section ``portfolio:``, read by :func:`parse_portfolio`) carries the same
values for everything that deploys or runs them (the devnet, the deployment files, the keeper),
with the scenario groups a deployment configures; ``tests/risk/test_risk_config.py`` fails when
the two differ.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from offchain import WAD
from offchain.protocol.portfolio_math import (
    INT16_MAX,
    MAX_SCENARIOS,
    GroupParams,
    ShockGuardrails,
)
from offchain.risk.scenarios import ScenarioDesign

CALIBRATION_END = 1_640_995_200  # 2022-01-01 00:00 UTC: later hours are the report period


def market_name(symbol: str) -> str:
    """``"BTC"`` from ``"BTC/USDT"``, ``"binance_btcusdt_1h_2018_2023"`` or ``"btc"``."""
    s = symbol.strip()
    m = re.search(r"(?:^|[_/\-\s])([A-Za-z0-9]+?)[_/\-]?(?:USDT|USDC|USD)(?:$|[_/\-\s])", s, re.I)
    if m is None:
        m = re.search(r"^([A-Za-z0-9]+?)[_/\-]?(?:USDT|USDC|USD)", s, re.I)
    return (m.group(1) if m else s).upper()


@dataclass(frozen=True)
class PortfolioConfig:
    """Everything the portfolio margin needs besides the single-market model.

    Parameters
    ----------
    n_scenarios
        ``K``, the number of joint shocks signed per group (a prefix of the scenario order of
        :mod:`offchain.risk.scenarios`).
    residual, floor
        ``c`` and ``phi`` of the formula, fractions of the tiered sum.
    initial_ratio
        ``r_g``: initial = ``r_g`` x the portfolio requirement (the markets' own ratio).
    max_shock_bps
        Governance bound on ``|shock|`` per market (bps), by market name; ``default_max_shock_bps``
        for a market not listed.
    max_step_bps
        Largest change of one shock in one update (bps), every market.
    heartbeat
        Seconds after which the group's scenarios are stale (no portfolio credit).
    """

    n_scenarios: int
    residual: float
    floor: float
    initial_ratio: float
    max_shock_bps: tuple[tuple[str, int], ...]
    default_max_shock_bps: int
    max_step_bps: int
    heartbeat: int = 7200
    confidence: float = 0.99
    horizon: int = 1

    def __post_init__(self) -> None:
        if not 2 <= self.n_scenarios <= MAX_SCENARIOS:
            raise ValueError(f"n_scenarios must lie in [2, 16], got {self.n_scenarios}")
        if not 0 <= self.residual <= 1 or not 0 <= self.floor <= 1:
            raise ValueError(
                f"residual and floor must lie in [0, 1], got {self.residual}, {self.floor}"
            )
        if self.initial_ratio < 1:
            raise ValueError(f"initial_ratio must be at least 1, got {self.initial_ratio}")
        for name, bound in (*self.max_shock_bps, ("default", self.default_max_shock_bps)):
            if not 0 < bound <= INT16_MAX:
                raise ValueError(f"max shock of {name} must lie in (0, {INT16_MAX}], got {bound}")
        if self.max_step_bps <= 0 or self.heartbeat <= 0:
            raise ValueError("max_step_bps and heartbeat must be positive")

    def design(self, n_scenarios: int | None = None) -> ScenarioDesign:
        """The scenario design with this ``K`` (or another one, for the calibration grid)."""
        k = self.n_scenarios if n_scenarios is None else n_scenarios
        return ScenarioDesign(n_scenarios=k, confidence=self.confidence, horizon=self.horizon)

    def bound_of(self, market: str) -> int:
        """The shock bound of a market, by name (see :func:`market_name`)."""
        return dict(self.max_shock_bps).get(market_name(market), self.default_max_shock_bps)

    def guardrails(self, markets: Sequence[str]) -> ShockGuardrails:
        """The on-chain guardrails of a group of ``markets``."""
        return ShockGuardrails(
            max_shock=tuple(self.bound_of(m) for m in markets),
            max_step=tuple(self.max_step_bps for _ in markets),
            heartbeat=self.heartbeat,
        )

    def group_params(self) -> GroupParams:
        """``c``, ``phi`` and ``r_g`` in WAD, as the chain stores them (exact decimals)."""

        def wad(x: float) -> int:
            return int(Fraction(str(x)) * WAD)

        return GroupParams(
            residual=wad(self.residual),
            floor=wad(self.floor),
            initial_ratio=wad(self.initial_ratio),
        )


# Frozen by the rule of offchain.risk.portfolio_calibration on data up to 2021-12-31; to move to
# the shipped risk configuration file's `portfolio:` section. Do not edit by hand: rerun the rule.
FROZEN_PORTFOLIO = PortfolioConfig(
    n_scenarios=10,
    residual=0.1,
    floor=0.05,
    initial_ratio=2.0,
    max_shock_bps=(("BTC", 6500), ("ETH", 6500), ("SOL", 8000)),
    default_max_shock_bps=8000,
    max_step_bps=5700,
)


@dataclass(frozen=True)
class GroupEntry:
    """A scenario group a deployment configures: its id and its markets, by name, in the order
    of the group's shock words."""

    group_id: int
    markets: tuple[str, ...]


PORTFOLIO_KEYS = {
    "n_scenarios",
    "residual",
    "floor",
    "initial_ratio",
    "max_shock_bps",
    "default_max_shock_bps",
    "max_step_bps",
    "heartbeat",
    "confidence",
    "horizon",
    "groups",
}


def parse_portfolio(
    raw: Mapping[str, object], where: str = "portfolio"
) -> tuple[PortfolioConfig, tuple[GroupEntry, ...]]:
    """The ``portfolio:`` section of the shipped risk configuration: the frozen parameters and
    the groups to configure. Raises ``ValueError`` naming the key."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping")
    missing, unknown = sorted(PORTFOLIO_KEYS - set(raw)), sorted(set(raw) - PORTFOLIO_KEYS)
    if missing or unknown:
        raise ValueError(f"{where}: missing {missing}, unknown {unknown}")

    def number(key: str) -> float:
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{where}.{key}: {value!r} is not a number")
        try:
            return float(Fraction(str(value)))
        except ValueError:
            raise ValueError(f"{where}.{key}: {value!r} is not a number") from None

    def whole(key: str) -> int:
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}.{key}: {value!r} is not a whole number")
        return value

    shocks = raw["max_shock_bps"]
    if not isinstance(shocks, Mapping) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in shocks.values()
    ):
        raise ValueError(f"{where}.max_shock_bps: expected a mapping of market name to bps")
    try:
        config = PortfolioConfig(
            n_scenarios=whole("n_scenarios"),
            residual=number("residual"),
            floor=number("floor"),
            initial_ratio=number("initial_ratio"),
            max_shock_bps=tuple((market_name(str(k)), int(v)) for k, v in shocks.items()),
            default_max_shock_bps=whole("default_max_shock_bps"),
            max_step_bps=whole("max_step_bps"),
            heartbeat=whole("heartbeat"),
            confidence=number("confidence"),
            horizon=whole("horizon"),
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    groups_raw = raw["groups"]
    if not isinstance(groups_raw, Sequence) or isinstance(groups_raw, str):
        raise ValueError(f"{where}.groups: expected a list")
    groups: list[GroupEntry] = []
    for i, g in enumerate(groups_raw):
        w = f"{where}.groups[{i}]"
        if not isinstance(g, Mapping) or set(g) != {"id", "markets"}:
            raise ValueError(f"{w}: expected id and markets")
        gid, markets = g["id"], g["markets"]
        if isinstance(gid, bool) or not isinstance(gid, int) or not 1 <= gid <= 255:
            raise ValueError(f"{w}.id: a group id is 1 to 255, got {gid!r}")
        if not isinstance(markets, Sequence) or isinstance(markets, str) or len(markets) < 2:
            raise ValueError(f"{w}.markets: a group needs two markets or more")
        names = tuple(market_name(str(m)) for m in markets)
        if len(set(names)) != len(names):
            raise ValueError(f"{w}.markets: a market is listed twice ({list(names)})")
        groups.append(GroupEntry(gid, names))
    ids = [g.group_id for g in groups]
    listed = [m for g in groups for m in g.markets]
    if len(set(ids)) != len(ids) or len(set(listed)) != len(listed):
        raise ValueError(f"{where}.groups: group ids and markets must each appear once")
    return config, tuple(groups)


__all__ = [
    "CALIBRATION_END",
    "FROZEN_PORTFOLIO",
    "GroupEntry",
    "PortfolioConfig",
    "market_name",
    "parse_portfolio",
]
