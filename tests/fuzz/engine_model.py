"""Pure-Python model of ``contracts/MarginEngine.vy``, equal to the contract to the wei.

Every operation works on a copy of the state and either returns the revert string the
contract would raise (state untouched) or commits. Margin requirements and funding rates are
read from the registry (its own reference lives in ``offchain/protocol/margin_math.py``), feeds are
modelled as (WAD price, updated_at) pairs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

WAD = 10**18
MAX_POSITIONS = 8
LIQUIDATION_BUFFER = 10**17
DEEP_UNDERWATER = 5 * 10**17
DUST_NOTIONAL = 10 * WAD
OK, INVALID, STALE = 0, 1, 2
MASK_128 = 2**128 - 1


class Revert(Exception):  # noqa: N818 - mirrors the contract's revert
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def tdiv(a: int, b: int) -> int:
    """EVM signed division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def floor_div(x: int, d: int) -> int:
    return x // d  # Python floors


def ceil_div(x: int, d: int) -> int:
    return -((-x) // d)


def ceil_mul(x: int, y: int) -> int:
    return ceil_div(x * y, WAD)


@dataclass
class Market:
    max_price_age: int
    price_band: int
    liquidation_fee: int
    liquidator_share: int
    oi_cap: int
    feed_price: int = 0  # WAD, <= 0 means invalid
    feed_updated: int = 0
    index: int = 0
    rate: int = 0
    time: int = 0
    last_price: int = 0
    oi: int = 0


@dataclass
class Account:
    collateral: int = 0
    positions: dict = field(default_factory=dict)  # market -> (size, open_notional)
    snapshots: dict = field(default_factory=dict)
    markets: list = field(default_factory=list)  # contract's list order
    isolated: int = 0


@dataclass
class Health:
    equity: int
    maintenance: int
    initial: int
    cash: int
    focus_size: int = 0
    focus_price: int = 0
    focus_notional: int = 0
    focus_maintenance: int = 0


class EngineModel:
    def __init__(
        self,
        engine_address: str,
        scale: int,
        margin: Callable[[int, int], tuple[int, int]],
        funding_rate: Callable[[int], int],
    ) -> None:
        self.me = engine_address
        self.scale = scale
        self.margin = margin
        self.funding_rate = funding_rate
        self.markets: dict[int, Market] = {}
        self.accounts: dict[tuple[str, int], Account] = {}
        self.active: list[tuple[str, int]] = []
        self.bad_debt = 0
        self.paused = False
        self.now = 0

    # --- helpers -------------------------------------------------------------------------
    def acct(self, owner: str, sub: int) -> Account:
        return self.accounts.setdefault((owner, sub), Account())

    def read_feed(self, m: int) -> tuple[int, int]:
        mk = self.markets[m]
        if mk.feed_price <= 0 or mk.feed_price > MASK_128:
            return 0, INVALID
        if mk.feed_updated > self.now or self.now - mk.feed_updated > mk.max_price_age:
            return mk.feed_price, STALE
        return mk.feed_price, OK

    def mark_price(self, m: int) -> tuple[int, int]:
        price, status = self.read_feed(m)
        if status == OK:
            return price, status
        if self.markets[m].last_price == 0:
            raise Revert("engine: no price")
        return self.markets[m].last_price, status

    @staticmethod
    def assert_fresh(status: int) -> None:
        if status == STALE:
            raise Revert("engine: stale price")
        if status != OK:
            raise Revert("engine: invalid price")

    def index_now(self, m: int) -> int:
        mk = self.markets[m]
        if mk.rate == 0 or mk.time >= self.now:
            return mk.index
        return mk.index + tdiv(mk.rate * mk.last_price * (self.now - mk.time), WAD)

    def accrue(self, m: int) -> int:
        mk = self.markets[m]
        if mk.time != self.now:
            mk.index = self.index_now(m)
        price, status = self.read_feed(m)
        if status != OK:
            price = mk.last_price
        mk.rate = self.funding_rate(m)
        mk.time = self.now
        mk.last_price = price
        return mk.index

    def health(self, owner: str, sub: int, strict: bool = False, focus: int = 0) -> Health:
        a = self.accounts.get((owner, sub), Account())
        h = Health(0, 0, 0, a.collateral)
        for m in list(a.markets) if owner != self.me else []:
            size, notional_open = a.positions[m]
            price, status = self.mark_price(m)
            if strict:
                self.assert_fresh(status)
            owed = ceil_div(size * (self.index_now(m) - a.snapshots.get(m, 0)), WAD)
            h.cash -= owed
            h.equity += floor_div(size * price, WAD) - notional_open
            notional = ceil_mul(abs(size), price)
            mm, im = self.margin(m, notional)
            h.maintenance += mm
            h.initial += im
            if m == focus:
                h.focus_size, h.focus_price = size, price
                h.focus_notional, h.focus_maintenance = notional, mm
        h.equity += h.cash
        return h

    def equity_any(self, owner: str, sub: int) -> int:
        """Equity including the insurance fund's positions (the contract's view omits them)."""
        a = self.accounts.get((owner, sub), Account())
        eq = a.collateral
        for m, (size, notional_open) in a.positions.items():
            if size == 0:
                continue
            price, _ = self.mark_price(m)
            eq -= ceil_div(size * (self.index_now(m) - a.snapshots.get(m, 0)), WAD)
            eq += floor_div(size * price, WAD) - notional_open
        return eq

    def is_liquidatable(self, owner: str, sub: int) -> bool:
        if owner == self.me:
            return False
        h = self.health(owner, sub)
        return h.equity < h.maintenance

    @staticmethod
    def grows(a: int, b: int) -> bool:
        if b == 0:
            return False
        if a == 0:
            return True
        if (a > 0) != (b > 0):
            return True
        return abs(b) > abs(a)

    @staticmethod
    def new_oi(oi: int, a: int, b: int) -> int:
        return oi - max(a, 0) + max(b, 0)

    def apply(self, owner: str, sub: int, m: int, delta: int, price: int, index: int):
        acc = self.acct(owner, sub)
        a, notional = acc.positions.get(m, (0, 0))
        collateral = acc.collateral
        if a != 0:
            snap = acc.snapshots.get(m, 0)
            if snap != index:
                collateral -= ceil_div(a * (index - snap), WAD)
        acc.snapshots[m] = index
        value = abs(delta) * price
        cash = -ceil_div(value, WAD) if delta > 0 else value // WAD
        b = a + delta
        if a == 0 or (a > 0 and b > a) or (a < 0 and b < a):
            notional -= cash
        elif b == 0 or (a > 0 and b > 0) or (a < 0 and b < 0):
            basis = tdiv(notional * (a - b), a)
            notional -= basis
            collateral += cash - basis
        else:
            opened = ceil_div(b * price, WAD) if b > 0 else -((-b) * price // WAD)
            collateral += cash - notional + opened
            notional = opened
        if b != 0 and not (-(2**127) < b < 2**127 and -(2**127) < notional < 2**127):
            raise Revert("engine: size overflow")
        acc.positions[m] = (b, notional if b != 0 else 0)
        if b == 0:
            del acc.positions[m]
        acc.collateral = collateral
        if owner != self.me:
            if a == 0:
                if acc.isolated not in (0, m):
                    raise Revert("engine: isolated")
                if not acc.markets:
                    self.active.append((owner, sub))
                if len(acc.markets) >= MAX_POSITIONS:
                    raise Revert("engine: too many positions")
                acc.markets.append(m)
            elif b == 0:
                i = acc.markets.index(m)
                last = acc.markets.pop()
                if i < len(acc.markets):
                    acc.markets[i] = last
                if not acc.markets:
                    j = self.active.index((owner, sub))
                    moved = self.active.pop()
                    if j < len(self.active):
                        self.active[j] = moved
        return a, b

    def _run(self, fn, *args):
        saved = copy.deepcopy((self.markets, self.accounts, self.active, self.bad_debt))
        try:
            return None, fn(*args)
        except Revert as exc:
            self.markets, self.accounts, self.active, self.bad_debt = saved
            return exc.reason, None

    # --- operations (return (revert reason or None, result)) ------------------------------
    def deposit(self, owner, sub, amount):
        def op():
            if amount == 0:
                raise Revert("engine: zero amount")
            self.acct(owner, sub).collateral += amount * self.scale

        return self._run(op)

    def fund_insurance(self, amount):
        def op():
            if amount == 0:
                raise Revert("engine: zero amount")
            self.acct(self.me, 0).collateral += amount * self.scale

        return self._run(op)

    def withdraw(self, owner, sub, amount):
        def op():
            if amount == 0:
                raise Revert("engine: zero amount")
            self.acct(owner, sub).collateral -= amount * self.scale
            h = self.health(owner, sub, strict=True)
            if h.cash < 0:
                raise Revert("engine: insufficient collateral")
            if h.equity < h.initial:
                raise Revert("engine: below initial margin")

        return self._run(op)

    def check_side(self, owner, sub, grows):
        if owner == self.me:
            return
        if grows:
            h = self.health(owner, sub, strict=True)
            if h.equity < h.initial:
                raise Revert("engine: below initial margin")
        else:
            h = self.health(owner, sub)
            if h.equity < h.maintenance:
                raise Revert("engine: below maintenance margin")

    def settle_trade(self, m, maker, maker_sub, taker, taker_sub, size, price):
        def op():
            if size == 0:
                raise Revert("engine: zero size")
            if (maker, maker_sub) == (taker, taker_sub):
                raise Revert("engine: self trade")
            if m not in self.markets:
                raise Revert("engine: unknown market")
            mk = self.markets[m]
            mark, status = self.mark_price(m)
            if abs(price - mark) * WAD > mk.price_band * mark:
                raise Revert("engine: price outside band")
            index = self.accrue(m)
            oi = mk.oi
            t_old, t_new = self.apply(taker, taker_sub, m, size, price, index)
            m_old, m_new = self.apply(maker, maker_sub, m, -size, price, index)
            mk.oi = self.new_oi(self.new_oi(oi, t_old, t_new), m_old, m_new)
            tg, mg = self.grows(t_old, t_new), self.grows(m_old, m_new)
            for who, sub, grows in ((taker, taker_sub, tg), (maker, maker_sub, mg)):
                if who == self.me and (sub != 0 or grows):
                    raise Revert("engine: insurance fund may only reduce")
            if tg or mg:
                if self.paused:
                    raise Revert("engine: paused")
                self.assert_fresh(status)
            if mk.oi > oi and ceil_mul(mk.oi, mark) > mk.oi_cap:
                raise Revert("engine: open interest cap")
            self.check_side(taker, taker_sub, tg)
            self.check_side(maker, maker_sub, mg)

        return self._run(op)

    def max_close(self, h: Health, abs_size: int, price: int, fee: int) -> int:
        if h.equity * WAD < h.maintenance * DEEP_UNDERWATER:
            return abs_size
        target = ceil_mul(h.maintenance, WAD + LIQUIDATION_BUFFER)
        need = target - h.equity
        denominator = h.focus_maintenance * (WAD + LIQUIDATION_BUFFER) // WAD - ceil_mul(
            h.focus_notional, fee
        )
        if denominator <= 0:
            return abs_size
        fraction = ceil_div(need * WAD, denominator)
        if fraction >= WAD:
            return abs_size
        closable = max(ceil_mul(abs_size, fraction), 1)
        if (abs_size - closable) * price // WAD < DUST_NOTIONAL:
            return abs_size
        return closable

    def liquidate(self, liquidator, owner, sub, m, size, liq_sub):
        def op():
            if size == 0:
                raise Revert("engine: zero size")
            if owner == self.me:
                raise Revert("engine: insurance account")
            if owner == liquidator and sub == liq_sub:
                raise Revert("engine: self liquidation")
            if m not in self.markets:
                raise Revert("engine: unknown market")
            mk = self.markets[m]
            h = self.health(owner, sub, focus=m)
            if h.equity >= h.maintenance:
                raise Revert("engine: account healthy")
            if h.focus_size == 0:
                raise Revert("engine: no position")
            price = h.focus_price
            abs_size = abs(h.focus_size)
            closed = min(size, self.max_close(h, abs_size, price, mk.liquidation_fee))
            if closed != abs_size and (abs_size - closed) * price // WAD < DUST_NOTIONAL:
                raise Revert("engine: remainder below dust")
            index = self.accrue(m)
            delta = closed if h.focus_size > 0 else -closed
            oi = mk.oi
            l_old, l_new = self.apply(liquidator, liq_sub, m, delta, price, index)
            o_old, o_new = self.apply(owner, sub, m, -delta, price, index)
            mk.oi = self.new_oi(self.new_oi(oi, l_old, l_new), o_old, o_new)
            penalty = ceil_mul(ceil_mul(closed, price), mk.liquidation_fee)
            penalty = 0 if h.equity <= 1 else min(penalty, h.equity - 1)
            reward = penalty * mk.liquidator_share // WAD
            self.acct(owner, sub).collateral -= penalty
            self.acct(liquidator, liq_sub).collateral += reward
            self.acct(self.me, 0).collateral += penalty - reward
            lh = self.health(liquidator, liq_sub)
            if lh.equity < lh.initial:
                raise Revert("engine: liquidator below initial margin")
            return closed

        return self._run(op)

    def backstop(self, owner, sub):
        def op():
            if owner == self.me:
                raise Revert("engine: insurance account")
            h = self.health(owner, sub)
            if h.equity >= 0:
                raise Revert("engine: above backstop threshold")
            acc = self.acct(owner, sub)
            for m in list(acc.markets):
                index = self.accrue(m)
                price = self.markets[m].last_price
                size = acc.positions[m][0]
                mk = self.markets[m]
                oi = mk.oi
                f_old, f_new = self.apply(self.me, 0, m, size, price, index)
                a_old, a_new = self.apply(owner, sub, m, -size, price, index)
                mk.oi = self.new_oi(self.new_oi(oi, f_old, f_new), a_old, a_new)
            covered = uncovered = 0
            if acc.collateral < 0:
                shortfall = -acc.collateral
                fund = self.acct(self.me, 0).collateral
                if fund > 0:
                    covered = min(shortfall, fund)
                    self.acct(self.me, 0).collateral = fund - covered
                uncovered = shortfall - covered
                acc.collateral = 0
                self.bad_debt += uncovered
            return h.equity, covered, uncovered

        return self._run(op)

    def poke(self, m):
        def op():
            if m not in self.markets:
                raise Revert("engine: unknown market")
            self.accrue(m)

        return self._run(op)

    def insurance_fund(self) -> int:
        return max(self.accounts.get((self.me, 0), Account()).collateral, 0)
