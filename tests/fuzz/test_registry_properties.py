"""Registry properties that need many transactions, on titanoboa, against
offchain.protocol.margin_math.

- A stateful machine: random signed batches (valid, outside the guardrails, replayed, badly
  signed, for unknown markets), time jumps, pauses and reconfigurations over three markets
  with random guardrails. After every step each market's stored state, multiplier, staleness,
  funding and margins equal the reference's, and every revert carries the reference's reason.
- Atomicity: a 32-update batch with one bad update anywhere applies nothing.
- A dense sweep of notionals over random schedules: non-decreasing, capped, rounded up.

Run: ``pytest -p no:ape_test tests/fuzz/test_registry_properties.py``.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from itertools import accumulate, pairwise

import boa
from eth_account import Account
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from offchain.protocol import margin_math as ref
from offchain.protocol.margin_math import Guardrails, MarketState, Tier, UpdateRejected
from offchain.protocol.signing import RiskUpdate, sign_batch, to_high_s
from tests.fuzz.conftest import GUARDRAILS, TIERS, WAD, deployer

KEYS = [Account.from_key(bytes([0x51 + i]) * 32) for i in range(3)]
OUTSIDER = Account.from_key(b"\x99" * 32)
MARKETS = (1, 2, 3)
UNKNOWN_MARKET = 77
PROBES = (10**6 * WAD + 1, 3 * 10**8 * WAD)
MODEL_HASH = b"\x42" * 32


# Helpers


def now() -> int:
    return boa.env.evm.patch.timestamp


def chain_id() -> int:
    return boa.env.evm.patch.chain_id


def tiers_arg(tiers) -> list[tuple[int, int]]:
    return [(t.notional_floor, t.maintenance_rate) for t in tiers]


def deploy_registry(threshold: int = 1):
    owner = boa.env.generate_address("registry_owner")
    guardian = boa.env.generate_address("registry_guardian")
    with boa.env.prank(owner):
        registry = deployer("RiskParameterRegistry.vy").deploy(guardian)
        for key in KEYS:
            registry.add_keeper(key.address)
        registry.set_signer_threshold(threshold)
    return registry, owner, guardian


def stored_state(registry, market_id: int) -> MarketState:
    s = registry.market_state(market_id)
    return MarketState(
        s.target, s.ramp_from, s.funding_rate, s.updated_at, s.observed_at, s.last_decrease_at
    )


def signatures_for(registry, updates, keys) -> list[bytes]:
    return [sign_batch(updates, k.key, chain_id(), registry.address) for k in keys]


@st.composite
def rails(draw) -> Guardrails:
    lo = draw(st.integers(1, 3 * WAD))
    hi = draw(st.integers(lo, 18 * WAD))
    heartbeat = draw(st.integers(1, 20_000))
    return Guardrails(
        min_multiplier=lo,
        max_multiplier=hi,
        max_increase=draw(st.one_of(st.integers(WAD // 100, WAD), st.integers(1, 2 * WAD))),
        max_decrease=draw(st.integers(1, WAD - 1)),
        min_decrease_interval=draw(st.integers(0, 10_000)),
        heartbeat=heartbeat,
        stale_multiplier=draw(st.integers(lo, hi)),
        increase_ramp=draw(st.integers(0, heartbeat)),
        max_funding_rate=draw(st.integers(0, 2**47 - 1)),
    )


@st.composite
def tier_schedules(draw) -> list[Tier]:
    n = draw(st.integers(1, 8))
    gap = st.one_of(st.integers(1, 3), st.integers(1, 10**30))
    floors = list(accumulate([0, *draw(st.lists(gap, min_size=n - 1, max_size=n - 1))]))
    rates = sorted(draw(st.lists(st.integers(1, WAD), min_size=n, max_size=n)))
    return [Tier(f, r) for f, r in zip(floors, rates, strict=True)]


# An update described relative to the market's state, so that many land near the guardrails:
# half are clamped as the keeper clamps before it signs, some carry one deliberate defect.
FAULTS = ["deadline", "future", "replay", "funding", "unknown"]
update_specs = st.fixed_dictionaries(
    {
        "market": st.sampled_from(MARKETS),
        "step": st.one_of(
            st.integers(WAD // 4, 4 * WAD),
            st.sampled_from([WAD, WAD * 9 // 10, WAD * 11 // 10, WAD * 3 // 2]),
        ),
        "clamp": st.booleans(),
        "funding": st.integers(-10, 10),  # tenths of the bound
        "fault": st.sampled_from([None] * 12 + FAULTS),
    }
)


class RegistryMachine(RuleBasedStateMachine):
    @initialize(
        market_rails=st.lists(rails(), min_size=3, max_size=3),
        schedules=st.lists(tier_schedules(), min_size=3, max_size=3),
        ratios=st.lists(st.integers(WAD, 4 * WAD), min_size=3, max_size=3),
        threshold=st.integers(1, 3),
    )
    def setup(self, market_rails, schedules, ratios, threshold):
        self.registry, self.owner, self.guardian = deploy_registry(threshold)
        self.threshold = threshold
        self.rails = dict(zip(MARKETS, market_rails, strict=True))
        self.tiers = dict(zip(MARKETS, schedules, strict=True))
        self.ratio = dict(zip(MARKETS, ratios, strict=True))
        self.states = {m: MarketState() for m in MARKETS}
        self.paused = False
        with boa.env.prank(self.owner):
            for m in MARKETS:
                self.registry.configure_market(
                    m, tiers_arg(self.tiers[m]), self.ratio[m], self.rails[m].as_tuple()
                )

    def _batch(self, specs) -> tuple[list[RiskUpdate], dict, str | None]:
        """Build the updates in order, each from the state the earlier ones leave; return
        them with the states after the batch and the revert reason, as the reference sees it."""
        t = now()
        states, reason, updates = dict(self.states), None, []
        for spec in specs:
            m, fault = spec["market"], spec["fault"]
            state, g = states[m], self.rails[m]
            proposed = (state.target or g.stale_multiplier) * spec["step"] // WAD
            multiplier = max(1, min(2**64 - 1, proposed))
            if spec["clamp"]:
                multiplier = ref.clamp_multiplier(state, g, multiplier, t)
            funding = g.max_funding_rate * spec["funding"] // 10
            observed = max(t - 1, state.observed_at + 1)
            update = RiskUpdate(
                market_id=UNKNOWN_MARKET if fault == "unknown" else m,
                multiplier=multiplier,
                funding_rate=(g.max_funding_rate + 1) * (-1 if funding < 0 else 1)
                if fault == "funding"
                else funding,
                observed_at={"future": t + 1, "replay": state.observed_at}.get(fault, observed),
                deadline=t - 1 if fault == "deadline" else t + 60,
                model_hash=MODEL_HASH,
            )
            updates.append(update)
            if reason is not None:
                continue
            if fault == "unknown":
                reason = "registry: unknown market"
                continue
            try:
                states[m] = ref.apply_update(state, g, update, t)
            except UpdateRejected as rejected:
                # The keeper's clamp never produces a rejected update, even after a
                # reconfiguration moved [min, max] past the last target.
                clamped = spec["clamp"] and fault is None and observed == t - 1
                assert not clamped, rejected
                reason = rejected.reason
        event(reason or f"accepted batch of {len(updates)}")
        return updates, (self.states if reason else states), reason

    def _relay(self, updates, signatures, states, reason):
        if self.paused:
            reason = "registry: paused"
        relayer = boa.env.generate_address("relayer")
        with boa.env.prank(relayer):
            if reason is not None:
                with boa.reverts(reason):
                    self.registry.submit_updates([u.as_tuple() for u in updates], signatures)
                return
            self.registry.submit_updates([u.as_tuple() for u in updates], signatures)
        self.states = states

    # Rules

    @rule(specs=st.lists(update_specs, min_size=1, max_size=3))
    def submit_batch(self, specs):
        boa.env.time_travel(seconds=1)  # a batch lands in a new block
        updates, states, reason = self._batch(specs)
        signatures = signatures_for(self.registry, updates, KEYS[: self.threshold])
        self._relay(updates, signatures, states, reason)

    @rule(
        spec=update_specs,
        fault=st.sampled_from(["high_s", "outsider", "duplicate", "too_few", "other_chain"]),
    )
    def submit_badly_signed(self, spec, fault):
        updates, states, _ = self._batch([spec])
        good = signatures_for(self.registry, updates, KEYS[: self.threshold])
        if fault == "high_s":
            signatures = [to_high_s(good[0]), *good[1:]]
            reason = "ecdsa: invalid signature `s` value"
        elif fault == "outsider":
            signatures = [*good[:-1], *signatures_for(self.registry, updates, [OUTSIDER])]
            reason = "registry: signer is not a keeper"
        elif fault == "duplicate":
            signatures, reason = [*good, good[0]], "registry: duplicate signer"
        elif fault == "too_few":
            signatures, reason = good[:-1], "registry: not enough signatures"
        else:
            foreign = sign_batch(updates, KEYS[0].key, chain_id() + 1, self.registry.address)
            signatures, reason = [foreign, *good[1:]], "registry: signer is not a keeper"
        # Signatures are checked before any update: their reason wins.
        self._relay(updates, signatures, states, reason)

    @rule(seconds=st.one_of(st.integers(1, 60), st.integers(1, 25_000)))
    def wait(self, seconds):
        boa.env.time_travel(seconds=seconds)

    @rule(by_guardian=st.booleans())
    def toggle_pause(self, by_guardian):
        with boa.env.prank(self.guardian if by_guardian else self.owner):
            if self.paused:
                self.registry.unpause()
            else:
                self.registry.pause()
        self.paused = not self.paused

    @rule(market=st.sampled_from(MARKETS), new_rails=rails())
    def reconfigure(self, market, new_rails):
        with boa.env.prank(self.owner):
            self.registry.configure_market(
                market, tiers_arg(self.tiers[market]), self.ratio[market], new_rails.as_tuple()
            )
        self.rails[market] = new_rails

    # Invariants

    @invariant()
    def matches_reference(self):
        if not hasattr(self, "registry"):
            return
        t = now()
        r = self.registry
        assert r.paused() == self.paused
        for m in MARKETS:
            state, g = self.states[m], self.rails[m]
            assert stored_state(r, m) == state
            multiplier = ref.multiplier_in_force(state, g, t)
            assert r.multiplier(m) == multiplier
            assert r.is_stale(m) == ref.is_stale(state, g, t)
            assert r.funding_rate(m) == ref.funding_rate_in_force(state, g, t)
            previous = 0
            for n in PROBES:
                mm, im = r.margin_requirements(m, n)
                assert mm == ref.maintenance_margin(self.tiers[m], multiplier, n)
                assert im == ref.initial_margin(
                    self.tiers[m], multiplier, state.target, self.ratio[m], n
                )
                assert previous <= mm <= n
                assert mm <= im or im == n
                previous = mm


TestRegistryStateful = RegistryMachine.TestCase


_BATCH_BASE: list = []


def batch_base():
    """A registry with 32 markets at 2x, deployed once: examples run inside the anchors
    titanoboa's pytest plugin puts around each of them."""
    if not _BATCH_BASE:
        registry, owner, _ = deploy_registry()
        with boa.env.prank(owner):
            for m in range(1, 33):
                registry.configure_market(m, tiers_arg(TIERS), 2 * WAD, GUARDRAILS.as_tuple())
        t = now()
        first = [RiskUpdate(m, 2 * WAD, m, t - 1, t + 60, MODEL_HASH) for m in range(1, 33)]
        registry.submit_updates(
            [u.as_tuple() for u in first], signatures_for(registry, first, KEYS[:1])
        )
        boa.env.time_travel(seconds=10)
        _BATCH_BASE.append(registry)
    return _BATCH_BASE[0]


batch_base()


@given(
    bad_index=st.integers(0, 31),
    fault=st.sampled_from(["increase", "decrease", "funding", "deadline", "observed", "unknown"]),
)
def test_submit_updates__one_bad_update_in_32_applies_nothing(bad_index, fault):
    registry = batch_base()
    markets = list(range(1, 33))
    before = {m: stored_state(registry, m) for m in markets}
    t = now()
    batch = [RiskUpdate(m, 21 * WAD // 10, -m, t - 1, t + 60, MODEL_HASH) for m in markets]
    bad, reason = {
        "increase": ({"multiplier": 3 * WAD + 1}, "registry: update exceeds max increase"),
        "decrease": (
            {"multiplier": 18 * WAD // 10 - 1},
            "registry: update exceeds max decrease",
        ),
        "funding": ({"funding_rate": -(10**12) - 1}, "registry: funding rate beyond its bound"),
        "deadline": ({"deadline": t - 1}, "registry: update past its deadline"),
        "observed": (
            {"observed_at": before[1].observed_at},
            "registry: observed_at not after the last update",
        ),
        "unknown": ({"market_id": 99}, "registry: unknown market"),
    }[fault]
    bad_batch = [*batch]
    bad_batch[bad_index] = dataclasses.replace(batch[bad_index], **bad)

    with boa.reverts(reason):
        registry.submit_updates(
            [u.as_tuple() for u in bad_batch], signatures_for(registry, bad_batch, KEYS[:1])
        )

    for m in markets:
        assert stored_state(registry, m) == before[m]
        assert registry.multiplier(m) == 2 * WAD
    with boa.env.anchor():  # the same batch without its bad update goes through
        registry.submit_updates(
            [u.as_tuple() for u in batch], signatures_for(registry, batch, KEYS[:1])
        )
        assert all(registry.target_multiplier(m) == 21 * WAD // 10 for m in markets)


@given(
    tiers=tier_schedules(),
    multiplier=st.integers(1, 2**64 - 1),
    extra=st.lists(st.integers(0, 10**32), max_size=40),
)
def test_maintenance_margin__dense_sweep_is_monotone_capped_and_rounded_up(
    tiers, multiplier, extra
):
    registry, owner, _ = deploy_registry()
    g = dataclasses.replace(
        GUARDRAILS, min_multiplier=1, max_multiplier=2**64 - 1, stale_multiplier=multiplier
    )
    with boa.env.prank(owner):
        registry.configure_market(1, tiers_arg(tiers), WAD, g.as_tuple())
    points = set(extra)
    for t in tiers:
        points.update(t.notional_floor + d for d in range(-2, 3) if t.notional_floor + d >= 0)
    notionals = sorted(points)
    margins = [registry.maintenance_margin(1, n) for n in notionals]
    for n, mm in zip(notionals, margins, strict=True):
        exact = Fraction(ref.base_margin(tiers, n) * multiplier, WAD * WAD)
        assert mm == min(n, math.ceil(exact))
    for (n0, mm0), (n1, mm1) in pairwise(zip(notionals, margins, strict=True)):
        assert mm0 <= mm1
        if n1 == n0 + 1:
            rate = max(t.maintenance_rate for t in tiers if t.notional_floor <= n0)
            assert mm1 - mm0 <= math.ceil(Fraction(rate * multiplier, WAD * WAD))
