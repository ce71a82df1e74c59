"""Stateful fuzzing of the margin engine on titanoboa against the Python model.

Random deposits, withdrawals, trades (sometimes outside the band), price moves including
-50% gaps, broken and stale feeds, funding and multiplier updates signed by a keeper,
liquidations, liquidation passes and backstops. After every step:

- the model agrees with the contract (collateral, positions, open interest, insurance fund,
  bad debt, health of every subaccount) and every revert reason matches;
- solvency: token balance (WAD) + bad debt >= the sum of every subaccount's equity, the
  insurance fund's included (see the report: the literal "balance >= sum of collateral" fails
  by design once one side realises profit while the other still holds the loss);
- open interest == sum of long sizes == sum of short sizes;
- nobody healthy can be liquidated;
- bad debt only grows in backstops and by at most the account's shortfall.
Rules also check that no user action makes its own account liquidatable, that a liquidation
closes exactly min(requested, the rule's cap), and that a liquidation pass leaves nobody
liquidatable.

Run: ``pytest -p no:ape_test tests/fuzz`` (profile "ci": 30 examples x 30 steps;
``HYPOTHESIS_PROFILE=deep``: 300 x 100).
"""

from __future__ import annotations

import contextlib

import boa
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.fuzz.conftest import (
    LIQUIDATION_FEE,
    LIQUIDATOR_SHARE,
    MAX_PRICE_AGE,
    OI_CAP,
    PRICE_BAND,
    PRICES,
    WAD,
    deploy_system,
)
from tests.fuzz.engine_model import EngineModel, Market

USDC = 10**6
N_TRADERS = 4
SUBS = (0, 1)
_BASE: list = []


def base_system():
    """Deploy the contracts and fund the actors' wallets once per session."""
    if not _BASE:
        system = deploy_system()
        traders = [boa.env.generate_address(f"trader{i}") for i in range(N_TRADERS)]
        liquidator = boa.env.generate_address("liquidator")
        funder = boa.env.generate_address("funder")
        for who in [*traders, liquidator, funder]:
            system.token.mint(who, 10**20)
            with boa.env.prank(who):
                system.token.approve(system.engine.address, 2**256 - 1)
        _BASE.extend([system, traders, liquidator, funder])
    return tuple(_BASE)


# Deployed at import, outside the anchors titanoboa's pytest plugin puts around each example.
base_system()


class EngineMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        # The contracts are deployed once per session; each example runs inside an anchor
        # (reverted in teardown) starting from a poke, so the model starts in sync.
        self.s, self.traders, self.liquidator, self.funder = base_system()
        self._anchor = boa.env.anchor()
        self._anchor.__enter__()
        self.engine = self.s.engine
        registry = self.s.registry
        self.model = EngineModel(
            self.engine.address,
            10**12,
            lambda m, n: tuple(registry.margin_requirements(m, n)),
            lambda m: registry.funding_rate(m),
        )
        self._sync_time()
        for m, usd in PRICES.items():
            self.model.markets[m] = Market(
                MAX_PRICE_AGE, PRICE_BAND, LIQUIDATION_FEE, LIQUIDATOR_SHARE, OI_CAP
            )
            self._set_feed(m, usd * 10**8)
            reason, _ = self.model.poke(m)
            self._call(reason, self.engine.poke, m, sender=self.funder)
        self._deposit(self.liquidator, 0, 10**11 * USDC)  # deep pockets: never liquidatable
        for t in self.traders:
            for sub in SUBS:
                self._deposit(t, sub, 20_000 * USDC)
        self._fund(5_000 * USDC)
        self.bad_debt_seen = 0
        # Leveraged books from the start, so that price moves have something to liquidate.
        t = self.traders
        for m, maker, taker, usd in ((1, t[1], t[0], 450_000), (2, t[3], t[2], -350_000)):
            size = usd * WAD // PRICES[m]
            reason, _ = self.model.settle_trade(m, maker, 0, taker, 0, size, PRICES[m] * WAD)
            assert reason is None
            with boa.env.prank(self.s.exchange):
                self.engine.settle_trade(m, maker, 0, taker, 0, size, PRICES[m] * WAD)

    def teardown(self):
        self._anchor.__exit__(None, None, None)

    # --- plumbing ------------------------------------------------------------------------
    def _sync_time(self):
        self.model.now = boa.env.evm.patch.timestamp

    def _call(self, reason, fn, *args, sender=None):
        """Run a contract call expecting the model's revert reason (or success)."""
        event(f"{fn.fn_ast.name}: {reason or 'ok'}")
        if reason is not None:
            with boa.reverts(reason), boa.env.prank(sender):
                fn(*args)
            return None
        with boa.env.prank(sender):
            return fn(*args)

    def _deposit(self, who, sub, amount):
        self._sync_time()
        reason, _ = self.model.deposit(who, sub, amount)
        self._call(reason, self.engine.deposit, sub, amount, sender=who)
        return reason

    def _fund(self, amount):
        self._sync_time()
        reason, _ = self.model.fund_insurance(amount)
        self._call(reason, self.engine.fund_insurance, amount, sender=self.funder)

    def _accounts(self):
        return [(t, sub) for t in self.traders for sub in SUBS] + [(self.liquidator, 0)]

    def _liquidatable(self, who, sub):
        return self.engine.is_liquidatable(who, sub)

    def _set_feed(self, m, answer, updated_at=None):
        feed = self.s.feeds[m]
        if updated_at is None:
            feed.set_answer(answer)
            updated_at = boa.env.evm.patch.timestamp
        else:
            feed.set_round(answer, updated_at)
        self.model.markets[m].feed_price = answer * 10**10
        self.model.markets[m].feed_updated = updated_at

    # --- rules ---------------------------------------------------------------------------
    @rule(i=st.integers(0, N_TRADERS - 1), sub=st.sampled_from(SUBS), usd=st.integers(0, 30_000))
    def deposit(self, i, sub, usd):
        who = self.traders[i]
        before = self._liquidatable(who, sub)
        reason = self._deposit(who, sub, usd * USDC)
        if reason is None and not before:
            assert not self._liquidatable(who, sub)

    @rule(
        i=st.integers(0, N_TRADERS - 1),
        sub=st.sampled_from(SUBS),
        fraction=st.sampled_from([1, 10, 50, 90, 100, 101]),
    )
    def withdraw(self, i, sub, fraction):
        who = self.traders[i]
        self._sync_time()
        collateral = max(self.model.acct(who, sub).collateral, 0) // 10**12
        amount = collateral * fraction // 100
        before = self._liquidatable(who, sub)
        reason, _ = self.model.withdraw(who, sub, amount)
        self._call(reason, self.engine.withdraw, sub, amount, sender=who)
        if reason is None and not before:
            assert not self._liquidatable(who, sub)

    @rule(
        m=st.sampled_from(list(PRICES)),
        maker=st.integers(0, N_TRADERS - 1),
        taker_offset=st.integers(1, N_TRADERS - 1),
        maker_sub=st.sampled_from(SUBS),
        taker_sub=st.sampled_from(SUBS),
        notional_usd=st.integers(-150_000, 150_000),
        offset_bp=st.integers(-550, 550),
    )
    def trade(self, m, maker, taker_offset, maker_sub, taker_sub, notional_usd, offset_bp):
        self._sync_time()
        taker = (maker + taker_offset) % N_TRADERS
        mark, _ = self.engine.mark_price(m)
        size = notional_usd * WAD * WAD // mark
        price = mark * (10_000 + offset_bp) // 10_000
        mk_owner, tk_owner = self.traders[maker], self.traders[taker]
        before = {
            (o, s): self._liquidatable(o, s)
            for o, s in ((mk_owner, maker_sub), (tk_owner, taker_sub))
        }
        reason, _ = self.model.settle_trade(
            m, mk_owner, maker_sub, tk_owner, taker_sub, size, price
        )
        self._call(
            reason,
            self.engine.settle_trade,
            m,
            mk_owner,
            maker_sub,
            tk_owner,
            taker_sub,
            size,
            price,
            sender=self.s.exchange,
        )
        if reason is None:
            for (o, s), was in before.items():
                if not was:
                    assert not self._liquidatable(o, s), "a trade made its own account liquidatable"

    @rule(
        m=st.sampled_from(list(PRICES)),
        pct=st.sampled_from([-50, -30, -10, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 10, 30]),
        then_pass=st.sampled_from([True, True, False]),
    )
    def move_price(self, m, pct, then_pass):
        price = self.model.markets[m].feed_price
        if price <= 0:
            price = self.model.markets[m].last_price
        self._set_feed(m, max(price * (100 + pct) // 100 // 10**10, 1))
        if then_pass:
            self._liquidation_pass()

    @rule(m=st.sampled_from(list(PRICES)), pct=st.sampled_from([-4, -3, -2, 2, 3, 4]))
    def shock_then_liquidate(self, m, pct):
        """A move of a few percent against leveraged books, then a bot's pass."""
        self.move_price(m, pct, True)

    @rule(m=st.sampled_from(list(PRICES)), answer=st.sampled_from([0, -1]))
    def break_feed(self, m, answer):
        self._set_feed(m, answer)

    @rule(m=st.sampled_from(list(PRICES)))
    def refresh_feed(self, m):
        price = self.model.markets[m].feed_price
        if price <= 0:
            price = self.model.markets[m].last_price
        self._set_feed(m, price // 10**10)

    @rule(
        seconds=st.sampled_from([1, 60, 1800, 3601, 7201, 86_400]),
        refresh=st.sampled_from([True, True, False]),
    )
    def advance_time(self, seconds, refresh):
        boa.env.time_travel(seconds=seconds)
        self._sync_time()
        if refresh:  # the feeds' heartbeat: a fresh round at the same price
            for m in PRICES:
                self.refresh_feed(m)

    @rule(
        m=st.sampled_from(list(PRICES)),
        factor=st.sampled_from([90, 100, 120, 150]),
        rate=st.integers(-(10**12), 10**12),
    )
    def risk_update(self, m, factor, rate):
        boa.env.time_travel(seconds=1)
        self._sync_time()
        target = self.s.registry.target_multiplier(m) or 2 * WAD
        multiplier = min(max(target * factor // 100, WAD), 10 * WAD)
        # A step the registry's guardrails refuse is not the engine's concern.
        with contextlib.suppress(boa.BoaError):
            self.s.update_risk(m, multiplier, rate)

    @rule(m=st.sampled_from(list(PRICES)))
    def poke(self, m):
        self._sync_time()
        reason, _ = self.model.poke(m)
        self._call(reason, self.engine.poke, m, sender=self.funder)

    @rule(usd=st.integers(1, 5_000))
    def fund_insurance(self, usd):
        self._fund(usd * USDC)

    @rule(paused=st.sampled_from([True, False, False]))
    def set_pause(self, paused):
        with boa.env.prank(self.s.owner):
            (self.engine.pause if paused else self.engine.unpause)()
        self.model.paused = paused

    def _liquidate(self, who, sub, m, size):
        self._sync_time()
        reason, closed = self.model.liquidate(self.liquidator, who, sub, m, size, 0)
        result = self._call(
            reason, self.engine.liquidate, who, sub, m, size, 0, sender=self.liquidator
        )
        if reason is None:
            assert result == closed <= size  # exactly min(requested, the rule's cap)
        return reason

    @rule(
        i=st.integers(0, N_TRADERS - 1),
        sub=st.sampled_from(SUBS),
        m=st.sampled_from(list(PRICES)),
        size_bp=st.integers(1, 20_000),
    )
    def liquidate(self, i, sub, m, size_bp):
        who = self.traders[i]
        size = abs(self.model.acct(who, sub).positions.get(m, (WAD, 0))[0]) * size_bp // 10_000
        self._liquidate(who, sub, m, max(size, 1))

    def _backstop(self, who, sub):
        self._sync_time()
        debt_before = self.model.bad_debt
        reason, result = self.model.backstop(who, sub)
        self._call(reason, self.engine.backstop, who, sub, sender=self.funder)
        if reason is None:
            equity, _covered, uncovered = result
            assert self.model.bad_debt - debt_before == uncovered <= -equity
            self.bad_debt_seen = self.model.bad_debt

    @rule(i=st.integers(0, N_TRADERS - 1), sub=st.sampled_from(SUBS))
    def backstop(self, i, sub):
        self._backstop(self.traders[i], sub)

    @rule()
    def liquidation_pass(self):
        self._liquidation_pass()

    def _liquidation_pass(self):
        """A bot's pass: liquidate whatever is liquidatable, backstop what is below zero."""
        for who, sub in self._accounts():
            for _ in range(2 * len(PRICES) + 2):
                if not self.engine.is_liquidatable(who, sub):
                    break
                health = self.model.health(who, sub)
                if health.equity < 0:
                    self._backstop(who, sub)
                    continue
                markets = list(self.model.acct(who, sub).markets)
                assert markets, "liquidatable with positive equity and no positions"
                assert self._liquidate(who, sub, markets[0], 2**128) is None
            assert not self.engine.is_liquidatable(who, sub), "left liquidatable after a pass"

    # --- invariants ----------------------------------------------------------------------
    @invariant()
    def model_agrees(self):
        if not hasattr(self, "model"):
            return
        self._sync_time()
        e, model = self.engine, self.model
        for (who, sub), acc in model.accounts.items():
            assert e.collateral_of(who, sub) == acc.collateral
            for m in PRICES:
                size, notional = acc.positions.get(m, (0, 0))
                assert tuple(e.position(who, sub, m)) == (size, notional)
            if who != model.me and acc.markets:
                h = model.health(who, sub)
                assert tuple(e.account_health(who, sub)) == (h.equity, h.maintenance, h.initial)
        for m, mk in model.markets.items():
            assert e.open_interest(m) == mk.oi
            assert e.funding_index(m) == model.index_now(m)
        assert e.insurance_fund() == model.insurance_fund()
        assert e.bad_debt() == model.bad_debt
        assert e.accounts_with_positions_count() == len(model.active)

    @invariant()
    def solvent(self):
        if not hasattr(self, "model"):
            return
        balance = self.s.token.balanceOf(self.engine.address) * 10**12
        total = sum(self.model.equity_any(w, s) for (w, s) in self.model.accounts)
        assert balance + self.engine.bad_debt() >= total

    @invariant()
    def open_interest_balanced(self):
        if not hasattr(self, "model"):
            return
        for m in PRICES:
            longs = shorts = 0
            for acc in self.model.accounts.values():
                size = acc.positions.get(m, (0, 0))[0]
                longs += max(size, 0)
                shorts += max(-size, 0)
            assert self.engine.open_interest(m) == longs == shorts

    @invariant()
    def healthy_cannot_be_liquidated(self):
        if not hasattr(self, "model"):
            return
        # One subaccount per step, in turn (each check costs a health computation).
        self._turn = getattr(self, "_turn", -1) + 1
        accounts = self._accounts()[:-1]  # the liquidator cannot liquidate itself
        who, sub = accounts[self._turn % len(accounts)]
        if not self.engine.is_liquidatable(who, sub):
            for m in self.model.acct(who, sub).markets[:1]:
                with (
                    boa.env.anchor(),
                    boa.reverts("engine: account healthy"),
                    boa.env.prank(self.liquidator),
                ):
                    self.engine.liquidate(who, sub, m, 2**128, 0)

    @invariant()
    def bad_debt_only_from_backstops(self):
        if not hasattr(self, "model"):
            return
        assert self.engine.bad_debt() == self.bad_debt_seen


TestEngineStateful = EngineMachine.TestCase
