"""Chain clients for the keeper's other batches: the scenario registry, the profile registry and
the keeper relay (reads, and the calldata of each submission).

Same conventions as :mod:`offchain.protocol.chain`: views go through ``call_view`` (a revert or
a wrong address is one :class:`~offchain.protocol.chain.CallFailed` line naming the call),
submissions are encoded here and sent by the :class:`~offchain.protocol.tx_sender.TxSender`.
Only the functions used are in the ABIs below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from eth_utils import to_checksum_address
from web3 import Web3

from offchain.protocol.abis import _a, _fn, _param, _u
from offchain.protocol.chain import call_view
from offchain.protocol.portfolio_math import GroupParams, ShockGuardrails, unpack_shocks
from offchain.protocol.signing import ProfileUpdate, RiskUpdate, ScenarioUpdate

_BYTES32 = _param("model_hash", "bytes32")
_SCENARIO_UPDATE = [
    _u("group_id"),
    _u("count"),
    _param("shocks", "uint256[]"),
    _u("observed_at"),
    _u("deadline"),
    _BYTES32,
]
_RISK_UPDATE = [
    _u("market_id"),
    _u("multiplier"),
    _param("funding_rate", "int256"),
    _u("observed_at"),
    _u("deadline"),
    _BYTES32,
]
_PROFILE_UPDATE = [
    _a("owner"),
    _u("subaccount"),
    _u("class_id"),
    _u("observed_at"),
    _u("deadline"),
    _BYTES32,
]
_GROUP_CONFIG = [
    _param("markets", "uint256[]"),
    _param("max_shocks", "uint256[]"),
    _param("max_steps", "uint256[]"),
    _u("heartbeat"),
    _u("residual"),
    _u("floor"),
    _u("initial_ratio"),
]
_GROUP_STATE = [
    _u("count"),
    _param("shocks", "uint256[]"),
    _u("observed_at"),
    _u("updated_at"),
]
_SIGNATURES = _param("signatures", "bytes[]")
_DOMAIN = _fn(
    "eip712Domain",
    [],
    [
        _param("", "bytes1"),
        _param("", "string"),
        _param("", "string"),
        _u(),
        _a(),
        _param("", "bytes32"),
        _param("", "uint256[]"),
    ],
)

SCENARIO_REGISTRY_ABI = [
    _DOMAIN,
    _fn("RISK_REGISTRY", [], [_a()]),
    _fn("ENGINE", [], [_a()]),
    _fn("group_of", [_u("market_id")], [_u()]),
    _fn("is_fresh", [_u("group_id")], [_param("", "bool")]),
    _fn(
        "group",
        [_u("group_id")],
        [_param("", "tuple", _GROUP_CONFIG), _param("", "tuple", _GROUP_STATE)],
    ),
    _fn(
        "submit_scenarios",
        [_param("updates", "tuple[]", _SCENARIO_UPDATE), _SIGNATURES],
        [],
        "nonpayable",
    ),
]
PROFILE_REGISTRY_ABI = [
    _DOMAIN,
    _fn("RISK_REGISTRY", [], [_a()]),
    _fn("ENGINE", [], [_a()]),
    _fn("heartbeat", [], [_u()]),
    _fn("min_multiplier", [], [_u()]),
    _fn("max_multiplier", [], [_u()]),
    _fn(
        "account_class",
        [_u("class_id")],
        [_param("", "tuple", [_u("multiplier"), _u("min_volume"), _u("min_equity")])],
    ),
    _fn(
        "profile",
        [_a("owner"), _u("subaccount")],
        [_param("", "tuple", [_u("class_id"), _u("observed_at"), _u("expires_at")])],
    ),
    _fn("is_eligible", [_a("owner"), _u("subaccount"), _u("class_id")], [_param("", "bool")]),
    _fn(
        "submit_profiles",
        [_param("updates", "tuple[]", _PROFILE_UPDATE), _SIGNATURES],
        [],
        "nonpayable",
    ),
]
RELAY_ABI = [
    _fn("RISK_REGISTRY", [], [_a()]),
    _fn("SCENARIO_REGISTRY", [], [_a()]),
    _fn(
        "relay",
        [
            _param("updates", "tuple[]", _RISK_UPDATE),
            _param("update_signatures", "bytes[]"),
            _param("scenarios", "tuple[]", _SCENARIO_UPDATE),
            _param("scenario_signatures", "bytes[]"),
        ],
        [],
        "nonpayable",
    ),
]


def _calldata(contract: Any, name: str, args: list[Any]) -> bytes:
    return bytes.fromhex(contract.encode_abi(name, args=args).removeprefix("0x"))


@dataclass(frozen=True)
class GroupOnChain:
    """A scenario group as the registry holds it: configuration and last accepted update."""

    group_id: int
    markets: tuple[int, ...]
    guardrails: ShockGuardrails
    params: GroupParams
    count: int
    shocks: tuple[int, ...]  # one packed word per market
    observed_at: int
    updated_at: int

    @property
    def configured(self) -> bool:
        return bool(self.markets)

    def in_force(self, now: int) -> bool:
        """Whether the last update is in force at ``now`` (the registry's rule)."""
        return self.updated_at != 0 and now <= self.updated_at + self.guardrails.heartbeat

    def shocks_by_market(self) -> list[list[int]]:
        """The last accepted shocks, ``[market][scenario]`` (bps)."""
        return [unpack_shocks(word, self.count) for word in self.shocks]


class _Client:
    KIND = "contract"
    ABI: ClassVar[list[dict]] = []

    def __init__(self, w3: Web3, address: str) -> None:
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.contract = w3.eth.contract(address=self.address, abi=self.ABI)

    def _call(self, name: str, *args: Any) -> Any:
        return call_view(self.contract, self.KIND, self.address, name, *args)

    def domain_name(self) -> str:
        """The EIP-712 domain name the contract answers."""
        return str(self._call("eip712Domain")[1])


class ScenarioRegistryClient(_Client):
    """Reads the ``ScenarioRegistry`` and encodes ``submit_scenarios``."""

    KIND = "scenarios"
    ABI = SCENARIO_REGISTRY_ABI

    def risk_registry(self) -> str:
        return str(self._call("RISK_REGISTRY"))

    def engine(self) -> str:
        return str(self._call("ENGINE"))

    def group_of(self, market_id: int) -> int:
        return int(self._call("group_of", market_id))

    def is_fresh(self, group_id: int) -> bool:
        return bool(self._call("is_fresh", group_id))

    def group(self, group_id: int) -> GroupOnChain:
        config, state = self._call("group", group_id)
        markets, bounds, steps, heartbeat, residual, floor, ratio = config
        count, shocks, observed_at, updated_at = state
        configured = bool(markets)
        return GroupOnChain(
            group_id=group_id,
            markets=tuple(int(m) for m in markets),
            guardrails=ShockGuardrails(
                tuple(int(b) for b in bounds) or (1,),
                tuple(int(s) for s in steps) or (1,),
                int(heartbeat) or 1,
            )
            if configured
            else ShockGuardrails((1,), (1,), 1),
            params=GroupParams(int(residual), int(floor), max(int(ratio), 10**18)),
            count=int(count),
            shocks=tuple(int(w) for w in shocks),
            observed_at=int(observed_at),
            updated_at=int(updated_at),
        )

    def encode_submit(
        self, updates: Sequence[ScenarioUpdate], signatures: Sequence[bytes]
    ) -> bytes:
        return _calldata(
            self.contract, "submit_scenarios", [[u.as_tuple() for u in updates], list(signatures)]
        )


class ProfileRegistryClient(_Client):
    """Reads the ``ProfileRegistry`` and encodes ``submit_profiles``."""

    KIND = "profiles"
    ABI = PROFILE_REGISTRY_ABI

    def risk_registry(self) -> str:
        return str(self._call("RISK_REGISTRY"))

    def engine(self) -> str:
        return str(self._call("ENGINE"))

    def heartbeat(self) -> int:
        return int(self._call("heartbeat"))

    def account_class(self, class_id: int) -> tuple[int, int, int]:
        """``(multiplier, min_volume, min_equity)`` (multiplier 0: not defined)."""
        m, v, e = self._call("account_class", class_id)
        return int(m), int(v), int(e)

    def profile(self, owner: str, subaccount: int) -> tuple[int, int, int]:
        """``(class_id, observed_at, expires_at)`` of the last accepted profile."""
        c, o, e = self._call("profile", to_checksum_address(owner), subaccount)
        return int(c), int(o), int(e)

    def is_eligible(self, owner: str, subaccount: int, class_id: int) -> bool:
        return bool(self._call("is_eligible", to_checksum_address(owner), subaccount, class_id))

    def encode_submit(self, updates: Sequence[ProfileUpdate], signatures: Sequence[bytes]) -> bytes:
        return _calldata(
            self.contract, "submit_profiles", [[u.as_tuple() for u in updates], list(signatures)]
        )


class RelayClient(_Client):
    """The ``KeeperRelay``: a risk batch and a scenario batch in one transaction."""

    KIND = "relay"
    ABI = RELAY_ABI

    def risk_registry(self) -> str:
        return str(self._call("RISK_REGISTRY"))

    def scenario_registry(self) -> str:
        return str(self._call("SCENARIO_REGISTRY"))

    def encode_relay(
        self,
        updates: Sequence[RiskUpdate],
        update_signatures: Sequence[bytes],
        scenarios: Sequence[ScenarioUpdate],
        scenario_signatures: Sequence[bytes],
    ) -> bytes:
        return _calldata(
            self.contract,
            "relay",
            [
                [u.as_tuple() for u in updates],
                list(update_signatures),
                [s.as_tuple() for s in scenarios],
                list(scenario_signatures),
            ],
        )


__all__ = [
    "PROFILE_REGISTRY_ABI",
    "RELAY_ABI",
    "SCENARIO_REGISTRY_ABI",
    "GroupOnChain",
    "ProfileRegistryClient",
    "RelayClient",
    "ScenarioRegistryClient",
]
