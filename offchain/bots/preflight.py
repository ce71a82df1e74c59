"""Pre-flight checks before a bot starts: the config must match the chain it runs against.

A bot that starts against the wrong address, a market the registry does not know, a key that is
not a keeper or an empty liquidator account does nothing useful and says little: these checks
make each of those a one-line refusal before the first tick (:class:`PreflightError`, a
``ConfigError``: exit code 2). In a dry run the checks about the key (keeper authorisation,
funded subaccount) only warn.

- the registry address holds code and answers ``eip712Domain()`` with the registry's name;
- the engine address holds code, answers ``accounts_with_positions_count()`` and points at the
  configured registry;
- every configured market is configured in the registry, and its feed holds code and answers;
- the keeper's key is an authorised keeper; the liquidator's subaccount holds collateral;
- each warm-up history ends near the feed's last answer, in time and in price
  (``keeper.history_max_gap_seconds``, ``keeper.history_max_price_gap``; ``keeper.history_check:
  warn`` logs instead of refusing): a model warmed up on a distant past prices a market that
  no longer exists;
- the keeper's other contracts (:func:`check_keeper_contracts`): ``scenarios.registry`` answers
  the scenario registry's EIP-712 name and uses the configured risk registry (and engine);
  ``profiles.registry`` likewise for the profile registry, whose classes must be those of the
  shipped table at ``profiles.scale``; ``relay`` relays to exactly these two registries; each
  reference funding feed holds code and answers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from offchain.bots.bot_config import BotConfig, ConfigError
from offchain.bots.keeper import KeeperMarket
from offchain.protocol.chain import (
    CallFailed,
    EngineClient,
    FeedClient,
    FeedReading,
    RegistryClient,
)

log = logging.getLogger("dmm.preflight")

REGISTRY_DOMAIN = "DynamicMarginRiskRegistry"
SCENARIO_DOMAIN = "DynamicMarginScenarioRegistry"
PROFILE_DOMAIN = "DynamicMarginProfileRegistry"


class PreflightError(ConfigError):
    """The config does not match the chain; the message names what and where."""


def _when(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d %H:%M UTC")


def _span(seconds: float) -> str:
    s = abs(seconds)
    if s >= 2 * 86400 * 365:
        return f"{s / (86400 * 365.25):.1f} years"
    if s >= 2 * 86400:
        return f"{s / 86400:.1f} days"
    if s >= 2 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s:.0f} s"


def has_code(w3: Any, address: str) -> bool:
    return bool(bytes(w3.eth.get_code(address)))


def check_registry(w3: Any, registry: RegistryClient, key: str = "registry") -> None:
    """``registry`` is a Dynamic Margin registry (code, and a view that answers its name)."""
    if not has_code(w3, registry.address):
        raise PreflightError(f"{key}: no contract at {registry.address} on chain {w3.eth.chain_id}")
    try:
        name = registry.domain_name()
    except CallFailed as exc:
        raise PreflightError(f"{key}: {registry.address} is not a risk registry ({exc})") from None
    if name != REGISTRY_DOMAIN:
        raise PreflightError(f"{key}: {registry.address} is {name!r}, not a {REGISTRY_DOMAIN}")


def check_engine(w3: Any, engine: EngineClient, registry: str | None, key: str = "engine") -> None:
    """``engine`` is a margin engine (code, its views answer) bound to ``registry`` if given."""
    if not has_code(w3, engine.address):
        raise PreflightError(f"{key}: no contract at {engine.address} on chain {w3.eth.chain_id}")
    try:
        engine.count()
        bound = engine.registry_address()
    except CallFailed as exc:
        raise PreflightError(f"{key}: {engine.address} is not a margin engine ({exc})") from None
    if registry is not None and bound.lower() != registry.lower():
        raise PreflightError(
            f"{key}: the engine at {engine.address} uses registry {bound}, the config names"
            f" {registry}"
        )


def check_markets(
    w3: Any, registry: RegistryClient, feeds: FeedClient, markets: Sequence[KeeperMarket]
) -> dict[int, FeedReading]:
    """Every market configured in the registry, every feed answering; the feeds' readings."""
    readings: dict[int, FeedReading] = {}
    for i, m in enumerate(markets):
        if not registry.is_configured(m.market_id):
            raise PreflightError(
                f"markets[{i}].id: market {m.market_id} is not configured in the registry at"
                f" {registry.address}"
            )
        if not has_code(w3, m.feed):
            raise PreflightError(f"markets[{i}].feed: no contract at {m.feed}")
        try:
            readings[m.market_id] = feeds.latest(m.feed)
        except CallFailed as exc:
            raise PreflightError(f"markets[{i}].feed: {exc}") from None
    return readings


def check_keeper_key(registry: RegistryClient, address: str | None, dry_run: bool) -> None:
    """The keeper's key is authorised in the registry (a warning in a dry run)."""
    if address is None or registry.is_keeper(address):
        return
    message = f"the key {address} is not an authorised keeper of the registry {registry.address}"
    if not dry_run:
        raise PreflightError(f"{message} (the owner adds it with add_keeper)")
    log.warning("pre-flight: %s; a dry run goes on", message)


def check_liquidator_funds(
    engine: EngineClient, address: str | None, subaccount: int, dry_run: bool
) -> int:
    """The liquidator's subaccount holds collateral (it must meet initial margin after each
    takeover); returns the collateral (WAD, USD)."""
    if address is None:
        return 0
    collateral = engine.collateral_of(address, subaccount)
    if collateral <= 0:
        message = (
            f"liquidator.subaccount: {address}/{subaccount} holds no collateral in the engine at"
            f" {engine.address}: every takeover would fail its initial margin (deposit first)"
        )
        if not dry_run:
            raise PreflightError(message)
        log.warning("pre-flight: %s", message)
    return collateral


def history_problem(
    times: Sequence[int],
    prices: Sequence[float],
    reading: FeedReading,
    max_gap_seconds: int,
    max_price_gap: float,
) -> str | None:
    """Why a warm-up history does not lead up to the feed's last answer, or ``None``."""
    if not times:
        return None
    last_t, last_p = int(times[-1]), float(prices[-1])
    gap = reading.updated_at - last_t
    if abs(gap) > max_gap_seconds:
        side = "before" if gap > 0 else "after"
        return (
            f"the warm-up history ends {_when(last_t)}, {_span(gap)} {side} the feed's last"
            f" answer ({_when(reading.updated_at)}); allowed: {_span(max_gap_seconds)}"
        )
    if reading.price > 0 and last_p > 0:
        move = reading.price / last_p - 1
        if abs(move) > max_price_gap:
            return (
                f"the warm-up history ends at {last_p:,.2f}, the feed answers"
                f" {reading.price:,.2f} ({move:+.1%}; allowed {max_price_gap:.0%})"
            )
    return None


def check_histories(
    cfg: BotConfig,
    histories: dict[int, tuple[list[int], list[float]]],
    readings: dict[int, FeedReading],
) -> list[str]:
    """Each history against its feed; refuses (or, with ``history_check: warn``, returns the
    warnings)."""
    k = cfg.file.keeper
    warnings = []
    for i, m in enumerate(cfg.file.markets):
        if m.id not in histories or m.id not in readings:
            continue
        times, prices = histories[m.id]
        problem = history_problem(
            times, prices, readings[m.id], k.history_max_gap_seconds, k.history_max_price_gap
        )
        if problem is None:
            continue
        where = f"{cfg.source}: markets[{i}].history"
        if k.history_check == "refuse":
            raise PreflightError(f"{where}: {problem} (keeper.history_check: warn runs anyway)")
        log.warning("pre-flight: %s: %s", where, problem)
        warnings.append(problem)
    return warnings


def _same(a: str, b: str) -> bool:
    return a.lower() == b.lower()


def _named(w3: Any, client: Any, key: str, domain: str) -> None:
    if not has_code(w3, client.address):
        raise PreflightError(f"{key}: no contract at {client.address} on chain {w3.eth.chain_id}")
    try:
        name = client.domain_name()
    except CallFailed as exc:
        raise PreflightError(f"{key}: {client.address} is not a {domain} ({exc})") from None
    if name != domain:
        raise PreflightError(f"{key}: {client.address} is {name!r}, not a {domain}")


def check_keeper_contracts(w3: Any, cfg: BotConfig, registry: str) -> list[str]:
    """The scenario registry, profile registry, relay and reference feeds of the config are
    those contracts and belong to ``registry`` (and the configured engine); returns notes."""
    from offchain.protocol.keeper_clients import (
        ProfileRegistryClient,
        RelayClient,
        ScenarioRegistryClient,
    )

    f = cfg.file
    notes: list[str] = []
    engine = str(f.engine) if f.engine else None
    try:
        if f.scenarios is not None:
            sc = ScenarioRegistryClient(w3, f.scenarios.registry)
            _named(w3, sc, "scenarios.registry", SCENARIO_DOMAIN)
            if not _same(sc.risk_registry(), registry):
                raise PreflightError(
                    f"scenarios.registry: {sc.address} uses risk registry {sc.risk_registry()},"
                    f" the config names {registry}"
                )
            if engine and not _same(sc.engine(), engine):
                raise PreflightError(
                    f"scenarios.registry: {sc.address} pushes into engine {sc.engine()}, the"
                    f" config names {engine}"
                )
            notes.append(f"scenario registry {sc.address}")
        if f.profiles is not None:
            pr = ProfileRegistryClient(w3, f.profiles.registry)
            _named(w3, pr, "profiles.registry", PROFILE_DOMAIN)
            if not _same(pr.risk_registry(), registry):
                raise PreflightError(
                    f"profiles.registry: {pr.address} uses risk registry {pr.risk_registry()},"
                    f" the config names {registry}"
                )
            if engine and not _same(pr.engine(), engine):
                raise PreflightError(
                    f"profiles.registry: {pr.address} pushes into engine {pr.engine()}, the"
                    f" config names {engine}"
                )
            notes.append(f"profile registry {pr.address}")
        if f.relay is not None:
            rl = RelayClient(w3, f.relay)
            if not has_code(w3, rl.address):
                raise PreflightError(f"relay: no contract at {rl.address}")
            scenarios = f.scenarios.registry if f.scenarios is not None else ""
            if not _same(rl.risk_registry(), registry) or not _same(
                rl.scenario_registry(), scenarios
            ):
                raise PreflightError(
                    f"relay: {rl.address} relays to {rl.risk_registry()} and"
                    f" {rl.scenario_registry()}, not to the configured registry and scenarios"
                )
            notes.append(f"relay {rl.address}")
    except CallFailed as exc:
        raise PreflightError(str(exc)) from None
    feeds = FeedClient(w3)
    for i, m in enumerate(f.markets):
        if m.funding is None or m.funding.mode != "reference" or m.funding.feed is None:
            continue
        key = f"markets[{i}].funding.feed"
        if not has_code(w3, m.funding.feed):
            raise PreflightError(f"{key}: no contract at {m.funding.feed}")
        try:
            feeds.latest(m.funding.feed)
        except CallFailed as exc:
            raise PreflightError(f"{key}: {exc}") from None
    return notes


def check_profile_classes(planner: Any, scale: str) -> None:
    """Every class of the planner's table (the shipped one at ``scale``) is defined on chain as
    the table says (multiplier and minimums): the keeper would otherwise sign classes that mean
    something else."""
    for c in planner.table.classes:
        got = planner.client.account_class(c.class_id)
        if got != c.as_tuple():
            raise PreflightError(
                f"profiles.scale: class {c.class_id} ({c.name}) is {got} on chain, the shipped"
                f" table ({scale}) says {c.as_tuple()}: define the classes or fix the scale"
            )


__all__ = [
    "PreflightError",
    "check_engine",
    "check_histories",
    "check_keeper_contracts",
    "check_keeper_key",
    "check_liquidator_funds",
    "check_markets",
    "check_profile_classes",
    "check_registry",
    "history_problem",
]
