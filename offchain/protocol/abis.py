"""The ABI fragments the bots call: the registry's, the engine's and a Chainlink-style feed's
(the contracts' full ABIs live in ``.build``), written as JSON-ABI dicts so that the bots need no
compiler at run time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _param(name: str, typ: str, components: list[dict] | None = None) -> dict:
    out: dict[str, Any] = {"name": name, "type": typ}
    if components is not None:
        out["components"] = components
    return out


def _fn(
    name: str, inputs: Sequence[dict], outputs: Sequence[dict], mutability: str = "view"
) -> dict:
    return {
        "type": "function",
        "name": name,
        "inputs": list(inputs),
        "outputs": list(outputs),
        "stateMutability": mutability,
    }


def _u(name: str = "") -> dict:
    return _param(name, "uint256")


def _i(name: str = "") -> dict:
    return _param(name, "int256")


def _a(name: str = "") -> dict:
    return _param(name, "address")


_GUARDRAILS = [
    _u(n)
    for n in (
        "min_multiplier",
        "max_multiplier",
        "max_increase",
        "max_decrease",
        "min_decrease_interval",
        "heartbeat",
        "stale_multiplier",
        "increase_ramp",
        "max_funding_rate",
    )
]
_MARKET_STATE = [
    _u("target"),
    _u("ramp_from"),
    _i("funding_rate"),
    _u("updated_at"),
    _u("observed_at"),
    _u("last_decrease_at"),
]
_RISK_UPDATE = [
    _u("market_id"),
    _u("multiplier"),
    _i("funding_rate"),
    _u("observed_at"),
    _u("deadline"),
    _param("model_hash", "bytes32"),
]
_SUBACCOUNT = [_a("owner"), _u("subaccount")]
_HEALTH = [_i("equity"), _u("maintenance"), _u("initial"), _param("liquidatable", "bool")]
_MARKET_CONFIG = [
    _a("feed"),
    _u("max_price_age"),
    _u("price_band"),
    _u("liquidation_fee"),
    _u("liquidator_share"),
    _u("oi_cap"),
]

REGISTRY_ABI = [
    _fn("multiplier", [_u("market_id")], [_u()]),
    _fn("target_multiplier", [_u("market_id")], [_u()]),
    _fn("funding_rate", [_u("market_id")], [_i()]),
    _fn("is_stale", [_u("market_id")], [_param("", "bool")]),
    _fn("is_configured", [_u("market_id")], [_param("", "bool")]),
    _fn("last_update", [_u("market_id")], [_u(), _u()]),
    _fn("market_state", [_u("market_id")], [_param("", "tuple", _MARKET_STATE)]),
    _fn("guardrails", [_u("market_id")], [_param("", "tuple", _GUARDRAILS)]),
    _fn("tiers", [_u("market_id")], [_param("", "tuple[]", [_u("notional_floor"), _u("rate")])]),
    _fn("paused", [], [_param("", "bool")]),
    _fn(
        "eip712Domain",
        [],
        [
            _param("fields", "bytes1"),
            _param("name", "string"),
            _param("version", "string"),
            _u("chainId"),
            _a("verifyingContract"),
            _param("salt", "bytes32"),
            _param("extensions", "uint256[]"),
        ],
    ),
    _fn("signer_threshold", [], [_u()]),
    _fn("is_keeper", [_a("signer")], [_param("", "bool")]),
    _fn(
        "submit_updates",
        [
            _param("updates", "tuple[]", _RISK_UPDATE),
            _param("signatures", "bytes[]"),
        ],
        [],
        "nonpayable",
    ),
    {
        "type": "event",
        "name": "RiskUpdated",
        "anonymous": False,
        "inputs": [
            {**_u("market_id"), "indexed": True},
            {**_u("old_multiplier"), "indexed": False},
            {**_u("new_multiplier"), "indexed": False},
            {**_i("old_funding_rate"), "indexed": False},
            {**_i("new_funding_rate"), "indexed": False},
            {**_u("observed_at"), "indexed": False},
            {**_param("model_hash", "bytes32"), "indexed": False},
        ],
    },
]

ENGINE_ABI = [
    _fn("REGISTRY", [], [_a()]),
    _fn("COLLATERAL", [], [_a()]),
    _fn("accounts_with_positions_count", [], [_u()]),
    _fn(
        "accounts_with_positions",
        [_u("start"), _u("limit")],
        [_param("", "tuple[]", _SUBACCOUNT)],
    ),
    _fn("users_to_liquidate", [_u("start"), _u("limit")], [_param("", "tuple[]", _SUBACCOUNT)]),
    _fn(
        "health_batch",
        [_param("owners", "address[]"), _param("subaccounts", "uint256[]")],
        [_param("", "tuple[]", _HEALTH)],
    ),
    _fn("account_health", [_a("owner"), _u("subaccount")], [_i(), _u(), _u()]),
    _fn("is_liquidatable", [_a("owner"), _u("subaccount")], [_param("", "bool")]),
    _fn("markets_of", [_a("owner"), _u("subaccount")], [_param("", "uint256[]")]),
    _fn("position", [_a("owner"), _u("subaccount"), _u("market_id")], [_i(), _i()]),
    _fn("collateral_of", [_a("owner"), _u("subaccount")], [_i()]),
    _fn("insurance_fund", [], [_u()]),
    _fn("bad_debt", [], [_u()]),
    _fn("deficit", [], [_u()]),
    _fn("trailing_volume", [_a("owner")], [_u()]),
    _fn("premium_accumulator", [_u("market_id")], [_i(), _u()]),
    _fn("funding_reserve_seconds", [_u("market_id")], [_u()]),
    _fn("open_interest", [_u("market_id")], [_u()]),
    _fn("mark_price", [_u("market_id")], [_u(), _param("", "bool")]),
    _fn("market_config", [_u("market_id")], [_param("", "tuple", _MARKET_CONFIG)]),
    _fn(
        "liquidate",
        [_a("owner"), _u("subaccount"), _u("market_id"), _u("size"), _u("liquidator_subaccount")],
        [_u()],
        "nonpayable",
    ),
    _fn("backstop", [_a("owner"), _u("subaccount")], [], "nonpayable"),
    _fn(
        "deleverage",
        [_a("owner"), _u("subaccount"), _u("market_id"), _u("size")],
        [_u()],
        "nonpayable",
    ),
    _fn("repay_bad_debt", [], [_u()], "nonpayable"),
    {
        "type": "event",
        "name": "Liquidation",
        "anonymous": False,
        "inputs": [
            {**_u("market_id"), "indexed": True},
            {**_a("owner"), "indexed": True},
            {**_u("subaccount"), "indexed": False},
            {**_a("liquidator"), "indexed": True},
            {**_u("liquidator_subaccount"), "indexed": False},
            {**_i("size"), "indexed": False},
            {**_u("price"), "indexed": False},
            {**_u("penalty"), "indexed": False},
            {**_u("liquidator_reward"), "indexed": False},
        ],
    },
    {
        "type": "event",
        "name": "Backstop",
        "anonymous": False,
        "inputs": [
            {**_a("owner"), "indexed": True},
            {**_u("subaccount"), "indexed": True},
            {**_i("equity"), "indexed": False},
            {**_u("covered"), "indexed": False},
            {**_u("bad_debt"), "indexed": False},
        ],
    },
    {
        "type": "event",
        "name": "Deleveraged",
        "anonymous": False,
        "inputs": [
            {**_u("market_id"), "indexed": True},
            {**_a("owner"), "indexed": True},
            {**_u("subaccount"), "indexed": False},
            {**_a("caller"), "indexed": True},
            {**_i("size"), "indexed": False},
            {**_u("price"), "indexed": False},
            {**_u("transfer"), "indexed": False},
            {**_i("unrealised_pnl"), "indexed": False},
            {**_i("equity"), "indexed": False},
            {**_u("deficit_after"), "indexed": False},
        ],
    },
]

FEED_ABI = [
    _fn("decimals", [], [_param("", "uint8")]),
    _fn(
        "latestRoundData",
        [],
        [
            _param("roundId", "uint80"),
            _i("answer"),
            _u("startedAt"),
            _u("updatedAt"),
            _param("answeredInRound", "uint80"),
        ],
    ),
    _fn("set_answer", [_i("answer")], [], "nonpayable"),
    _fn("set_round", [_i("answer"), _u("updated_at")], [], "nonpayable"),
]
