"""A reviewed deployment file, parsed and checked before anything is sent to a network.

``scripts/deploy.py`` (and ``dmm devnet``) deploy the registry and the engine from a YAML file
such as ``deploy/testnet.example.yaml``. The file is read strictly (``config_files``: unknown keys,
strings for booleans, NaN and binary files are refused) into the models below, then every bound
the contracts enforce is checked here, so that ``--dry-run`` refuses what would revert on chain:

============================  ==========================================================
registry ``configure_market``  1-8 tiers, first floor 0 and rate > 0, floors strictly up,
                               rates non-decreasing and <= 100%, floor < 2^128,
                               1 <= initial ratio < 2^120, guardrails (``margin_math``)
registry keepers, threshold   nonzero distinct keepers, 1 <= k <= 8 and k <= keepers
engine ``add_market``          1 <= id < 2^32, nonzero feed, 0 < max price age < 2^40,
                               band <= 20%, fee <= 20% and below the lowest maintenance
                               rate (first tier x min multiplier), share <= 100%,
                               oi cap < 2^256 wei, feed decimals <= 18
engine ``set_price_bounds``    0 <= min < max, max x 10^(18 - decimals) < 2^128
engine ``set_exchange``        nonzero exchange
engine ``set_funding_reserve``  0 <= seconds <= one day
scenarios ``configure_group``  (``deploy_sections``) 2-8 deployed markets, each in one group,
                               bounds and steps in bps, heartbeat, residual/floor <= 1
profiles ``define_class``      (``deploy_sections``) bounds in [0.5, 1] and [1, 4], ids 1-7,
                               every multiplier inside the bounds
============================  ==========================================================

and, on the network (:func:`check_on_chain`): the node's chain id equals ``chain_id`` pinned in
the file, the collateral and every feed hold code and answer ``decimals()`` (<= 18), every feed
answers ``latestRoundData()``. On top, the project refuses settings the contracts accept but
that are unsafe to run (a price band above 10%, a stale multiplier below a quarter of the cap,
a single signer unless ``allow_single_signer: true``); each message names the key path.

A devnet file may ask for mocks instead of addresses: ``mock_collateral:`` instead of
``collateral:`` and ``engine.mock_feed:`` instead of ``engine.feed:``; they are deployed first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from eth_utils import is_checksum_address, to_checksum_address
from pydantic import AfterValidator, Field, StrictBool, StrictInt, model_validator

from offchain import WAD
from offchain.protocol.config_files import ConfigFileError, StrictModel, load_yaml, validate
from offchain.protocol.deploy_sections import (
    GroupFile,
    GroupSpec,
    ProfilesFile,
    ProfilesSpec,
    SectionError,
    check_funding_reserve,
    check_groups,
    group_spec,
    profiles_spec,
)
from offchain.protocol.margin_math import Guardrails, Tier, validate_guardrails, validate_tiers
from offchain.protocol.units import Wad, to_wad

# Bounds the contracts enforce (MarginEngine.vy / RiskParameterRegistry.vy constants and asserts;
# tests/protocol/test_deploy_config.py reads them back from the sources).
MAX_MARKET_ID = 2**24 - 1
ENGINE_MAX_PRICE_BAND = 2 * 10**17
ENGINE_MAX_LIQUIDATION_FEE = 2 * 10**17
ENGINE_MAX_PRICE_AGE = 2**32 - 1
MAX_SIGNATURES = 8
MAX_INITIAL_RATIO = 2**120 - 1
MAX_PRICE_BOUND_WAD = 2**128 - 1
UINT256_MAX = 2**256 - 1
INT256_MAX = 2**255 - 1
MAX_DECIMALS = 18
ZERO_ADDRESS = "0x" + "00" * 20

# Limits beyond which a setting is refused as unsafe (not merely unusual).
MAX_PRICE_BAND = WAD // 10  # a trade more than 10% off the oracle is not a trade
MAX_PRICE_AGE = 24 * 3600
MIN_HEARTBEAT = 60


class DeployConfigError(ConfigFileError):
    """The deployment file is malformed, asks for an unsafe setting, or does not fit the chain."""


# ---------------------------------------------------------------------------------------------
# Field types


def check_address(value: str) -> str:
    """A 0x-prefixed 20-byte hex address; a mixed-case one must carry a valid EIP-55 checksum."""
    text = value.strip()
    body = text[2:]
    if not (text.startswith("0x") and len(body) == 40) or any(
        c not in "0123456789abcdefABCDEF" for c in body
    ):
        raise ValueError(f"{value!r} is not an address (0x and 40 hex digits)")
    if body != body.lower() and body != body.upper() and not is_checksum_address(text):
        raise ValueError(f"{value!r} has a wrong EIP-55 checksum (a mistyped address?)")
    return to_checksum_address(text)


def nonzero_address(value: str) -> str:
    if int(value, 16) == 0:
        raise ValueError("the zero address")
    return value


def wad(value: Any, where: str) -> int:
    """:func:`to_wad` raising :class:`DeployConfigError` naming ``where`` (for other readers of
    the same number format, e.g. the risk configuration)."""
    try:
        return to_wad(value)
    except ValueError as exc:
        raise DeployConfigError(f"{where}: {exc}") from None


def seconds(value: Any, where: str) -> int:
    """A whole, non-negative number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DeployConfigError(f"{where}: {value!r} is not a whole number of seconds")
    return value


def address(value: Any, where: str) -> str:
    """A 0x-prefixed 20-byte address (checksummed when mixed-case)."""
    try:
        return check_address(str(value))
    except ValueError as exc:
        raise DeployConfigError(f"{where}: {exc}") from None


Seconds = Annotated[StrictInt, Field(ge=0)]
Address = Annotated[str, AfterValidator(check_address)]
NonzeroAddress = Annotated[str, AfterValidator(check_address), AfterValidator(nonzero_address)]


# ---------------------------------------------------------------------------------------------
# The file's schema


class TierFile(StrictModel):
    notional_floor_usd: Wad
    maintenance_rate: Wad


class GuardrailsFile(StrictModel):
    min_multiplier: Wad
    max_multiplier: Wad
    max_increase: Wad
    max_decrease: Wad
    min_decrease_interval: Seconds
    heartbeat: Seconds
    stale_multiplier: Wad
    increase_ramp: Seconds
    max_funding_rate_per_second: Wad

    def guardrails(self) -> Guardrails:
        return Guardrails(
            min_multiplier=self.min_multiplier,
            max_multiplier=self.max_multiplier,
            max_increase=self.max_increase,
            max_decrease=self.max_decrease,
            min_decrease_interval=self.min_decrease_interval,
            heartbeat=self.heartbeat,
            stale_multiplier=self.stale_multiplier,
            increase_ramp=self.increase_ramp,
            max_funding_rate=self.max_funding_rate_per_second,
        )


class MockFeedFile(StrictModel):
    """A devnet ``MockPriceFeed`` deployed for the market."""

    price: Annotated[float, Field(gt=0)]  # USD
    decimals: Annotated[StrictInt, Field(ge=0, le=MAX_DECIMALS)] = 8


class MockTokenFile(StrictModel):
    """A devnet ``MockERC20`` deployed as the collateral."""

    name: str = "USD Coin"
    symbol: str = "USDC"
    decimals: Annotated[StrictInt, Field(ge=0, le=MAX_DECIMALS)] = 6


class EngineMarketFile(StrictModel):
    feed: NonzeroAddress | None = None
    mock_feed: MockFeedFile | None = None
    max_price_age: Seconds
    price_band: Wad
    liquidation_fee: Wad
    liquidator_share: Wad
    oi_cap_usd: Wad
    min_answer: Annotated[StrictInt, Field(ge=0, le=INT256_MAX)] | None = None
    max_answer: Annotated[StrictInt, Field(gt=0, le=INT256_MAX)] | None = None
    funding_reserve_seconds: Seconds = 0  # expected funding the paying side carries

    @model_validator(mode="after")
    def _one_feed_and_both_bounds(self) -> EngineMarketFile:
        if (self.feed is None) == (self.mock_feed is None):
            raise ValueError("give exactly one of 'feed' (an address) and 'mock_feed' (devnet)")
        if (self.min_answer is None) != (self.max_answer is None):
            raise ValueError("give both min_answer and max_answer (whole numbers) or neither")
        return self


class MarketFile(StrictModel):
    id: Annotated[StrictInt, Field(ge=1, le=MAX_MARKET_ID)]
    name: str = ""
    risk: str | None = None  # tiers, initial_ratio, guardrails from this risk_config market
    tiers: Annotated[list[TierFile], Field(min_length=1, max_length=8)]
    initial_ratio: Wad
    guardrails: GuardrailsFile
    engine: EngineMarketFile


class DeployFile(StrictModel):
    """``deploy/*.yaml``: see ``deploy/testnet.example.yaml`` for every key."""

    chain_id: Annotated[StrictInt, Field(ge=1)]
    risk_config: str | None = None  # the shipped risk configuration (relative to this file)
    collateral: NonzeroAddress | None = None
    mock_collateral: MockTokenFile | None = None
    guardian: Address = ZERO_ADDRESS
    keepers: Annotated[list[NonzeroAddress], Field(min_length=1)]
    signer_threshold: Annotated[StrictInt, Field(ge=1, le=MAX_SIGNATURES)]
    allow_single_signer: StrictBool = False
    exchanges: list[NonzeroAddress] = Field(default_factory=list)
    markets: Annotated[list[MarketFile], Field(min_length=1)]
    scenario_groups: list[GroupFile] = Field(default_factory=list)
    profiles: ProfilesFile | None = None

    @model_validator(mode="after")
    def _one_collateral(self) -> DeployFile:
        if (self.collateral is None) == (self.mock_collateral is None):
            raise ValueError("give exactly one of 'collateral' (an address) and 'mock_collateral'")
        return self


# ---------------------------------------------------------------------------------------------
# What the deployment does (plain values, built from the file or by code)


@dataclass(frozen=True)
class MockToken:
    name: str = "USD Coin"
    symbol: str = "USDC"
    decimals: int = 6


@dataclass(frozen=True)
class MockFeed:
    answer: int  # in the feed's decimals
    decimals: int = 8


@dataclass(frozen=True)
class MarketSpec:
    """One market: registry schedule and guardrails plus the engine's market config."""

    market_id: int
    name: str
    tiers: list[Tier]
    initial_ratio: int
    guardrails: Guardrails
    feed: str | None  # None: a mock feed is deployed (``mock_feed``)
    max_price_age: int
    price_band: int
    liquidation_fee: int
    liquidator_share: int
    oi_cap: int
    # The feed aggregator's (minAnswer, maxAnswer), in the feed's decimals; None: not set.
    price_bounds: tuple[int, int] | None = None
    mock_feed: MockFeed | None = None
    funding_reserve_seconds: int = 0

    @property
    def label(self) -> str:
        return f"{self.market_id}" + (f" ({self.name})" if self.name else "")

    def engine_config(self, feed: str | None = None) -> tuple[str, int, int, int, int, int]:
        """The engine's ``MarketConfig`` tuple, in field order (``feed``: the mock's address)."""
        address = feed or self.feed
        if address is None:
            raise ValueError(f"market {self.label}: the mock feed is not deployed yet")
        return (
            address,
            self.max_price_age,
            self.price_band,
            self.liquidation_fee,
            self.liquidator_share,
            self.oi_cap,
        )


@dataclass(frozen=True)
class DeploySpec:
    """The whole deployment: collateral, governance, keepers and markets."""

    collateral: str | None  # None: a mock token is deployed (``mock_collateral``)
    guardian: str
    keepers: list[str]
    signer_threshold: int
    exchanges: list[str] = field(default_factory=list)
    markets: list[MarketSpec] = field(default_factory=list)
    allow_single_signer: bool = False
    chain_id: int | None = None  # None: not pinned (code-built devnets only)
    mock_collateral: MockToken | None = None
    scenario_groups: list[GroupSpec] = field(default_factory=list)
    profiles: ProfilesSpec | None = None

    def config_hash(self) -> str:
        """``sha256:`` of the canonical JSON of everything deployed (layout and comments of the
        file do not count; any value that reaches the chain does)."""
        text = json.dumps(_plain(self), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def market_spec(m: MarketFile, index: int) -> MarketSpec:
    e = m.engine
    mock = None
    if e.mock_feed is not None:
        mock = MockFeed(round(e.mock_feed.price * 10**e.mock_feed.decimals), e.mock_feed.decimals)
    spec = MarketSpec(
        market_id=m.id,
        name=m.name,
        tiers=[Tier(t.notional_floor_usd, t.maintenance_rate) for t in m.tiers],
        initial_ratio=m.initial_ratio,
        guardrails=m.guardrails.guardrails(),
        feed=e.feed,
        max_price_age=e.max_price_age,
        price_band=e.price_band,
        liquidation_fee=e.liquidation_fee,
        liquidator_share=e.liquidator_share,
        oi_cap=e.oi_cap_usd,
        price_bounds=(e.min_answer, e.max_answer) if e.min_answer is not None else None,  # type: ignore[arg-type]
        mock_feed=mock,
        funding_reserve_seconds=e.funding_reserve_seconds,
    )
    check_market(spec, f"markets[{index}]")
    return spec


def check_market(m: MarketSpec, where: str) -> None:
    """Refuse a market the contracts would revert on, or that would be unsafe to run."""

    def fail(key: str, message: str) -> None:
        raise DeployConfigError(f"{where}{key}: {message}")

    try:
        validate_tiers(m.tiers)
    except ValueError as exc:
        fail(".tiers", str(exc))
    try:
        validate_guardrails(m.guardrails)
    except ValueError as exc:
        fail(".guardrails", str(exc))
    if not 1 <= m.market_id <= MAX_MARKET_ID:
        fail(".id", f"{m.market_id} outside the engine's 1..2^32-1")
    if m.initial_ratio < WAD:
        fail(".initial_ratio", "below 1 (initial under maintenance)")
    if m.initial_ratio > MAX_INITIAL_RATIO:
        fail(".initial_ratio", "above the registry's 2^120 wei")
    floor_rate = m.tiers[0].maintenance_rate * m.guardrails.min_multiplier // WAD
    if m.liquidation_fee >= floor_rate:
        fail(
            ".engine.liquidation_fee",
            f"{m.liquidation_fee / WAD:.4%} is not below the lowest maintenance rate"
            f" {floor_rate / WAD:.4%} (first tier x min multiplier): every liquidation would"
            " leave the account in bad debt",
        )
    if m.liquidation_fee > ENGINE_MAX_LIQUIDATION_FEE:
        fail(".engine.liquidation_fee", "above the engine's 20%")
    if not 0 < m.price_band <= MAX_PRICE_BAND:
        fail(".engine.price_band", f"{m.price_band / WAD:.2%} must be in (0, 10%]")
    if not 0 < m.max_price_age <= MAX_PRICE_AGE:
        fail(".engine.max_price_age", f"{m.max_price_age} s must be in (0, 1 day]")
    if m.liquidator_share > WAD:
        fail(".engine.liquidator_share", "above 100%")
    if m.oi_cap == 0:
        fail(".engine.oi_cap_usd", "zero caps every trade")
    if m.oi_cap > UINT256_MAX:
        fail(".engine.oi_cap_usd", f"{m.oi_cap / WAD:.4g} USD does not fit the engine's uint256")
    if m.guardrails.heartbeat < MIN_HEARTBEAT:
        fail(".guardrails.heartbeat", f"below {MIN_HEARTBEAT} s")
    if m.guardrails.stale_multiplier < m.guardrails.max_multiplier // 4:
        fail(
            ".guardrails.stale_multiplier",
            "a stale market must fall back to a conservative multiplier (at least a quarter of"
            " max_multiplier)",
        )
    try:
        check_funding_reserve(m.funding_reserve_seconds, f"{where}.engine.funding_reserve_seconds")
    except SectionError as exc:
        raise DeployConfigError(str(exc)) from None
    if m.price_bounds is not None:
        low, high = m.price_bounds
        if not 0 <= low < high:
            fail(".engine.min_answer", f"{low} must be >= 0 and below max_answer {high}")
        if m.mock_feed is not None:
            check_price_bounds(m, m.mock_feed.decimals, where)


def check_price_bounds(m: MarketSpec, decimals: int, where: str) -> None:
    """``max_answer`` scaled to WAD must fit the engine's 128 bits."""
    if m.price_bounds is not None and m.price_bounds[1] * 10 ** (18 - decimals) > (
        MAX_PRICE_BOUND_WAD
    ):
        raise DeployConfigError(
            f"{where}.engine.max_answer: {m.price_bounds[1]} at {decimals} decimals is above the"
            " engine's 2^128 wei"
        )


def deploy_spec(f: DeployFile) -> DeploySpec:
    """The checked deployment of a validated file."""
    keepers = list(f.keepers)
    if len({k.lower() for k in keepers}) != len(keepers):
        raise DeployConfigError("keepers: the same keeper is listed twice")
    if f.signer_threshold > len(keepers):
        raise DeployConfigError(
            f"signer_threshold: {f.signer_threshold} is above the {len(keepers)} keepers listed"
        )
    if f.signer_threshold == 1 and not f.allow_single_signer:
        raise DeployConfigError(
            "signer_threshold: 1 lets a single leaked key move margins; use k >= 2 or set "
            "allow_single_signer: true for a test network"
        )
    markets = [market_spec(m, i) for i, m in enumerate(f.markets)]
    ids = [m.market_id for m in markets]
    if len(set(ids)) != len(ids):
        raise DeployConfigError(f"markets: two markets share an id ({ids})")
    groups = [group_spec(g) for g in f.scenario_groups]
    try:
        check_groups(groups, ids)
    except SectionError as exc:
        raise DeployConfigError(str(exc)) from None
    mock = f.mock_collateral
    return DeploySpec(
        collateral=f.collateral,
        guardian=f.guardian,
        keepers=keepers,
        signer_threshold=f.signer_threshold,
        exchanges=list(f.exchanges),
        markets=markets,
        allow_single_signer=f.allow_single_signer,
        chain_id=f.chain_id,
        mock_collateral=MockToken(mock.name, mock.symbol, mock.decimals) if mock else None,
        scenario_groups=groups,
        profiles=profiles_spec(f.profiles) if f.profiles is not None else None,
    )


RISK_KEYS = ("tiers", "initial_ratio", "guardrails")


def apply_risk_config(raw: Any, folder: Path) -> Any:
    """Fill each market that names a ``risk:`` market with that market's ``tiers``,
    ``initial_ratio`` and ``guardrails`` from the file ``risk_config`` names (one source for what
    the backtest replays and what is deployed). Written in both places is refused."""
    if not isinstance(raw, dict) or not isinstance(raw.get("markets"), list):
        return raw
    markets = raw["markets"]
    named = [i for i, m in enumerate(markets) if isinstance(m, dict) and m.get("risk") is not None]
    source = raw.get("risk_config")
    if source is None:
        if named:
            raise DeployConfigError(
                f"markets[{named[0]}].risk: needs 'risk_config' (the risk file) at the top level"
            )
        return raw
    if not isinstance(source, str):
        raise DeployConfigError(f"risk_config: {source!r} is not a path")
    path = Path(source) if Path(source).is_absolute() else folder / source
    try:
        risk = load_yaml(path, "risk configuration")
    except ConfigFileError as exc:
        raise DeployConfigError(f"risk_config: {exc}") from None
    entries = {
        str(m.get("name", "")).lower(): m
        for m in (risk.get("markets") or [] if isinstance(risk, dict) else [])
        if isinstance(m, dict)
    }
    filled = []
    for i, m in enumerate(markets):
        if i not in named:
            filled.append(m)
            continue
        name = str(m["risk"])
        entry = entries.get(name.lower())
        if entry is None:
            raise DeployConfigError(
                f"markets[{i}].risk: no market {name!r} in {path} (it has {sorted(entries)})"
            )
        for key in RISK_KEYS:
            if key in m:
                raise DeployConfigError(
                    f"markets[{i}].{key}: comes from {path} (market {name}); remove it here"
                )
            if key not in entry:
                raise DeployConfigError(f"{path}: market {name}: no '{key}'")
        filled.append({**m, **{key: entry[key] for key in RISK_KEYS}})
    return {**raw, "markets": filled}


def parse_deploy_spec(
    raw: Any, source: str = "deployment file", folder: Path | None = None
) -> DeploySpec:
    """Parse and check a whole deployment file (already loaded from YAML); ``risk_config`` is
    read relative to ``folder`` (default: the working directory)."""
    try:
        raw = apply_risk_config(raw, folder or Path("."))
        return deploy_spec(validate(DeployFile, raw, source))
    except DeployConfigError:
        raise
    except ConfigFileError as exc:
        raise DeployConfigError(str(exc)) from None


def load_deploy_spec(path: str | Path) -> DeploySpec:
    """Read and check a deployment YAML file."""
    try:
        raw = load_yaml(path, "deployment file")
    except ConfigFileError as exc:
        raise DeployConfigError(str(exc)) from None
    try:
        return parse_deploy_spec(raw, str(path), Path(path).resolve().parent)
    except DeployConfigError as exc:
        text = str(exc)
        raise DeployConfigError(text if text.startswith(str(path)) else f"{path}: {text}") from None


# ---------------------------------------------------------------------------------------------
# Against the network


def check_on_chain(spec: DeploySpec, w3: Any) -> list[str]:
    """Check the file against the node ``w3`` talks to; returns notes of what was checked.

    Raises :class:`DeployConfigError` for a chain id other than the pinned one, a collateral or
    feed address without code, a ``decimals()`` that does not answer or exceeds 18, a feed whose
    ``latestRoundData()`` does not answer, or price bounds that do not fit at its decimals.
    """
    from offchain.protocol.abis import FEED_ABI  # web3 is only needed here

    notes: list[str] = []
    node_chain = int(w3.eth.chain_id)
    if spec.chain_id is not None and node_chain != spec.chain_id:
        raise DeployConfigError(
            f"chain_id: the file pins {spec.chain_id} but the node is chain {node_chain}"
        )
    notes.append(f"chain id {node_chain} as pinned")

    def decimals_of(address: str, key: str) -> int:
        if not bytes(w3.eth.get_code(address)):
            raise DeployConfigError(f"{key}: no contract at {address} on chain {node_chain}")
        contract = w3.eth.contract(address=address, abi=FEED_ABI)
        try:
            decimals = int(contract.functions.decimals().call())
        except Exception as exc:
            raise DeployConfigError(
                f"{key}: {address} does not answer decimals() ({type(exc).__name__})"
            ) from None
        if decimals > MAX_DECIMALS:
            raise DeployConfigError(f"{key}: {address} has {decimals} decimals, above 18")
        return decimals

    if spec.collateral is not None:
        d = decimals_of(spec.collateral, "collateral")
        notes.append(f"collateral {spec.collateral}: {d} decimals")
    for i, m in enumerate(spec.markets):
        if m.feed is None:
            continue
        key = f"markets[{i}].engine.feed"
        d = decimals_of(m.feed, key)
        try:
            answer = w3.eth.contract(address=m.feed, abi=FEED_ABI).functions.latestRoundData()
            _, price, _, _, _ = answer.call()
        except Exception as exc:
            raise DeployConfigError(
                f"{key}: {m.feed} does not answer latestRoundData() ({type(exc).__name__})"
            ) from None
        check_price_bounds(m, d, f"markets[{i}]")
        notes.append(f"market {m.label} feed {m.feed}: {d} decimals, answer {price / 10**d:g}")
    return notes


__all__ = [
    "DeployConfigError",
    "DeployFile",
    "DeploySpec",
    "MarketSpec",
    "MockFeed",
    "MockToken",
    "address",
    "check_market",
    "check_on_chain",
    "load_deploy_spec",
    "parse_deploy_spec",
    "seconds",
    "to_wad",
    "wad",
]
