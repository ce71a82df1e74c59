"""An independent model of the margin engine, for the stateful fuzz and the adversarial tests.

The model's *state* is plain Python: per subaccount its collateral, positions (size, open
notional) and funding snapshots; per market the stored funding index, its last touch, the
stored price and its feed time, the feed (answer, time, decimals, whether it reverts), the
registry's pushed state and the engine's settings; the bad debt, the pause flags and the
engine's token balance. Its *expected values* come from the references:
:mod:`offchain.protocol.engine_math` (health, the partial-close rule, the penalty, the ADL
transfer, funding accrual, the mark price, the activity accumulators) and
:mod:`offchain.protocol.margin_math` (keeper updates and their rejections), plus exact
``Fraction`` arithmetic where a value follows from the README by hand.

No contract code path is copied. A position change is the README's account maths: the cash of
a fill is ``-ceil(s * p)`` buying and ``+floor(|s| * p)`` selling; the account's ledger
``collateral - open_notional`` moves by exactly that cash; the open notional afterwards is the
cost basis (grown by the cost, reduced in proportion to the part closed, toward zero, or, on a
flip, the new side's cost rounded against the account), so realised PnL lands in collateral.
Unpaid funding ``ceil(s * (index - snapshot))`` settles into collateral first.

Every operation either raises :class:`Revert` with the reason the engine must give (and leaves
the model untouched) or applies and returns what the engine must return. The model also keeps
``kept``: the rounding the engine keeps (one wei per fill whose notional is not a whole wei,
the fraction of a wei each funding settlement rounds up), for the conservation identity.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from offchain import WAD
from offchain.protocol import engine_math as em
from offchain.protocol import margin_math as mm
from offchain.protocol.signing import RiskUpdate

MASK_96 = 2**96 - 1
MASK_128 = 2**128 - 1
MAX_POSITIONS = 8
MAX_FUND_MARKETS = 32
INDEX_BOUND = 2**95  # the funding index is packed in 96 signed bits
MAX_RESERVE_SECONDS = 86_400
MAX_BACKSTOP_REWARD = 100 * WAD

Key = tuple[str, int]


class Revert(Exception):  # noqa: N818 - the engine's revert
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def cash_of(delta: int, price: int) -> int:
    """What a fill of ``delta`` at ``price`` pays (< 0) or credits (> 0): README rounding."""
    value = Fraction(abs(delta) * price, WAD)
    return -math.ceil(value) if delta > 0 else math.floor(value)


def grows(old: int, new: int) -> bool:
    """A side grows when it opens, flips or gets larger (README trade rules)."""
    return new != 0 and (old == 0 or (old > 0) != (new > 0) or abs(new) > abs(old))


@dataclass
class Feed:
    decimals: int
    answer: int
    updated_at: int
    reverting: bool = False

    def reading(self, now: int, max_age: int) -> em.FeedReading:
        """The README's oracle policy: fresh when the call succeeds, the answer is positive and
        its time neither in the future nor older than the max age; stale when only the age is
        wrong; invalid otherwise (values that do not fit the engine's packing included)."""
        invalid = em.FeedReading(0, 0, "invalid")
        if self.reverting or self.answer <= 0 or self.answer > MASK_96 or self.updated_at > now:
            return invalid
        price = self.answer * 10 ** (18 - self.decimals)
        if price > MASK_96 or self.updated_at >= 2**32:
            return invalid
        if now - self.updated_at > max_age:
            return em.FeedReading(price, self.updated_at, "stale")
        return em.FeedReading(price, self.updated_at, "ok")


@dataclass
class Market:
    tiers: tuple[mm.Tier, ...]
    guardrails: mm.Guardrails
    initial_ratio: int
    feed: Feed
    max_price_age: int
    price_band: int
    liquidation_fee: int
    liquidator_share: int
    oi_cap: int
    state: mm.MarketState = field(default_factory=mm.MarketState)  # the registry's, pushed
    index: int = 0  # stored funding index
    touch: int = 0  # its time
    price: int = 0  # last good price stored at the last touch
    price_time: int = 0  # its feed time
    bounds: tuple[int, int] | None = None  # (min, max) WAD
    reserve_seconds: int = 0
    premium: tuple[int, int] = (0, 0)


@dataclass
class Account:
    collateral: int = 0
    positions: dict[int, tuple[int, int]] = field(default_factory=dict)  # size, open notional
    snapshots: dict[int, int] = field(default_factory=dict)
    isolated: int = 0


def atomic(op):
    """Run a model operation on the live state; restore it when the operation reverts."""

    @functools.wraps(op)
    def run(self: EngineModel, *args, **kwargs):
        saved = copy.deepcopy({k: v for k, v in self.__dict__.items() if k != "order"})
        try:
            return op(self, *args, **kwargs)
        except Revert:
            self.__dict__.update(saved)
            raise

    return run


class EngineModel:
    def __init__(self, engine: str, token_scale: int) -> None:
        self.me = str(engine)
        self.fund: Key = (self.me, 0)
        self.scale = token_scale
        self.markets: dict[int, Market] = {}
        self.accounts: dict[Key, Account] = {}
        self.volumes: dict[str, em.VolumeBuckets] = {}
        self.bad_debt = 0
        self.paused = False
        self.registry_paused = False
        self.backstop_reward = 0
        self.balance = 0  # token units held by the engine
        self.kept = Fraction(0)
        self.now = 0
        # The engine's order of an account's markets (the first failing one names a strict
        # check's revert); the machine reads it from the chain, by default the model's own.
        self.order: Callable[[Key], list[int]] = lambda key: list(self.acct(key).positions)

    # ---------------------------------------------------------------------------- views

    def acct(self, key: Key) -> Account:
        key = (str(key[0]), int(key[1]))
        if key not in self.accounts:
            self.accounts[key] = Account()
        return self.accounts[key]

    def size(self, key: Key, m: int) -> int:
        return self.acct(key).positions.get(m, (0, 0))[0]

    def reading(self, m: int) -> em.FeedReading:
        mk = self.markets[m]
        return mk.feed.reading(self.now, mk.max_price_age)

    def mark(self, m: int) -> tuple[int, int, str]:
        mk = self.markets[m]
        try:
            return em.mark_price(self.reading(m), mk.price, mk.price_time)
        except ValueError as e:
            raise Revert(str(e)) from None

    def index_now(self, m: int) -> int:
        mk = self.markets[m]
        s = mk.state
        growth = em.funding_accrued(
            s.funding_rate, s.updated_at, mk.guardrails.heartbeat, mk.touch, self.now, mk.price
        )
        return mk.index + growth

    def view(self, m: int) -> em.MarketView:
        mk = self.markets[m]
        return em.MarketView(
            tiers=mk.tiers,
            guardrails=mk.guardrails,
            initial_ratio=mk.initial_ratio,
            state=mk.state,
            price=self.mark(m)[0],
            index=self.index_now(m),
            reserve_seconds=mk.reserve_seconds,
        )

    def health(self, key: Key) -> em.Health:
        a = self.acct(key)
        positions = {
            m: em.Position(s, n, a.snapshots.get(m, 0)) for m, (s, n) in a.positions.items()
        }
        markets = {m: self.view(m) for m in positions}
        return em.health(em.AccountView(a.collateral, positions), markets, {}, self.now)

    def liquidatable(self, key: Key) -> bool:
        if key[0] == self.me:
            return False
        h = self.health(key)
        return h.equity < h.maintenance

    def fund_equity(self) -> int:
        return self.health(self.fund).equity

    def insurance_fund(self) -> int:
        return max(self.fund_equity(), 0)

    def deficit(self) -> int:
        return self.bad_debt + max(-self.fund_equity(), 0)

    def open_interest(self, m: int) -> int:
        return sum(max(a.positions.get(m, (0, 0))[0], 0) for a in self.accounts.values())

    def short_interest(self, m: int) -> int:
        return sum(max(-a.positions.get(m, (0, 0))[0], 0) for a in self.accounts.values())

    def active(self) -> set[Key]:
        return {k for k, a in self.accounts.items() if a.positions and k[0] != self.me}

    def rounding_open(self) -> Fraction:
        """What the marks round away from every open position right now: ``s*p - floor(s*p)``
        of each value plus ``ceil(owed) - owed`` of each unpaid funding (both >= 0)."""
        total = Fraction(0)
        for a in self.accounts.values():
            for m, (s, _) in a.positions.items():
                value = Fraction(s * self.mark(m)[0], WAD)
                owed = Fraction(s * (self.index_now(m) - a.snapshots.get(m, 0)), WAD)
                total += value - math.floor(value) + math.ceil(owed) - owed
        return total

    # ----------------------------------------------------------------- building blocks

    def accrue(self, m: int) -> int:
        """Bring the index to now and store the freshest price known (README funding)."""
        mk = self.markets[m]
        index = self._checked_index(self.index_now(m))
        r = self.reading(m)
        if r.status == "ok" or (r.status == "stale" and r.time > mk.price_time):
            mk.price, mk.price_time = r.price, r.time
        mk.index, mk.touch = index, self.now
        return index

    @staticmethod
    def _checked_index(index: int) -> int:
        if not -INDEX_BOUND < index < INDEX_BOUND:
            raise Revert("engine: funding index out of range")
        return index

    def _fill(self, key: Key, m: int, delta: int, price: int, index: int) -> int:
        """One side of a fill (module docstring); returns its cash."""
        a = self.acct(key)
        size, notional = a.positions.get(m, (0, 0))
        if size != 0:
            owed = Fraction(size * (index - a.snapshots.get(m, 0)), WAD)
            a.collateral -= math.ceil(owed)
            self.kept += math.ceil(owed) - owed
        a.snapshots[m] = index
        cash = cash_of(delta, price)
        new = size + delta
        if new == 0:
            after = 0
        elif grows(size, new) and (size == 0 or (size > 0) == (new > 0)):
            after = notional - cash  # the cost goes into the basis
        elif (size > 0) == (new > 0):
            after = notional - int(Fraction(notional * abs(delta), abs(size)))  # toward zero
        else:  # a flip: the new side's cost, rounded against the account
            after = math.ceil(Fraction(new * price, WAD)) if new > 0 else -cash_of(new, price)
        a.collateral += cash + (after - notional)
        if size == 0:
            self._opens(key, m)
        if new == 0:
            del a.positions[m]
        else:
            a.positions[m] = (new, after)
        return cash

    def _opens(self, key: Key, m: int) -> None:
        a = self.acct(key)
        if key[0] == self.me:
            if len(a.positions) >= MAX_FUND_MARKETS:
                raise Revert("engine: insurance fund holds 32 markets")
            return
        if a.isolated not in (0, m):
            raise Revert("engine: isolated")
        if len(a.positions) >= MAX_POSITIONS:
            raise Revert("engine: too many positions")

    def _move(self, m: int, to: Key, frm: Key, size: int, price: int, index: int) -> None:
        """``size`` moves from ``frm`` to ``to`` at ``price``; the receiver buys when > 0."""
        cash = self._fill(to, m, size, price, index) + self._fill(frm, m, -size, price, index)
        assert cash <= 0  # a fill never pays out more than it takes in
        self.kept += -cash

    def _strict(self, key: Key, order: list[int]) -> None:
        """Opening, growing and withdrawing need fresh prices inside the bounds everywhere."""
        for m in order:
            price, _, status = self.mark(m)
            if status != "ok":
                raise Revert(f"engine: {'stale' if status == 'stale' else 'invalid'} price")
            self._inside_bounds(m, price)

    def _inside_bounds(self, m: int, price: int) -> None:
        bounds = self.markets[m].bounds
        if bounds is not None and not bounds[0] < price < bounds[1]:
            raise Revert("engine: price at feed bound")

    def _listed(self, m: int) -> Market:
        if m not in self.markets:
            raise Revert("engine: unknown market")
        return self.markets[m]

    # -------------------------------------------------------------------- collateral

    @atomic
    def deposit(self, key: Key, amount: int) -> None:
        if amount == 0:
            raise Revert("engine: zero amount")
        self.acct(key).collateral += amount * self.scale
        self.balance += amount

    @atomic
    def fund_insurance(self, amount: int) -> None:
        """A top-up, then the fund's equity repays what bad debt it can (README, bad debt)."""
        self.deposit(self.fund, amount)
        self._repay()

    @atomic
    def repay_bad_debt(self) -> int:
        return self._repay()

    def _repay(self) -> int:
        """min(bad debt, the fund's marked equity if positive) moves from the fund's collateral
        to the bad debt: the fund never goes below zero equity for it."""
        equity = self.fund_equity()
        if self.bad_debt == 0 or equity <= 0:
            return 0
        repaid = min(self.bad_debt, equity)
        self.bad_debt -= repaid
        self.acct(self.fund).collateral -= repaid
        return repaid

    @atomic
    def withdraw(self, key: Key, amount: int) -> None:
        if amount == 0:
            raise Revert("engine: zero amount")
        self.acct(key).collateral -= amount * self.scale
        self._strict(key, self.order(key))
        h = self.health(key)
        if h.cash < 0:
            raise Revert("engine: insufficient collateral")
        if h.equity < h.initial:
            raise Revert("engine: below initial margin")
        self.balance -= amount

    @atomic
    def set_isolated(self, key: Key, m: int) -> None:
        if self.acct(key).positions:
            raise Revert("engine: open positions")
        if m != 0:
            self._listed(m)
        self.acct(key).isolated = m

    # ----------------------------------------------------------------------- trading

    @atomic
    def settle_trade(self, m: int, maker: Key, taker: Key, size: int, price: int) -> None:
        maker, taker = (str(maker[0]), int(maker[1])), (str(taker[0]), int(taker[1]))
        if size == 0:
            raise Revert("engine: zero size")
        if maker == taker:
            raise Revert("engine: self trade")
        mk = self._listed(m)
        mark, _, status = self.mark(m)
        if abs(price - mark) * WAD > mk.price_band * mark:
            raise Revert("engine: price outside band")
        t_old, m_old = self.size(taker, m), self.size(maker, m)
        sides = {taker: grows(t_old, t_old + size), maker: grows(m_old, m_old - size)}
        for key, grown in sides.items():
            if key[0] == self.me and (key[1] != 0 or grown):
                raise Revert("engine: insurance fund may only reduce")
        if any(sides.values()):
            if self.paused:
                raise Revert("engine: paused")
            if status != "ok":
                raise Revert(f"engine: {'stale' if status == 'stale' else 'invalid'} price")
            self._inside_bounds(m, mark)
        before = {k: self.health(k) for k, g in sides.items() if not g and k[0] != self.me}
        orders = {k: self.order(k) for k in sides}
        index = self.accrue(m)
        oi = self.open_interest(m)
        self._move(m, taker, maker, size, price, index)
        new_oi = self.open_interest(m)
        assert new_oi == self.short_interest(m)
        if new_oi > oi and math.ceil(Fraction(new_oi * mark, WAD)) > mk.oi_cap:
            raise Revert("engine: open interest cap")
        notional = abs(size) * price // WAD
        # A fill between two subaccounts of one owner is a transfer: no premium, no volume
        # (README, the engine's activity row).
        if taker[0] != maker[0]:
            mk.premium = em.add_premium(*mk.premium, notional, price, mark)
            for owner in (taker[0], maker[0]):
                if owner != self.me:
                    buckets = self.volumes.get(owner, em.VolumeBuckets())
                    self.volumes[owner] = buckets.add(notional, self.now)
        for key, grown in sides.items():
            order = [x for x in orders[key] if x in self.acct(key).positions]
            if m in self.acct(key).positions and m not in order:
                order.append(m)
            self._check_side(key, grown, before.get(key), order)

    def _check_side(self, key: Key, grown: bool, before: em.Health | None, order) -> None:
        """README: a growing side meets initial margin at fresh prices; a reducing side meets
        maintenance, or keeps equity >= 0 and an equity / maintenance ratio no lower."""
        if key[0] == self.me:
            return
        if grown:
            self._strict(key, order)
            h = self.health(key)
            if h.equity < h.initial:
                raise Revert("engine: below initial margin")
            return
        h = self.health(key)
        if h.equity >= h.maintenance:
            return
        assert before is not None
        if h.equity < 0 or h.equity * before.maintenance < before.equity * h.maintenance:
            raise Revert("engine: below maintenance margin")

    # ------------------------------------------------------------------- liquidation

    @atomic
    def liquidate(self, liq: Key, victim: Key, m: int, size: int) -> tuple[int, int, int]:
        """Returns (closed, penalty, liquidator reward)."""
        if size == 0:
            raise Revert("engine: zero size")
        if victim[0] == self.me:
            raise Revert("engine: insurance account")
        if victim == liq:
            raise Revert("engine: self liquidation")
        mk = self._listed(m)
        h = self.health(victim)
        if h.equity >= h.maintenance:
            raise Revert("engine: account healthy")
        if h.equity < 0:
            raise Revert("engine: negative equity, backstop the account")
        j = self._leg(h, m)
        leg = h.legs[j]
        cap = em.closable(h, j, mk.liquidation_fee, self.view(m), {}, self.now)
        closed = min(size, cap)
        if closed != abs(leg.size) and (abs(leg.size) - closed) * leg.price // WAD < (
            em.DUST_NOTIONAL
        ):
            raise Revert("engine: remainder below dust")
        index = self.accrue(m)
        delta = closed if leg.size > 0 else -closed
        self._move(m, liq, victim, delta, leg.price, index)
        rate = em.fee_rate(leg, mk.liquidation_fee)
        penalty = em.penalty(closed, leg.price, rate, h.equity)
        reward = penalty * mk.liquidator_share // WAD
        self.acct(victim).collateral -= penalty
        self.acct(liq).collateral += reward
        self.acct(self.fund).collateral += penalty - reward
        lh = self.health(liq)
        if lh.equity < lh.initial:
            raise Revert("engine: liquidator below initial margin")
        return closed, penalty, reward

    @staticmethod
    def _leg(h: em.Health, m: int) -> int:
        try:
            return h.leg(m)
        except ValueError as e:
            raise Revert(str(e)) from None

    @atomic
    def backstop(self, caller: str, victim: Key) -> tuple[int, int, int, int]:
        """Returns (equity, covered, bad debt added, caller's reward)."""
        if victim[0] == self.me:
            raise Revert("engine: insurance account")
        h = self.health(victim)
        if h.equity >= 0:
            raise Revert("engine: above backstop threshold")
        for leg in h.legs:
            index = self.accrue(leg.market_id)
            self._move(leg.market_id, self.fund, victim, leg.size, leg.price, index)
        a, f = self.acct(victim), self.acct(self.fund)
        # Closing everything at the mark leaves the account's collateral at its equity.
        assert a.collateral == h.equity, (a.collateral, h.equity)
        shortfall = -a.collateral
        covered = min(shortfall, max(f.collateral, 0))
        f.collateral -= covered
        self.bad_debt += shortfall - covered
        a.collateral = 0
        reward = min(self.backstop_reward, max(f.collateral, 0))
        f.collateral -= reward
        self.acct((caller, 0)).collateral += reward
        return h.equity, covered, shortfall - covered, reward

    @atomic
    def deleverage(self, victim: Key, m: int, size: int) -> dict[str, int]:
        """Returns the ``Deleveraged`` event's figures."""
        if size == 0:
            raise Revert("engine: zero size")
        if victim[0] == self.me:
            raise Revert("engine: insurance account")
        self._listed(m)
        deficit = self.deficit()
        if deficit == 0:
            raise Revert("engine: no deficit to recover")
        fund_size = self.size(self.fund, m)
        if fund_size == 0:
            raise Revert("engine: insurance fund holds no position in the market")
        h = self.health(victim)
        leg = h.legs[self._leg(h, m)]
        if (leg.size > 0) == (fund_size > 0):
            raise Revert("engine: position on the insurance fund's side")
        if h.equity <= 1:
            raise Revert("engine: no equity to deleverage")
        closed = min(size, abs(leg.size), abs(fund_size))
        transfer = em.adl_transfer(deficit, closed, fund_size, h.equity)
        index = self.accrue(m)
        delta = closed if leg.size > 0 else -closed
        self._move(m, self.fund, victim, delta, leg.price, index)
        self.acct(victim).collateral -= transfer
        repaid = min(transfer, self.bad_debt)
        self.bad_debt -= repaid
        self.acct(self.fund).collateral += transfer - repaid
        return {
            "size": -delta,
            "price": leg.price,
            "transfer": transfer,
            "unrealised_pnl": leg.value - leg.open_notional,
            "equity": h.equity,
            "deficit_after": self.deficit(),
        }

    # ------------------------------------------------------------- markets, governance

    @atomic
    def poke(self, m: int) -> None:
        self._listed(m)
        self.accrue(m)

    @atomic
    def keeper_update(self, update: RiskUpdate) -> None:
        """A signed update through the registry, which pushes it into the engine: funding is
        accrued under the previous update first (at the stored price) when the rate changes or
        the market was stale."""
        if self.registry_paused:
            raise Revert("registry: paused")
        if update.market_id not in self.markets:
            raise Revert("registry: unknown market")
        mk = self.markets[update.market_id]
        try:
            new = mm.apply_update(mk.state, mk.guardrails, update, self.now)
        except mm.UpdateRejected as e:
            raise Revert(e.reason) from None
        old = mk.state
        stale = old.updated_at == 0 or self.now - old.updated_at > mk.guardrails.heartbeat
        if stale or old.funding_rate != update.funding_rate:
            mk.index = self._checked_index(self.index_now(update.market_id))
            mk.touch = self.now
        mk.state = new

    @atomic
    def configure_tiers(self, m: int, tiers: tuple[mm.Tier, ...]) -> None:
        """Governance replaces a market's tiers in the registry, which pushes them; the engine
        accrues funding first."""
        self.accrue(m)
        self.markets[m].tiers = tuple(tiers)

    @atomic
    def set_price_bounds(self, m: int, low: int, high: int) -> None:
        """Bounds in the feed's decimals, as the aggregator's min/max answer."""
        mk = self._listed(m)
        if low == 0 and high == 0:
            mk.bounds = None
            return
        if low < 0 or low >= high:
            raise Revert("engine: bad price bounds")
        scale = 10 ** (18 - mk.feed.decimals)
        if high * scale > MASK_128:
            raise Revert("engine: bad price bounds")
        mk.bounds = (low * scale, high * scale)

    @atomic
    def set_funding_reserve(self, m: int, seconds: int) -> None:
        mk = self._listed(m)
        if seconds > MAX_RESERVE_SECONDS:
            raise Revert("engine: funding reserve above a day")
        mk.reserve_seconds = seconds

    @atomic
    def set_backstop_reward(self, amount: int) -> None:
        if amount > MAX_BACKSTOP_REWARD:
            raise Revert("engine: backstop reward above 100 USD")
        self.backstop_reward = amount


__all__ = [
    "MAX_POSITIONS",
    "Account",
    "EngineModel",
    "Feed",
    "Key",
    "Market",
    "Revert",
    "cash_of",
    "grows",
]
