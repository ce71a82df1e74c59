"""Integration fixtures on anvil: a deployed devnet system, bots wired to it over JSON-RPC.

The bots talk to anvil through their own ``Web3`` clients (as in production); ape deploys and
plays the other actors (owner, exchange, traders).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from offchain.bots.keeper import Keeper, KeeperConfig, KeeperMarket
from offchain.bots.keeper_models import EwmaRiskModel
from offchain.bots.liquidator import Liquidator, LiquidatorConfig
from offchain.bots.metrics import BotMetrics
from offchain.devnet.system import DevnetMarket, System, deploy_system
from offchain.protocol.chain import EngineClient, FeedClient, RegistryClient, connect
from offchain.protocol.tx_sender import SenderConfig, TxSender

MARKET_BTC = 1
MARKET_ETH = 2
ANVIL = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "anvil"
HOUR = 3600
FAST_SENDER = SenderConfig(
    poll_interval=0.05, backoff_initial=0.05, backoff_max=0.4, rpc_retries=4, receipt_timeout=30
)


@pytest.fixture(autouse=True)
def _bot_logs(caplog):
    caplog.set_level(logging.INFO, logger="dmm")


@pytest.fixture(scope="session")
def owner(accounts):
    return accounts[0]


@pytest.fixture(scope="session")
def exchange(accounts):
    """An authorised exchange (an account stands in for the matching contract)."""
    return accounts[1]


@pytest.fixture(scope="session")
def maker(accounts):
    return accounts[2]


@pytest.fixture(scope="session")
def traders(accounts):
    return [accounts[3], accounts[4], accounts[5]]


@pytest.fixture(scope="session")
def liquidator_key(accounts) -> LocalAccount:
    """The liquidation bot's hot key (an ape test account, so ape can fund its subaccount)."""
    return Account.from_key(accounts[6].private_key)


@pytest.fixture(scope="session")
def keeper_key() -> LocalAccount:
    return Account.from_key(b"\x24" * 32)


@pytest.fixture(scope="session")
def rpc_url(chain) -> str:
    return chain.provider.uri


@pytest.fixture(scope="session")
def w3(rpc_url) -> Web3:
    return connect(rpc_url, timeout=5)


@pytest.fixture(scope="session")
def fund_eth(w3):
    def _fund(address: str, wei: int = 100 * 10**18) -> None:
        w3.provider.make_request("anvil_setBalance", [address, hex(wei)])

    return _fund


@pytest.fixture(scope="session")
def advance(w3):
    """Move the devnet clock forward (the next block is stamped ``seconds`` later)."""

    def _advance(seconds: int = 60) -> None:
        w3.provider.make_request("evm_increaseTime", [seconds])

    return _advance


@pytest.fixture
def system(owner, exchange, keeper_key, fund_eth) -> System:
    fund_eth(keeper_key.address)
    return deploy_system(
        owner,
        markets=[
            DevnetMarket(MARKET_BTC, "BTC", 60_000.0),
            DevnetMarket(MARKET_ETH, "ETH", 3_000.0),
        ],
        keepers=[keeper_key.address],
        exchange=exchange,
    )


@pytest.fixture
def registry_client(w3, system) -> RegistryClient:
    return RegistryClient(w3, system.registry.address)


@pytest.fixture
def engine_client(w3, system) -> EngineClient:
    return EngineClient(w3, system.engine.address)


@pytest.fixture
def keeper_config(system) -> KeeperConfig:
    return KeeperConfig(
        markets=tuple(
            KeeperMarket(m.market_id, system.feeds[m.market_id].address, m.name)
            for m in system.markets
        )
    )


@pytest.fixture
def make_keeper(w3, system, keeper_key, registry_client, keeper_config):
    """A keeper on the system; ``dry_run`` leaves out the sender."""

    def _make(dry_run: bool = False, config: KeeperConfig | None = None, **sender_kw) -> Keeper:
        sender = (
            None
            if dry_run
            else TxSender(w3, keeper_key, SenderConfig(**{**FAST_SENDER.__dict__, **sender_kw}))
        )
        return Keeper(
            config or keeper_config,
            registry_client,
            FeedClient(w3),
            EwmaRiskModel(),
            keeper_key,
            sender,
            w3.eth.chain_id,
            BotMetrics("keeper"),
            echo=lambda s: logging.getLogger("dmm.keeper").info(s),
        )

    return _make


@pytest.fixture
def make_liquidator(w3, system, liquidator_key, engine_client, fund_eth):
    def _make(subaccount: int = 1) -> Liquidator:
        fund_eth(liquidator_key.address)
        return Liquidator(
            engine_client,
            TxSender(w3, liquidator_key, FAST_SENDER),
            LiquidatorConfig(liquidator_subaccount=subaccount),
            BotMetrics("liquidator"),
        )

    return _make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AnvilProcess:
    """An anvil of our own on a free port, whose state survives a stop and a restart."""

    def __init__(self, state: Path, port: int | None = None, *extra: str) -> None:
        self.state = state
        self.port = port or free_port()
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [str(ANVIL), "--port", str(self.port), "--state", str(self.state), *self.extra]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy()
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"anvil did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.proc = None


@pytest.fixture
def own_anvil(tmp_path) -> Iterator[AnvilProcess]:
    node = AnvilProcess(tmp_path / "anvil-state.json")
    node.start()
    yield node
    node.stop()


def warm_up(keeper: Keeper, now: int, prices: dict[int, float], hours: int = 48) -> None:
    """Quiet hourly history (0.5%/h wiggle) ending an hour before ``now``."""
    for market_id, price in prices.items():
        times = [now - HOUR * (hours - i + 1) for i in range(hours)]
        series = [price * (1 + 0.005 * (-1) ** i) for i in range(hours)]
        keeper.warm_up(market_id, times, series)


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout:g} s")
        time.sleep(interval)


class RedisServer:
    """A ``redis-server`` of our own on a free loopback port, nothing written to disk."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make test installs it)")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        wait_until(self._answers(client), timeout=15, what=f"redis-server on port {self.port}")

    @staticmethod
    def _answers(client):
        def ping() -> bool:
            try:
                return bool(client.ping())
            except Exception:
                return False

        return ping

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.proc = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()
