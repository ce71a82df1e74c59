"""Batches the registry must refuse whole: forged, replayed or malleable signatures, updates
outside the guardrails, and callers without the role. Where it helps, the honest version of
the same batch is accepted afterwards, so the refusal is shown to come from the one defect."""

import ape
import pytest
from eth_account import Account
from eth_keys import keys

from offchain.protocol.signing import SECP256K1_N, batch_digest, sign_batch, to_high_s
from tests.conftest import DEFAULT_GUARDRAILS, MARKET_BTC, WAD
from tests.registry.conftest import FIRST_MULTIPLIER, configure, land_at, state_of

G = DEFAULT_GUARDRAILS


def signed(registry, chain, updates, key):
    return sign_batch(updates, key.key, chain.chain_id, registry.address)


# Signatures


def test_submit_updates__replayed_batch(registry, submit, make_update, chain, keeper):
    update = make_update(multiplier=3 * WAD)
    signature = signed(registry, chain, [update], keeper)
    submit([update], signatures=[signature])

    with ape.reverts("registry: observed_at not after the last update"):
        submit([update], signatures=[signature])
    assert registry.target_multiplier(MARKET_BTC) == 3 * WAD


def test_submit_updates__signed_for_another_chain_id(registry, submit, make_update, chain, keeper):
    update = make_update()
    foreign = sign_batch([update], keeper.key, chain.chain_id + 1, registry.address)

    with ape.reverts("registry: signer is not a keeper"):
        submit([update], signatures=[foreign])
    submit([update], signatures=[signed(registry, chain, [update], keeper)])


def test_submit_updates__signed_for_another_registry(
    project, registry, owner, guardian, submit, make_update, chain, keeper, relayer
):
    other = project.RiskParameterRegistry.deploy(guardian, sender=owner)
    other.add_keeper(keeper.address, sender=owner)
    configure(other, owner, MARKET_BTC)
    update = make_update()
    for_other = signed(other, chain, [update], keeper)

    with ape.reverts("registry: signer is not a keeper"):
        submit([update], signatures=[for_other])
    # The signature is genuine: the registry it was made for accepts it.
    other.submit_updates([update.as_tuple()], [for_other], sender=relayer)
    assert other.target_multiplier(MARKET_BTC) == update.multiplier
    assert registry.target_multiplier(MARKET_BTC) == 0


def test_submit_updates__high_s_signature(registry, submit, make_update, chain, keeper):
    update = make_update()
    low_s = signed(registry, chain, [update], keeper)
    high_s = to_high_s(low_s)
    # The malleable twin is a valid secp256k1 signature by the same keeper.
    digest = batch_digest([update], chain.chain_id, registry.address)
    twin = keys.Signature(signature_bytes=high_s[:64] + bytes([high_s[64] - 27]))
    assert twin.recover_public_key_from_msg_hash(digest).to_checksum_address() == keeper.address
    assert int.from_bytes(high_s[32:64], "big") > SECP256K1_N // 2

    with ape.reverts("ecdsa: invalid signature `s` value"):
        submit([update], signatures=[high_s])
    submit([update], signatures=[low_s])


@pytest.mark.parametrize("defect", ["v=0", "v=29", "r=0", "all-zero"])
def test_submit_updates__signature_recovering_to_zero_address(
    registry, submit, make_update, chain, keeper, defect
):
    update = make_update()
    good = signed(registry, chain, [update], keeper)
    r, s, v = good[:32], good[32:64], good[64:]
    bad = {
        "v=0": r + s + b"\x00",
        "v=29": r + s + b"\x1d",
        "r=0": bytes(32) + s + v,
        "all-zero": bytes(65),
    }[defect]

    with ape.reverts("ecdsa: invalid signature"):
        submit([update], signatures=[bad])


def test_submit_updates__compact_64_byte_signature(registry, submit, make_update, chain, keeper):
    update = make_update()
    good = signed(registry, chain, [update], keeper)
    vs = int.from_bytes(good[32:64], "big") | ((good[64] - 27) << 255)
    compact = good[:32] + vs.to_bytes(32, "big")  # EIP-2098: same signer, second encoding

    with ape.reverts("registry: signature must be 65 bytes"):
        submit([update], signatures=[compact])


def test_submit_updates__signature_by_a_non_keeper(registry, submit, make_update):
    outsider = Account.from_key(b"\x77" * 32)

    with ape.reverts("registry: signer is not a keeper"):
        submit([make_update()], keys=[outsider])


def test_submit_updates__removed_keepers_signature(
    registry, owner, submit, make_update, keeper, second_keeper
):
    registry.remove_keeper(keeper.address, sender=owner)
    update = make_update()

    with ape.reverts("registry: signer is not a keeper"):
        submit([update], keys=[keeper])
    submit([update], keys=[second_keeper])


def test_submit_updates__update_altered_after_signing(registry, submit, make_update, chain, keeper):
    signed_update = make_update(multiplier=2 * WAD)
    altered = make_update(multiplier=10 * WAD)

    with ape.reverts("registry: signer is not a keeper"):
        submit([altered], signatures=[signed(registry, chain, [signed_update], keeper)])


def test_submit_updates__same_signer_counted_twice(
    registry, owner, submit, make_update, chain, keeper, second_keeper
):
    registry.set_signer_threshold(2, sender=owner)
    update = make_update()
    signature = signed(registry, chain, [update], keeper)

    with ape.reverts("registry: duplicate signer"):
        submit([update], signatures=[signature, signature])
    submit([update], keys=[keeper, second_keeper])


def test_submit_updates__fewer_signatures_than_threshold(
    registry, owner, submit, make_update, keeper, second_keeper
):
    registry.set_signer_threshold(2, sender=owner)

    with ape.reverts("registry: not enough signatures"):
        submit([make_update()], keys=[keeper])


def test_submit_updates__no_signature(registry, submit, make_update):
    with ape.reverts("registry: not enough signatures"):
        submit([make_update()], signatures=[])


def test_submit_updates__threshold_met_only_with_a_non_keeper(
    registry, owner, submit, make_update, keeper, second_keeper
):
    registry.set_signer_threshold(2, sender=owner)
    outsider = Account.from_key(b"\x77" * 32)

    with ape.reverts("registry: signer is not a keeper"):
        submit([make_update()], keys=[keeper, outsider])


def test_submit_updates__empty_batch(registry, submit):
    with ape.reverts("registry: empty batch"):
        submit([], signatures=[])


# Times


def test_submit_updates__expired_deadline(registry, submit, make_update, chain):
    now = chain.pending_timestamp

    with ape.reverts("registry: update past its deadline"):
        submit([make_update(deadline=now - 1)])


def test_submit_updates__observed_at_equal_to_the_last(registry, submit, make_update, first_update):
    first, _ = first_update

    with ape.reverts("registry: observed_at not after the last update"):
        submit([make_update(multiplier=3 * WAD, observed_at=first.observed_at)])


def test_submit_updates__observed_at_before_the_last(registry, submit, make_update, first_update):
    first, _ = first_update

    with ape.reverts("registry: observed_at not after the last update"):
        submit([make_update(observed_at=first.observed_at - 1)])


def test_submit_updates__observed_at_in_the_future(registry, submit, make_update, chain):
    now = chain.pending_timestamp

    with ape.reverts("registry: observed_at in the future"):
        submit([make_update(observed_at=now + 1)])


# Guardrails


def test_submit_updates__multiplier_below_min(registry, submit, make_update):
    with ape.reverts("registry: multiplier below minimum"):
        submit([make_update(multiplier=G.min_multiplier - 1)])


def test_submit_updates__multiplier_above_max(registry, submit, make_update):
    with ape.reverts("registry: multiplier above maximum"):
        submit([make_update(multiplier=G.max_multiplier + 1)])


def test_submit_updates__increase_beyond_max_increase(registry, submit, make_update, first_update):
    with ape.reverts("registry: update exceeds max increase"):
        submit([make_update(multiplier=FIRST_MULTIPLIER * 3 // 2 + 1)])
    assert registry.target_multiplier(MARKET_BTC) == FIRST_MULTIPLIER


def test_submit_updates__decrease_beyond_max_decrease(registry, submit, make_update, first_update):
    with ape.reverts("registry: update exceeds max decrease"):
        submit([make_update(multiplier=FIRST_MULTIPLIER * 9 // 10 - 1)])
    assert registry.target_multiplier(MARKET_BTC) == FIRST_MULTIPLIER


def test_submit_updates__decrease_inside_min_decrease_interval(
    registry, submit, make_update, first_update, chain
):
    decrease = submit([make_update(multiplier=19 * WAD // 10)])
    land_at(chain, decrease.timestamp + G.min_decrease_interval - 1)

    with ape.reverts("registry: decrease inside min interval"):
        submit([make_update(multiplier=18 * WAD // 10)])
    assert registry.target_multiplier(MARKET_BTC) == 19 * WAD // 10


def test_submit_updates__two_decreases_in_one_batch(
    registry, submit, make_update, first_update, chain
):
    now = chain.pending_timestamp
    down = make_update(multiplier=19 * WAD // 10, observed_at=now - 1)
    down_again = make_update(multiplier=18 * WAD // 10, observed_at=now)

    with ape.reverts("registry: market already updated in this block"):
        submit([down, down_again])
    assert registry.target_multiplier(MARKET_BTC) == FIRST_MULTIPLIER


@pytest.mark.parametrize("sign", [1, -1], ids=["longs-pay", "shorts-pay"])
def test_submit_updates__funding_beyond_its_bound(registry, submit, make_update, sign):
    with ape.reverts("registry: funding rate beyond its bound"):
        submit([make_update(funding_rate=sign * (G.max_funding_rate + 1))])


def test_submit_updates__unknown_market(registry, submit, make_update):
    with ape.reverts("registry: unknown market"):
        submit([make_update(market_id=99)])


def test_submit_updates__one_bad_update_in_twenty_applies_nothing(
    registry, owner, submit, make_update
):
    markets = list(range(1, 21))
    for market_id in markets[1:]:
        configure(registry, owner, market_id)
    submit([make_update(m, multiplier=2 * WAD, funding_rate=m) for m in markets])
    before = {m: state_of(registry, m) for m in markets}
    in_force = {m: registry.multiplier(m) for m in markets}
    # Nineteen valid +10% steps, then one +60% step at the very end.
    batch = [make_update(m, multiplier=22 * WAD // 10, funding_rate=-m) for m in markets[:-1]]
    batch.append(make_update(markets[-1], multiplier=32 * WAD // 10))

    with ape.reverts("registry: update exceeds max increase"):
        submit(batch)

    for m in markets:
        assert state_of(registry, m) == before[m]
        assert registry.multiplier(m) == in_force[m] == 2 * WAD
        assert registry.funding_rate(m) == m
    batch[-1] = make_update(markets[-1], multiplier=22 * WAD // 10)
    submit(batch)  # the batch without its bad update goes through
    assert all(registry.target_multiplier(m) == 22 * WAD // 10 for m in markets)


# Pause


def test_submit_updates__while_paused(registry, guardian, submit, make_update, first_update):
    notional = 3_000_000 * WAD
    views = {
        "multiplier": lambda: registry.multiplier(MARKET_BTC),
        "maintenance": lambda: registry.maintenance_margin(MARKET_BTC, notional),
        "initial": lambda: registry.initial_margin(MARKET_BTC, notional),
        "both": lambda: tuple(registry.margin_requirements(MARKET_BTC, notional)),
        "funding": lambda: registry.funding_rate(MARKET_BTC),
        "stale": lambda: registry.is_stale(MARKET_BTC),
        "last": lambda: tuple(registry.last_update(MARKET_BTC)),
        "state": lambda: state_of(registry),
    }
    before = {name: read() for name, read in views.items()}
    update = make_update(multiplier=3 * WAD)

    registry.pause(sender=guardian)
    with ape.reverts("registry: paused"):
        submit([update])

    assert {name: read() for name, read in views.items()} == before
    assert before["maintenance"] == 50_000 * WAD  # (5,000 + 20,000) at 2x: reads are real
    registry.unpause(sender=guardian)
    submit([update])
    assert registry.target_multiplier(MARKET_BTC) == 3 * WAD


def test_multiplier__paused_market_falls_back_to_stale(registry, owner, first_update, chain):
    _, receipt = first_update
    registry.pause(sender=owner)

    chain.mine(timestamp=receipt.timestamp + G.heartbeat + 1)

    assert registry.is_stale(MARKET_BTC)
    assert registry.multiplier(MARKET_BTC) == G.stale_multiplier


# Roles


def test_add_keeper__stranger(registry, stranger, keepers):
    with ape.reverts("ownable: caller is not the owner"):
        registry.add_keeper(keepers[1].address, sender=stranger)
    assert not registry.is_keeper(keepers[1].address)


def test_remove_keeper__stranger(registry, stranger, keeper):
    with ape.reverts("ownable: caller is not the owner"):
        registry.remove_keeper(keeper.address, sender=stranger)
    assert registry.is_keeper(keeper.address)


def test_set_signer_threshold__stranger(registry, owner, stranger, second_keeper):
    with ape.reverts("ownable: caller is not the owner"):
        registry.set_signer_threshold(2, sender=stranger)
    assert registry.signer_threshold() == 1


def test_pause__stranger(registry, stranger):
    with ape.reverts("registry: caller is not owner or guardian"):
        registry.pause(sender=stranger)
    assert not registry.paused()


def test_unpause__stranger(registry, owner, stranger):
    registry.pause(sender=owner)

    with ape.reverts("registry: caller is not owner or guardian"):
        registry.unpause(sender=stranger)
    assert registry.paused()


def test_set_guardian__stranger(registry, guardian, stranger):
    with ape.reverts("ownable: caller is not the owner"):
        registry.set_guardian(stranger, sender=stranger)
    assert registry.guardian() == guardian.address


def test_set_guardian__guardian_cannot_replace_itself(registry, guardian, stranger):
    with ape.reverts("ownable: caller is not the owner"):
        registry.set_guardian(stranger, sender=guardian)


def test_transfer_ownership__stranger(registry, stranger):
    with ape.reverts("ownable: caller is not the owner"):
        registry.transfer_ownership(stranger, sender=stranger)
