"""Stateful fuzzing of the margin engine on titanoboa against an independent model.

The world (``engine_harness``): nine markets (8-, 18- and 6-decimal feeds), four traders, a
liquidator with two subaccounts, a funder, and a leveraged book. Rules: deposits; withdrawals
(one blocked by unpaid funding among them); trades that open, grow, reduce and flip, above the
1M and 10M tiers, outside the band, into the open-interest cap, the 8-position limit and
isolated margin; price moves with crash gaps; feeds from the future, reverting, broken or
stale; price bounds; keeper updates of multiplier and funding rate (every rejection predicted
by ``margin_math.apply_update`` and asserted with its reason) with the registry paused or not;
tier changes under the liquidation fee; the funding reserve; time jumps (ramp, heartbeat, the
stale decay); the bot's pass (accounts discovered through ``users_to_liquidate`` pages,
requested sizes drawn at random, negative accounts backstopped) followed by auto-deleveraging
(targets ranked by unrealised profit x leverage with the reference); single liquidations,
backstops and deleveragings with every revert predicted; and the insurance fund unwinding its
positions through the exchange.

After every step (``chain_agrees_and_books_balance``):

- the chain equals the model: collateral, positions and snapshots of every subaccount, mark
  prices, funding indices, open interest (long == short), premium and volume accumulators,
  bad debt, the token balance; every account's ``health_batch`` entry equals
  ``engine_math.health`` to the wei, and ``liquidatable`` is exactly equity < maintenance;
- no flat subaccount holds negative collateral;
- ``deficit()`` = bad debt + the marked insurance fund's negative equity (from the chain's
  stored positions) and ``insurance_fund()`` its positive part;
- conservation, to the wei: token balance (WAD) = sum over every subaccount (the fund
  included) of (collateral - open notional) + sum of size x funding snapshot / WAD - bad debt
  + the rounding the engine keeps (the model's ``kept``);
- solvency: with no account below zero equity, claims (every subaccount's positive equity,
  unrealised profit included, plus the insurance fund) - token balance = deficit - rounding
  (what the marks and the engine keep): with no deficit the balance covers every claim; a
  deficit that deleveraging cannot reach (no opposite position) is counted in the summary.

``nobody_healthy_is_liquidatable`` tries, in turn, to liquidate a healthy account.
Run: ``pytest -p no:ape_test tests/fuzz/test_engine_stateful.py`` (``HYPOTHESIS_PROFILE=deep``
for ``make fuzz``); the session's summary prints the steps and every outcome reached.
"""

from __future__ import annotations

from fractions import Fraction

import boa
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from offchain import WAD
from offchain.protocol import engine_math as em
from offchain.protocol import margin_math as mm
from tests.fuzz.conftest import ENGINE_RUNS
from tests.fuzz.engine_harness import (
    ALL,
    MAIN,
    MINOR,
    STATS,
    TIER_SCHEDULES,
    UNLISTED,
    USDC,
    answer_of,
    base_world,
    chain_equity,
    chain_positions,
    key_of,
    now,
)
from tests.fuzz.engine_model import Key

SCALE = 10**12
WORLD = base_world()  # deployed at import, outside the anchors around each example
USERS: list[Key] = [(t, s) for t in WORLD.traders for s in (0, 1)] + [
    (WORLD.liquidator, 0),
    (WORLD.liquidator, 1),
]
FUND = (str(WORLD.engine.address), 0)
LIQUIDATORS: list[Key] = [(WORLD.liquidator, 0), (WORLD.liquidator, 1)]
HOLDERS: list[Key] = [*USERS, (WORLD.funder, 0)]  # every subaccount that can hold collateral

accounts = st.integers(0, len(USERS) - 1)
victims = st.integers(0, len(USERS))  # the last one is the insurance fund
NOTIONALS = st.one_of(
    st.integers(-150_000, -1),
    st.integers(1, 150_000),
    st.sampled_from([-12_000_000, -2_500_000, -1_200_000, 0, 1_200_000, 2_500_000, 12_000_000]),
)
OFFSETS = st.one_of(*[st.integers(-100, 100)] * 4, st.sampled_from([-501, -500, 500, 501]))
MOVES = [-50, -30, -15, -8, -5, -4, -3, -2, -2, -1, -1, 1, 1, 2, 2, 3, 4, 5, 8, 15, 30]
PAGES = st.sampled_from([1, 2, 3, 7, 100])
FACTORS = [50, 89, 90, 95, 100, 120, 150, 151, 400]
RATES = [0, 10**9, -(10**9), 10**11, -(10**11), 10**12, -(10**12), 10**12 + 1]


def requested(size: int):
    """A liquidation or deleveraging request: anything from 1 wei to more than the position,
    with the whole, all but one wei (a dust remainder) and a third weighted in."""
    return st.one_of(
        st.integers(1, size),
        st.sampled_from([size, max(size - 1, 1), 2**128, max(size // 3, 1)]),
    )


class EngineMachine(RuleBasedStateMachine):
    @initialize()
    def start(self):
        self.w = base_world()
        self.m, self.e = self.w.model, self.w.engine
        self._anchor = boa.env.anchor()
        self._anchor.__enter__()
        self.turn = 0
        STATS["examples"] += 1

    def teardown(self):
        if hasattr(self, "_anchor"):
            self._anchor.__exit__(None, None, None)

    # ------------------------------------------------------------------------ helpers

    def _key(self, i: int) -> Key:
        return USERS[i] if i < len(USERS) else FUND

    def _mark(self, m: int) -> int:
        mk = self.m.markets[m]
        try:
            return self.m.mark(m)[0]
        except Exception:
            return mk.price

    def _liquidate(self, liq: Key, victim: Key, m: int, size: int):
        o = self.w.expect(
            "liquidate",
            lambda: self.m.liquidate(liq, victim, m, size),
            self.e.liquidate,
            victim[0],
            victim[1],
            m,
            size,
            liq[1],
            sender=liq[0],
        )
        if o:
            closed, penalty, reward = o.expected
            assert o.out == closed  # min(requested, engine_math.closable)
            log = o.event("Liquidation")
            assert (abs(log.size), log.penalty, log.liquidator_reward) == (closed, penalty, reward)
        return o

    def _backstop(self, victim: Key):
        o = self.w.expect(
            "backstop",
            lambda: self.m.backstop(self.w.funder, victim),
            self.e.backstop,
            victim[0],
            victim[1],
            sender=self.w.funder,
        )
        if o:
            equity, covered, uncovered, reward = o.expected
            log = o.event("Backstop")
            assert (log.equity, log.covered, log.bad_debt) == (equity, covered, uncovered)
            if reward:
                assert o.event("BackstopReward").amount == reward
        return o

    def _deleverage(self, victim: Key, m: int, size: int):
        o = self.w.expect(
            "deleverage",
            lambda: self.m.deleverage(victim, m, size),
            self.e.deleverage,
            victim[0],
            victim[1],
            m,
            size,
            sender=self.w.funder,
        )
        if o:
            log = o.event("Deleveraged")
            assert o.out == abs(o.expected["size"])
            assert {k: getattr(log, k) for k in o.expected} == o.expected
        return o

    def _discover(self, page: int) -> list[Key]:
        """The bot's discovery: every page of ``users_to_liquidate``."""
        count = self.e.accounts_with_positions_count()
        assert count == len(self.m.active())
        found: list[Key] = []
        for start in range(0, count, page):
            found += [key_of(x) for x in self.e.users_to_liquidate(start, page)]
        assert len(found) == len(set(found))
        assert set(found) == {k for k in self.m.active() if self.m.liquidatable(k)}
        STATS[f"discovered {min(len(found), 3)}{'+' if len(found) >= 3 else ''}"] += 1
        return found

    def _bot(self, page: int, data) -> None:
        """A liquidation bot's pass, then deleveraging of whatever deficit is left."""
        found = self._discover(page)
        ratio = {k: self.m.health(k) for k in found}
        found.sort(key=lambda k: Fraction(ratio[k].equity, max(ratio[k].maintenance, 1)))
        for key in found:
            for _ in range(4):
                if not self.m.liquidatable(key):
                    break
                h = self.m.health(key)
                m = data.draw(st.sampled_from([leg.market_id for leg in h.legs]))
                size = data.draw(requested(abs(self.m.size(key, m))))
                # Mostly the liquidator's deep subaccounts; sometimes an empty one, which
                # cannot carry what it takes over.
                liq = data.draw(st.sampled_from([*LIQUIDATORS, *LIQUIDATORS, USERS[1]]))
                if liq == key:
                    liq = LIQUIDATORS[0] if key != LIQUIDATORS[0] else LIQUIDATORS[1]
                self._liquidate(liq, key, m, size)  # refused below zero equity: backstop
                if h.equity < 0:
                    self._backstop(key)
                    break
        if self.m.bad_debt > 0:
            # The bot repays from the fund's equity first; sometimes governance tops the fund up
            # (fund_insurance repays on its own); then deleveraging takes what is left.
            how = data.draw(st.sampled_from(["deleverage only", "repay", "top up, repay"]))
            if how == "top up, repay":
                before = self.m.bad_debt
                self.w.fund_insurance(data.draw(st.integers(1, 5_000)) * USDC)
                some = "some" if self.m.bad_debt < before else "none"
                STATS[f"fund_insurance repaid {some}"] += 1
            if how != "deleverage only":
                repaid = self.w.repay_bad_debt(self.w.funder).expected
                STATS[f"repay_bad_debt: {'some' if repaid else 'none'} repaid"] += 1
        self._adl(data)

    def _adl_targets(self) -> list[tuple[Fraction, Key, int]]:
        """Opposite positions to the fund's, largest unrealised profit x leverage first."""
        targets = []
        for m, (fund_size, _) in self.m.acct(FUND).positions.items():
            for key in USERS:
                size = self.m.size(key, m)
                if size == 0 or (size > 0) == (fund_size > 0):
                    continue
                h = self.m.health(key)
                if h.equity <= 1:
                    continue
                leg = h.legs[h.leg(m)]
                leverage = Fraction(sum(x.notional for x in h.legs), h.equity)
                targets.append(((leg.value - leg.open_notional) * leverage, key, m))
        return sorted(targets, key=lambda t: t[0], reverse=True)

    def _adl(self, data) -> None:
        for _ in range(12):
            if self.m.deficit() == 0:
                return
            targets = self._adl_targets()
            if not targets:
                why = "no fund position" if not self.m.acct(FUND).positions else "no equity"
                STATS[f"adl: deficit left, {why} on the other side"] += 1
                return
            _, key, m = targets[0]
            size = data.draw(st.one_of(st.just(2**128), requested(abs(self.m.size(key, m)))))
            self._deleverage(key, m, size)

    # -------------------------------------------------------------------- collateral

    @rule(
        a=accounts,
        kind=st.sampled_from(["deposit", "withdraw", "withdraw", "insurance", "isolate"]),
        data=st.data(),
    )
    def collateral(self, a, kind, data):
        """Deposits, withdrawals (a share of collateral, or one unit more than the settled cash:
        blocked by unpaid funding when the account owes some), insurance top-ups, isolation."""
        key = USERS[a]
        if kind == "deposit":
            usd = data.draw(st.one_of(st.just(0), st.integers(1, 50_000), st.just(2_000_000)))
            self.w.deposit(key, usd * USDC)
        elif kind == "insurance":
            self.w.fund_insurance(data.draw(st.integers(0, 20_000)) * USDC)
        elif kind == "isolate":
            m = data.draw(st.sampled_from([0, 0, *MAIN, MINOR[0], UNLISTED]))
            self.w.expect(
                "set_isolated",
                lambda: self.m.set_isolated(key, m),
                self.e.set_isolated,
                key[1],
                m,
                sender=key[0],
            )
        else:
            collateral = self.m.acct(key).collateral
            cash = self.m.health(key).cash
            pct = data.draw(st.sampled_from([0, 1, 25, 50, 100, 101, "cash+1"]))
            if pct == "cash+1":
                amount = max(cash, 0) // SCALE + 1
            else:
                amount = max(collateral, 0) // SCALE * pct // 100
            o = self.w.expect(
                "withdraw",
                lambda: self.m.withdraw(key, amount),
                self.e.withdraw,
                key[1],
                amount,
                sender=key[0],
            )
            blocked = o.reason == "engine: insufficient collateral"
            if blocked and 0 < amount * SCALE <= collateral:
                STATS["withdraw: blocked by unpaid funding"] += 1

    # ----------------------------------------------------------------------- trading

    @rule(
        m=st.sampled_from(MAIN),
        maker=accounts,
        other=st.sampled_from([*range(1, len(USERS))] * 4 + [0]),
        usd=NOTIONALS,
        offset_bp=OFFSETS,
    )
    def trade(self, m, maker, other, usd, offset_bp):
        mark = self._mark(m)
        size = int(Fraction(usd * WAD * WAD, mark))
        price = mark * (10_000 + offset_bp) // 10_000
        sides = (USERS[maker], USERS[(maker + other) % len(USERS)])  # rarely a self trade
        healthy = {k for k in sides if not self.m.liquidatable(k)}
        if self.w.trade(m, sides[0], sides[1], size, price):
            # No trade makes a healthy side liquidatable.
            assert not any(self.m.liquidatable(k) for k in healthy)
            if any(leg.notional > 10**6 * WAD for k in sides for leg in self.m.health(k).legs):
                STATS["trade: a position above the 1M tier"] += 1

    @rule(taker=st.sampled_from([6, 7, 2]), data=st.data())
    def spread(self, taker, data):
        """Small positions in several small markets, against the liquidator's second
        subaccount: both reach the 8-position limit."""
        for k in data.draw(st.lists(st.sampled_from(MINOR), min_size=1, max_size=4)):
            usd = data.draw(st.sampled_from([-300, -50, 50, 300]))
            size = usd * WAD * WAD // self._mark(k)
            self.w.trade(k, USERS[9], USERS[taker], size, self._mark(k), name="spread")

    @rule(
        pct=st.sampled_from([25, 50, 100, 100, 150]),
        counterparty=st.sampled_from([8, 9, 0]),
        offset_bp=st.sampled_from([-100, 0, 0, 100]),
        data=st.data(),
    )
    def unwind_fund(self, pct, counterparty, offset_bp, data):
        """The owner unwinds the fund's positions through the exchange, once deleveraging has
        recovered the deficit (a deficit left when the fund is flat could never be)."""
        held = sorted(self.m.acct(FUND).positions)
        if not held or self.m.deficit() != 0:
            return
        m = data.draw(st.sampled_from(held))
        price = self._mark(m) * (10_000 + offset_bp) // 10_000
        size = self.m.size(FUND, m) * pct // 100
        done = self.w.trade(m, FUND, USERS[counterparty], size, price, name="unwind")
        if done and self.m.deficit():  # a concession on the price cost the fund more than it had
            flat = not self.m.acct(FUND).positions
            STATS[f"unwind: left a deficit{' and a flat fund' if flat else ''}"] += 1

    # ------------------------------------------------------------------- prices, feeds

    @rule(
        m=st.sampled_from([*MAIN, *MAIN, *MAIN, MINOR[0], MINOR[1]]),
        pct=st.sampled_from(MOVES),
        bot=st.sampled_from([True, True, False]),
        page=PAGES,
        data=st.data(),
    )
    def move_price(self, m, pct, bot, page, data):
        """A price move (crash gaps included), usually followed by the bot's pass."""
        self.w.set_answer(m, max(self.w.reference_answer(m) * (100 + pct) // 100, 1))
        STATS[f"price: {'gap' if abs(pct) >= 15 else 'move'}"] += 1
        if bot:
            self._bot(page, data)

    @rule(
        a=accounts,
        ratio_bp=st.sampled_from([-2_000, 3_000, 7_000, 9_000, 9_900, 10_500]),
        page=PAGES,
        data=st.data(),
    )
    def squeeze(self, a, ratio_bp, page, data):
        """Move one market's price until an account sits at a chosen equity / maintenance
        (below zero, deep underwater, partly liquidatable, just healthy), then the bot's pass.
        Solved in the price with the other legs fixed: E0 + s (p - p0) = f (M_o + m p / p0)."""
        h = self.m.health(USERS[a])
        legs = [leg for leg in h.legs if leg.market_id in MAIN]
        if not legs:
            return
        leg = data.draw(st.sampled_from(legs))
        f, p0 = Fraction(ratio_bp, 10_000), leg.price
        other = h.maintenance - leg.maintenance
        slope = Fraction(leg.size, WAD) - f * Fraction(leg.maintenance, p0)
        if slope == 0:
            return
        price = (f * other - h.equity + Fraction(leg.size * p0, WAD)) / slope
        if not p0 // 4 < price < 4 * p0:
            return
        STATS[f"squeeze to {ratio_bp / 100:g}% of maintenance"] += 1
        self.w.set_answer(leg.market_id, max(answer_of(leg.market_id, int(price)), 1))
        self._bot(page, data)

    @rule(
        m=st.sampled_from([*MAIN, *MINOR[:2]]),
        kind=st.sampled_from(["future", "revert", "revive", "zero", "negative", "refresh"]),
    )
    def feed_fault(self, m, kind):
        """Feeds from the future, reverting, answering zero or less, and back."""
        STATS[f"feed: {kind}"] += 1
        if kind == "future":
            self.w.set_answer(m, self.w.reference_answer(m), at=now() + 600)
        elif kind in ("revert", "revive"):
            self.w.set_reverting(m, kind == "revert")
        elif kind in ("zero", "negative"):
            self.w.set_answer(m, 0 if kind == "zero" else -1)
        else:
            self.w.set_answer(m, self.w.reference_answer(m))

    # ------------------------------------------------------------ registry, governance

    @rule(
        m=st.sampled_from([*MAIN, *MAIN, MINOR[0]]),
        factor=st.sampled_from(FACTORS),
        rate=st.sampled_from(RATES),
        fault=st.sampled_from([None] * 5 + ["future", "replay", "deadline"]),
        wait=st.sampled_from([0, 1, 1, 60]),
    )
    def keeper_update(self, m, factor, rate, fault, wait):
        """A signed update; the registry's verdict is margin_math.apply_update's."""
        if wait:
            boa.env.time_travel(seconds=wait)
        mk, t = self.m.markets[m], now()
        multiplier = max(1, (mk.state.target or mk.guardrails.stale_multiplier) * factor // 100)
        observed = max(t - 1, mk.state.observed_at + 1)
        observed = {"future": t + 1, "replay": mk.state.observed_at}.get(fault, observed)
        deadline = t - 1 if fault == "deadline" else t + 600
        self.w.keeper_update(m, multiplier, rate, observed, deadline)

    @rule(
        kind=st.sampled_from(
            ["registry pause", "engine pause", "tiers", "bounds", "bounds", "reserve", "reward"]
        ),
        m=st.sampled_from(MAIN),
        data=st.data(),
    )
    def governance(self, kind, m, data):
        """Pauses (registry: guardian; engine: owner), tier schedules (pushed by the registry,
        sometimes below the liquidation fee), feed bounds, the funding reserve, the backstop
        reward."""
        if kind == "registry pause":
            paused = self.m.registry_paused
            with boa.env.prank(self.w.guardian):
                (self.w.registry.unpause if paused else self.w.registry.pause)()
            self.m.registry_paused = not paused
            STATS[f"registry: {'unpaused' if paused else 'paused'}"] += 1
        elif kind == "engine pause":
            paused = data.draw(st.sampled_from([True, False, False]))
            with boa.env.prank(self.w.owner):
                (self.e.pause if paused else self.e.unpause)()
            self.m.paused = paused
        elif kind == "tiers":
            name = data.draw(st.sampled_from(sorted(TIER_SCHEDULES)))
            tiers, mk = TIER_SCHEDULES[name], self.m.markets[m]
            self.w.expect(
                f"tiers {name}",
                lambda: self.m.configure_tiers(m, tiers),
                self.w.registry.configure_market,
                m,
                [(t.notional_floor, t.maintenance_rate) for t in tiers],
                mk.initial_ratio,
                mk.guardrails.as_tuple(),
            )
        elif kind == "bounds":
            ans = self.w.reference_answer(m)
            low, high = data.draw(
                st.sampled_from(
                    [
                        (ans // 2, ans * 2),
                        (ans // 2, ans),
                        (ans, ans * 2),
                        (0, 0),
                        (0, 0),
                        (ans, ans),
                    ]
                )
            )
            self.w.expect(
                "set_price_bounds",
                lambda: self.m.set_price_bounds(m, low, high),
                self.e.set_price_bounds,
                m,
                low,
                high,
            )
        elif kind == "reserve":
            seconds = data.draw(st.sampled_from([0, 3600, 86_400, 86_401]))
            self.w.expect(
                "set_funding_reserve",
                lambda: self.m.set_funding_reserve(m, seconds),
                self.e.set_funding_reserve,
                m,
                seconds,
            )
        else:
            usd = data.draw(st.sampled_from([0, 5, 100, 101]))
            self.w.expect(
                "set_backstop_reward",
                lambda: self.m.set_backstop_reward(usd * WAD),
                self.e.set_backstop_reward,
                usd * WAD,
            )

    @rule(
        seconds=st.sampled_from([1, 60, 900, 1800, 3601, 7201, 14_401, 86_400]),
        refresh=st.sampled_from([True, True, False]),
        poke=st.sampled_from([None, None, *ALL[:3], UNLISTED]),
    )
    def advance_time(self, seconds, refresh, poke):
        """Time passes (the ramp, the heartbeat, the stale decay); the feeds' own heartbeat
        stamps a fresh round at the same answer; somebody may poke a market."""
        boa.env.time_travel(seconds=seconds)
        STATS[f"time: +{seconds}s"] += 1
        if refresh:
            for m in ALL:
                feed = self.m.markets[m].feed
                if not feed.reverting and feed.answer > 0:
                    self.w.set_answer(m, feed.answer)
        if poke is not None:
            self.w.expect(
                "poke", lambda: self.m.poke(poke), self.e.poke, poke, sender=self.w.funder
            )

    # ---------------------------------------------------- liquidation, backstop, ADL

    @rule(page=PAGES, data=st.data())
    def bot_pass(self, page, data):
        self._bot(page, data)

    @rule(
        kind=st.sampled_from(["liquidate", "backstop", "deleverage"]),
        v=victims,
        m=st.sampled_from([*MAIN, MINOR[0]]),
        data=st.data(),
    )
    def one_call(self, kind, v, m, data):
        """One liquidation, backstop or deleveraging of any account: every refusal predicted."""
        victim = self._key(v)
        size = data.draw(st.one_of(st.just(0), requested(max(abs(self.m.size(victim, m)), 1))))
        if kind == "liquidate":
            self._liquidate(
                (self.w.liquidator, data.draw(st.sampled_from([0, 1]))), victim, m, size
            )
        elif kind == "backstop":
            self._backstop(victim)
        else:
            self._deleverage(victim, m, size)

    @rule(data=st.data())
    def adl_pass(self, data):
        self._adl(data)

    # -------------------------------------------------------------------- invariants

    @invariant()
    def chain_agrees_and_books_balance(self):
        if not hasattr(self, "w"):
            return
        STATS["checks"] += 1
        m, e = self.m, self.e
        m.now = now()
        marks, indices = {}, {}
        for mid in ALL:
            price, fresh = e.mark_price(mid)
            expected, _, status = m.mark(mid)
            assert (price, fresh) == (expected, status == "ok")
            marks[mid], indices[mid] = price, e.funding_index(mid)
            assert indices[mid] == m.index_now(mid)
            assert e.open_interest(mid) == m.open_interest(mid) == m.short_interest(mid)
        for mid in MAIN:
            assert tuple(e.premium_accumulator(mid)) == m.markets[mid].premium
            self._count_regime(mid)
        chain = {}
        for key in [*HOLDERS, FUND]:
            collateral, positions = e.collateral_of(*key), chain_positions(e, key)
            account = m.acct(key)
            assert collateral == account.collateral
            assert {x: (s, n) for x, (s, n, _) in positions.items()} == account.positions
            assert all(account.snapshots[x] == p[2] for x, p in positions.items())
            if not positions and key != FUND:
                assert collateral >= 0, "a flat account holds negative collateral"
            chain[key] = (collateral, positions)
        batch = e.health_batch([k[0] for k in HOLDERS], [k[1] for k in HOLDERS])
        equities = {}
        for key, got in zip(HOLDERS, batch, strict=True):
            h = m.health(key)
            assert (got.equity, got.maintenance, got.initial) == (
                h.equity,
                h.maintenance,
                h.initial,
            )
            assert got.liquidatable == (h.equity < h.maintenance)
            equities[key] = chain_equity(chain[key][1], chain[key][0], marks, indices)
            assert equities[key] == h.equity
        fund = chain_equity(chain[FUND][1], chain[FUND][0], marks, indices)
        bad_debt, deficit = e.bad_debt(), e.deficit()
        assert bad_debt == m.bad_debt
        assert deficit == bad_debt + max(-fund, 0) == m.deficit()
        assert e.insurance_fund() == max(fund, 0)
        assert e.accounts_with_positions_count() == len(m.active())
        for owner in {k[0] for k in HOLDERS}:
            buckets = m.volumes.get(owner, em.VolumeBuckets())
            assert e.trailing_volume(owner) == buckets.trailing(m.now)

        # Conservation: every token is someone's collateral, a position's cost, funding not
        # yet settled, bad debt or the rounding the engine keeps.
        balance = self.w.token.balanceOf(e.address)
        assert balance == m.balance
        ledger = sum(
            Fraction(c) - sum(Fraction(n) - Fraction(s * snap, WAD) for s, n, snap in p.values())
            for c, p in chain.values()
        )
        assert balance * SCALE == ledger - bad_debt + m.kept

        # Solvency once negative accounts are resolved.
        if any(eq < 0 for eq in equities.values()):
            STATS["solvency: negative account pending"] += 1
            return
        claims = sum(max(eq, 0) for eq in equities.values()) + max(fund, 0)
        rounding = m.kept + m.rounding_open()
        assert claims - balance * SCALE == deficit - rounding
        if deficit == 0:
            assert balance * SCALE >= claims
            STATS["solvency: every claim covered"] += 1
        elif self._adl_targets():
            STATS["solvency: deficit, deleveraging pending"] += 1
        else:
            STATS["solvency: deficit deleveraging cannot reach"] += 1

    def _count_regime(self, mid: int) -> None:
        """Which of the registry's time rules is in force for a market (for the summary)."""
        mk, t = self.m.markets[mid], self.m.now
        state, g = mk.state, mk.guardrails
        if mm.is_stale(state, g, t):
            decaying = mm.funding_rate_in_force(state, g, t) != state.funding_rate
            STATS[f"regime: stale{', funding decaying' if decaying else ''}"] += 1
        elif state.ramp_from < state.target and t - state.updated_at < g.increase_ramp:
            STATS["regime: mid-ramp"] += 1
        if mk.tiers != TIER_SCHEDULES["devnet"]:
            STATS["regime: tiers below the liquidation fee"] += 1

    @invariant()
    def nobody_healthy_is_liquidatable(self):
        if not hasattr(self, "w"):
            return
        self.turn += 1
        key = USERS[self.turn % len(USERS)]
        positions = self.m.acct(key).positions
        if not positions or self.m.liquidatable(key):
            return
        assert not self.e.is_liquidatable(*key)
        h = self.m.health(key)
        assert tuple(self.e.account_health(*key)) == (h.equity, h.maintenance, h.initial)
        liq = (self.w.liquidator, 1 if key == (self.w.liquidator, 0) else 0)
        with boa.env.anchor(), boa.reverts("engine: account healthy"), boa.env.prank(liq[0]):
            self.e.liquidate(key[0], key[1], next(iter(positions)), 2**128, liq[1])


TestEngineStateful = EngineMachine.TestCase
TestEngineStateful.settings = settings(
    max_examples=ENGINE_RUNS[0], stateful_step_count=ENGINE_RUNS[1], deadline=None
)
