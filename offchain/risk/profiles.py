"""Account risk profiles: an account's record in, its class (a maintenance multiplier) out.

The ``ProfileRegistry`` holds up to seven classes, each a multiplier on the account's tiered
maintenance with on-chain eligibility (the owner's trailing 30-day volume, the subaccount's
equity); keepers assign subaccounts to classes with signed updates that expire after a
heartbeat. This module is the keeper's side: pure functions from an account's record to a class.

**Record** (:class:`AccountRecord`): the owner's trailing 30-day volume (the engine's
``trailing_volume``), the subaccount's equity, its fills (``Trade`` events: the taker buys when
``size > 0``, the maker sells), the ``Liquidation`` and ``Backstop`` events against it, and its
open positions with their markets' open interest.

**Metrics** (:func:`profile_metrics`):

* two-sided flow ``tau = min(B, S) / max(B, S)`` over 30 days (``B``, ``S`` the bought and sold
  notional; 1 is perfectly balanced, 0 one-way or no flow);
* liquidation *episodes*: liquidation events less than an hour apart are one episode (a partial
  liquidation takes several calls, across markets and blocks), counted over 30 and 90 days;
  backstops over 90 days;
* concentration: the largest position's share of its market's open interest (one side; the
  engine's ``open_interest`` is the long size, equal to the short size). This is the
  concentration a liquidation feels: a position a quarter of the market cannot be unwound at the
  oracle price. The largest position's share of the account's own gross notional is reported
  too, but not used: a one-market account already gets no portfolio credit.

**Rule** (first match wins; penalties before discounts):

==  ===================  =====  ============================================================
id  class                mult.  when
==  ===================  =====  ============================================================
6   backstopped          2.00x  a backstop in the last 90 days
5   repeat_liquidated    1.50x  two or more liquidation episodes in the last 30 days
4   liquidated           1.25x  one liquidation episode in the last 30 days
3   dominant             1.25x  largest position >= 25% of its market's open interest and
                                above a size floor (the second tier's floor)
1   maker                0.80x  no liquidation in 90 days, ``tau >= 0.8``, volume and equity
                                at least 5% above the class's on-chain minimums
2   active               0.90x  the same with ``tau >= 0.5`` and the lower minimums
0   default              1.00x  otherwise
==  ===================  =====  ============================================================

Why: penalties follow the account's record with the insurance fund (a backstop cost it money;
an account liquidated once is likely to be again, twice more so) and the one risk the notional
tiers miss, the position's size *relative to its market*. Discounts go to two-sided flow, the
market makers whose inventory turns over and stays near flat, with enough volume and equity on
chain that a faulty keeper cannot hand a discount to any account. Every multiplier lies in
[0.8x, 2x]; the engine never lets a discount take a position below its tier rate times the
market's minimum multiplier, so in calm markets (multiplier at its floor) a discount changes
nothing and it acts when the dynamic multiplier is high. Penalty classes have no on-chain
eligibility (a registry that refused them would let an account escape its penalty by being
small); discount classes must have both minimums. The 5% eligibility buffer keeps a batch from
reverting because volume decayed or equity moved between signing and landing (the registry
refuses the whole batch for one ineligible account).

No account-level history exists to calibrate these numbers: they are set by the reasoning
above and should be revisited with the devnet's and a testnet's records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from eth_utils import keccak

from offchain import WAD

DAY_S = 86_400
MAX_CLASS_ID = 7
MIN_CLASS_MULTIPLIER = 8 * WAD // 10  # governance band proposed for classes: [0.8x, 2x]
MAX_CLASS_MULTIPLIER = 2 * WAD
PROFILE_MODEL_VERSION = "dmm-profiles/1"


# ---------------------------------------------------------------------------------------------
# Events and records


@dataclass(frozen=True)
class TradeEvent:
    """A ``Trade`` log: ``size`` moves from maker to taker (the taker buys when positive)."""

    at: int
    market_id: int
    maker_owner: str
    maker_subaccount: int
    taker_owner: str
    taker_subaccount: int
    size: int
    price: int


@dataclass(frozen=True)
class LiquidationEvent:
    """A ``Liquidation`` log against ``(owner, subaccount)``."""

    at: int
    market_id: int
    owner: str
    subaccount: int


@dataclass(frozen=True)
class BackstopEvent:
    """A ``Backstop`` log: the account's positions went to the insurance fund."""

    at: int
    owner: str
    subaccount: int


@dataclass(frozen=True)
class Fill:
    """One side of a trade from an account's point of view (notional in USD WAD)."""

    at: int
    market_id: int
    notional: int
    buy: bool


@dataclass(frozen=True)
class PositionView:
    """An open position's notional and its market's open interest, both at the mark (USD WAD)."""

    market_id: int
    notional: int
    market_open_interest: int


@dataclass(frozen=True)
class AccountHistory:
    """What the events say about one subaccount."""

    fills: tuple[Fill, ...] = ()
    liquidations: tuple[int, ...] = ()
    backstops: tuple[int, ...] = ()


@dataclass(frozen=True)
class AccountRecord:
    """Everything the rule reads about one subaccount."""

    owner: str
    subaccount: int
    trailing_volume: int
    equity: int
    history: AccountHistory = AccountHistory()
    positions: tuple[PositionView, ...] = ()


Key = tuple[str, int]


def fold_events(
    trades: Iterable[TradeEvent],
    liquidations: Iterable[LiquidationEvent] = (),
    backstops: Iterable[BackstopEvent] = (),
    engine: str | None = None,
) -> dict[Key, AccountHistory]:
    """Per ``(owner, subaccount)``, its fills, liquidation and backstop times (oldest first).

    Owner addresses are compared case-insensitively and kept as first seen; the engine's own
    subaccounts (the insurance fund, ``engine``) are left out, and so are fills between two
    subaccounts of one owner (the engine adds them to neither volume nor premium).
    """
    fills: dict[Key, list[Fill]] = {}
    liq: dict[Key, list[int]] = {}
    back: dict[Key, list[int]] = {}
    names: dict[str, str] = {}
    skip = engine.lower() if engine else None

    def key(owner: str, sub: int) -> Key | None:
        low = owner.lower()
        if low == skip:
            return None
        return names.setdefault(low, owner), int(sub)

    for t in trades:
        if t.taker_owner.lower() == t.maker_owner.lower():
            continue  # between one owner's subaccounts: a transfer, as the engine counts it
        notional = abs(t.size) * t.price // WAD
        for owner, sub, buy in (
            (t.taker_owner, t.taker_subaccount, t.size > 0),
            (t.maker_owner, t.maker_subaccount, t.size < 0),
        ):
            k = key(owner, sub)
            if k is not None:
                fills.setdefault(k, []).append(Fill(t.at, t.market_id, notional, buy))
    for e in liquidations:
        if (k := key(e.owner, e.subaccount)) is not None:
            liq.setdefault(k, []).append(e.at)
    for e in backstops:
        if (k := key(e.owner, e.subaccount)) is not None:
            back.setdefault(k, []).append(e.at)
    return {
        k: AccountHistory(
            tuple(sorted(fills.get(k, []), key=lambda f: f.at)),
            tuple(sorted(liq.get(k, []))),
            tuple(sorted(back.get(k, []))),
        )
        for k in {*fills, *liq, *back}
    }


# ---------------------------------------------------------------------------------------------
# Metrics (pure)


def two_sidedness(bought: int, sold: int) -> float:
    """``min(B, S) / max(B, S)``; 0 without flow.

    >>> two_sidedness(100, 80), two_sidedness(100, 0), two_sidedness(0, 0)
    (0.8, 0.0, 0.0)
    """
    if bought < 0 or sold < 0:
        raise ValueError(f"notional must be >= 0, got {bought}, {sold}")
    top = max(bought, sold)
    return min(bought, sold) / top if top else 0.0


def liquidation_episodes(times: Sequence[int], gap_s: int = 3600) -> tuple[int, ...]:
    """Start times of liquidation episodes: events less than ``gap_s`` after the previous one
    belong to its episode.

    >>> liquidation_episodes([100, 200, 5000, 5100, 20000])
    (100, 5000, 20000)
    """
    starts: list[int] = []
    last: int | None = None
    for t in sorted(times):
        if last is None or t - last >= gap_s:
            starts.append(t)
        last = t
    return tuple(starts)


def largest_market_share(positions: Sequence[PositionView]) -> tuple[float, int]:
    """``(share, notional)`` of the position holding the largest share of its market's open
    interest (0 without positions; 1 when the market's open interest reads 0)."""
    best, notional = 0.0, 0
    for p in positions:
        share = p.notional / p.market_open_interest if p.market_open_interest else 1.0
        share = min(share, 1.0)
        if share > best or (share == best and p.notional > notional):
            best, notional = share, p.notional
    return best, notional


def account_concentration(positions: Sequence[PositionView]) -> float:
    """The largest position's share of the account's gross notional (0 when flat)."""
    gross = sum(p.notional for p in positions)
    return max(p.notional for p in positions) / gross if gross else 0.0


@dataclass(frozen=True)
class ProfileMetrics:
    """The quantities the rule reads (module docstring)."""

    trailing_volume: int
    equity: int
    bought: int
    sold: int
    two_sided: float
    episodes_30d: int
    episodes_90d: int
    backstops_90d: int
    market_share: float
    largest_notional: int
    concentration: float


def profile_metrics(record: AccountRecord, now: int, episode_gap_s: int = 3600) -> ProfileMetrics:
    """:class:`ProfileMetrics` of ``record`` at ``now`` (flow over the trailing 30 days)."""
    since_30, since_90 = now - 30 * DAY_S, now - 90 * DAY_S
    recent = [f for f in record.history.fills if since_30 < f.at <= now]
    bought = sum(f.notional for f in recent if f.buy)
    sold = sum(f.notional for f in recent if not f.buy)
    episodes = liquidation_episodes(
        [t for t in record.history.liquidations if t <= now], episode_gap_s
    )
    share, largest = largest_market_share(record.positions)
    return ProfileMetrics(
        trailing_volume=record.trailing_volume,
        equity=record.equity,
        bought=bought,
        sold=sold,
        two_sided=two_sidedness(bought, sold),
        episodes_30d=sum(1 for t in episodes if t > since_30),
        episodes_90d=sum(1 for t in episodes if t > since_90),
        backstops_90d=sum(1 for t in record.history.backstops if since_90 < t <= now),
        market_share=share,
        largest_notional=largest,
        concentration=account_concentration(record.positions),
    )


# ---------------------------------------------------------------------------------------------
# The class table and the rule


@dataclass(frozen=True)
class AccountClass:
    """One class as governance defines it (``ProfileRegistry.define_class``)."""

    class_id: int
    name: str
    multiplier: int  # WAD
    min_volume: int = 0  # USD WAD, the owner's trailing 30-day volume
    min_equity: int = 0  # USD WAD, the subaccount's equity

    def as_tuple(self) -> tuple[int, int, int]:
        """``AccountClass(multiplier, min_volume, min_equity)`` for ``define_class``."""
        return (self.multiplier, self.min_volume, self.min_equity)


@dataclass(frozen=True)
class ProfileRules:
    """The off-chain thresholds of the rule (module docstring)."""

    maker_two_sided: float = 0.8
    active_two_sided: float = 0.5
    dominant_share: float = 0.25
    dominant_min_notional: int = 1_000_000 * WAD
    eligibility_buffer: float = 0.05
    episode_gap_s: int = 3600


@dataclass(frozen=True)
class ClassTable:
    """The classes by name, and the rule's thresholds."""

    classes: tuple[AccountClass, ...]
    rules: ProfileRules = field(default_factory=ProfileRules)

    def __post_init__(self) -> None:
        validate_table(self)

    def by_name(self, name: str) -> AccountClass:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(f"no class named {name!r}")

    def multiplier(self, class_id: int) -> int:
        """A class's multiplier (WAD; 1x for the default class 0)."""
        if class_id == 0:
            return WAD
        return next(c.multiplier for c in self.classes if c.class_id == class_id)


RULE_ORDER = (
    "backstopped",
    "repeat_liquidated",
    "liquidated",
    "dominant",
    "maker",
    "active",
)
PENALTIES = {"backstopped", "repeat_liquidated", "liquidated", "dominant"}
DISCOUNTS = {"maker", "active"}


def validate_table(table: ClassTable) -> None:
    """Raise ``ValueError`` naming the class when the table breaks a rule of the docstring."""
    ids = [c.class_id for c in table.classes]
    if len(set(ids)) != len(ids) or not all(1 <= i <= MAX_CLASS_ID for i in ids):
        raise ValueError(f"class ids must be distinct, 1 to 7: {ids}")
    names = {c.name for c in table.classes}
    if names != set(RULE_ORDER):
        raise ValueError(f"the table must define exactly {', '.join(RULE_ORDER)}; got {names}")
    for c in table.classes:
        if not MIN_CLASS_MULTIPLIER <= c.multiplier <= MAX_CLASS_MULTIPLIER:
            raise ValueError(f"class {c.name}: multiplier {c.multiplier / WAD}x outside [0.8, 2]")
        if c.name in PENALTIES and (c.multiplier < WAD or c.min_volume or c.min_equity):
            raise ValueError(f"class {c.name}: a penalty is >= 1x with no on-chain eligibility")
        if c.name in DISCOUNTS and (c.multiplier > WAD or not c.min_volume or not c.min_equity):
            raise ValueError(f"class {c.name}: a discount is <= 1x with both on-chain minimums")
    r = table.rules
    if not 0 <= r.active_two_sided <= r.maker_two_sided <= 1:
        raise ValueError("two-sided thresholds must satisfy 0 <= active <= maker <= 1")
    if not 0 < r.dominant_share <= 1 or r.eligibility_buffer < 0 or r.episode_gap_s < 0:
        raise ValueError("dominant_share in (0, 1], eligibility_buffer and episode_gap_s >= 0")


@dataclass(frozen=True)
class ClassDecision:
    """The class the rule gives an account, and why (for the keeper's log)."""

    class_id: int
    name: str
    reason: str


def _clears(value: int, minimum: int, buffer: float) -> bool:
    return value >= minimum + int(minimum * buffer)


def derive_class(m: ProfileMetrics, table: ClassTable) -> ClassDecision:
    """The first class of the rule whose condition ``m`` meets (module docstring)."""
    r = table.rules
    c = table.by_name
    if m.backstops_90d:
        return ClassDecision(c("backstopped").class_id, "backstopped", "backstopped in 90 days")
    if m.episodes_30d >= 2:
        cls = c("repeat_liquidated")
        return ClassDecision(cls.class_id, cls.name, f"{m.episodes_30d} liquidations in 30 days")
    if m.episodes_30d == 1:
        return ClassDecision(c("liquidated").class_id, "liquidated", "liquidated in 30 days")
    if m.market_share >= r.dominant_share and m.largest_notional >= r.dominant_min_notional:
        return ClassDecision(
            c("dominant").class_id,
            "dominant",
            f"largest position {m.market_share:.0%} of its market's open interest",
        )
    clean = m.episodes_90d == 0 and m.market_share < r.dominant_share
    for name, two_sided in (("maker", r.maker_two_sided), ("active", r.active_two_sided)):
        cls = c(name)
        if (
            clean
            and m.two_sided >= two_sided
            and _clears(m.trailing_volume, cls.min_volume, r.eligibility_buffer)
            and _clears(m.equity, cls.min_equity, r.eligibility_buffer)
        ):
            return ClassDecision(
                cls.class_id,
                name,
                f"two-sided {m.two_sided:.2f}, volume USD {m.trailing_volume / WAD:,.0f},"
                f" equity USD {m.equity / WAD:,.0f}",
            )
    return ClassDecision(0, "default", "no rule applies")


def derive(record: AccountRecord, now: int, table: ClassTable) -> ClassDecision:
    """:func:`derive_class` of :func:`profile_metrics`."""
    return derive_class(profile_metrics(record, now, table.rules.episode_gap_s), table)


@dataclass(frozen=True)
class ProfileChange:
    """A profile the keeper should sign for ``(owner, subaccount)``."""

    owner: str
    subaccount: int
    class_id: int
    reason: str


def profiles_to_sign(
    decisions: Mapping[Key, ClassDecision],
    current: Mapping[Key, tuple[int, int]],
    now: int,
    refresh_s: int,
) -> list[ProfileChange]:
    """The updates to sign: a class that differs from the one in force (``current`` maps an
    account to its registry profile ``(class_id, expires_at)``; expired means 0), or the same
    non-default class expiring within ``refresh_s``. Accounts absent from ``decisions`` are
    left alone."""
    out: list[ProfileChange] = []
    for key, d in sorted(decisions.items()):
        class_id, expires_at = current.get(key, (0, 0))
        in_force = class_id if class_id and expires_at >= now else 0
        if d.class_id != in_force:
            out.append(ProfileChange(*key, d.class_id, f"{in_force} -> {d.class_id}: {d.reason}"))
        elif d.class_id and expires_at - now <= refresh_s:
            out.append(ProfileChange(*key, d.class_id, f"refresh {d.name}: {d.reason}"))
    return out


def profile_model_hash(table: ClassTable) -> bytes:
    """keccak-256 of the canonical JSON (sorted keys, no spaces) of the version and the table."""
    body = {
        "version": PROFILE_MODEL_VERSION,
        "classes": [asdict(c) for c in table.classes],
        "rules": asdict(table.rules),
    }
    return keccak(text=json.dumps(body, sort_keys=True, separators=(",", ":")))


@dataclass(frozen=True)
class ProfileConfig:
    """The ``profiles:`` section of the shipped risk configuration (``deploy/risk.yaml``).

    ``tables`` holds one :class:`ClassTable` per deployment scale (``testnet``, ``devnet``): the
    classes, multipliers and rules are the same, the on-chain eligibility minimums (and the
    dominance floor) follow the size of the markets. ``heartbeat`` is how long a signed class
    stays in force; ``[min_multiplier, max_multiplier]`` the registry's class bounds.
    """

    heartbeat: int
    min_multiplier: int
    max_multiplier: int
    tables: Mapping[str, ClassTable]

    def table(self, scale: str) -> ClassTable:
        """The class table of a deployment scale; ``KeyError`` naming the scales otherwise."""
        try:
            return self.tables[scale]
        except KeyError:
            raise KeyError(
                f"no profile table {scale!r} (the configuration has {sorted(self.tables)})"
            ) from None


def _usd(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: expected a whole number of USD >= 0, got {value!r}")
    return value * WAD


def parse_profiles(raw: Mapping[str, object], where: str = "profiles") -> ProfileConfig:
    """The ``profiles:`` section (see ``deploy/risk.yaml``); ``ValueError`` naming the key.

    Keys: ``heartbeat`` (seconds), ``class_bounds`` (``min_multiplier``, ``max_multiplier``),
    ``rules`` (:class:`ProfileRules` fields, the dominance floor excepted), ``classes`` (``id``,
    ``name``, ``multiplier``), ``eligibility`` (per scale: ``maker`` and ``active`` with
    ``min_volume_usd`` and ``min_equity_usd``, and ``dominant_min_notional_usd``).
    """
    from offchain.protocol.deploy_config import seconds, wad

    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping")
    known = {"heartbeat", "class_bounds", "rules", "classes", "eligibility"}
    if set(raw) != known:
        raise ValueError(f"{where}: expected keys {sorted(known)}, got {sorted(raw)}")
    heartbeat = seconds(raw["heartbeat"], f"{where}.heartbeat")
    bounds = raw["class_bounds"]
    if not isinstance(bounds, Mapping) or set(bounds) != {"min_multiplier", "max_multiplier"}:
        raise ValueError(f"{where}.class_bounds: expected min_multiplier and max_multiplier")
    low = wad(bounds["min_multiplier"], f"{where}.class_bounds.min_multiplier")
    high = wad(bounds["max_multiplier"], f"{where}.class_bounds.max_multiplier")
    rules_raw = raw["rules"]
    if not isinstance(rules_raw, Mapping):
        raise ValueError(f"{where}.rules: expected a mapping")
    rule_fields = set(ProfileRules.__dataclass_fields__) - {"dominant_min_notional"}
    unknown = sorted(set(rules_raw) - rule_fields)
    if unknown:
        raise ValueError(f"{where}.rules: unknown key(s) {unknown}")
    classes_raw = raw["classes"]
    if not isinstance(classes_raw, Sequence) or isinstance(classes_raw, str):
        raise ValueError(f"{where}.classes: expected a list")
    base: list[tuple[int, str, int]] = []
    for i, c in enumerate(classes_raw):
        w = f"{where}.classes[{i}]"
        if not isinstance(c, Mapping) or set(c) != {"id", "name", "multiplier"}:
            raise ValueError(f"{w}: expected id, name and multiplier")
        base.append((c["id"], str(c["name"]), wad(c["multiplier"], f"{w}.multiplier")))
    scales = raw["eligibility"]
    if not isinstance(scales, Mapping) or not scales:
        raise ValueError(f"{where}.eligibility: expected a mapping of scales")
    tables: dict[str, ClassTable] = {}
    for scale, e in scales.items():
        w = f"{where}.eligibility.{scale}"
        if not isinstance(e, Mapping) or set(e) != {"maker", "active", "dominant_min_notional_usd"}:
            raise ValueError(f"{w}: expected maker, active and dominant_min_notional_usd")
        minimums: dict[str, tuple[int, int]] = {}
        for name in ("maker", "active"):
            m = e[name]
            if not isinstance(m, Mapping) or set(m) != {"min_volume_usd", "min_equity_usd"}:
                raise ValueError(f"{w}.{name}: expected min_volume_usd and min_equity_usd")
            minimums[name] = (
                _usd(m["min_volume_usd"], f"{w}.{name}.min_volume_usd"),
                _usd(m["min_equity_usd"], f"{w}.{name}.min_equity_usd"),
            )
        rules = ProfileRules(
            **dict(rules_raw),  # type: ignore[arg-type]
            dominant_min_notional=_usd(
                e["dominant_min_notional_usd"], f"{w}.dominant_min_notional_usd"
            ),
        )
        classes = tuple(
            AccountClass(class_id, name, multiplier, *minimums.get(name, (0, 0)))
            for class_id, name, multiplier in base
        )
        try:
            tables[str(scale)] = ClassTable(classes, rules)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{w}: {exc}") from None
    for table in tables.values():
        for c in table.classes:
            if not low <= c.multiplier <= high:
                raise ValueError(
                    f"{where}.classes: {c.name} at {c.multiplier / WAD}x outside the class"
                    f" bounds [{low / WAD}, {high / WAD}]"
                )
    return ProfileConfig(heartbeat, low, high, tables)


__all__ = [
    "AccountClass",
    "AccountHistory",
    "AccountRecord",
    "BackstopEvent",
    "ClassDecision",
    "ClassTable",
    "Fill",
    "LiquidationEvent",
    "PositionView",
    "ProfileChange",
    "ProfileConfig",
    "ProfileMetrics",
    "ProfileRules",
    "TradeEvent",
    "account_concentration",
    "derive",
    "derive_class",
    "fold_events",
    "largest_market_share",
    "liquidation_episodes",
    "parse_profiles",
    "profile_metrics",
    "profile_model_hash",
    "profiles_to_sign",
    "two_sidedness",
    "validate_table",
]
