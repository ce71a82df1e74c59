"""What the Silverback modules share: config from ``DMM_CONFIG``, pre-flight, one tick at a time.

Silverback imports the module to find ``bot``; a mistake found there (config, key, pre-flight)
ends the process with one line on stderr and exit code 2 (1 when the node does not answer),
instead of a traceback. Silverback's ``--network`` takes ``ecosystem:network:provider``; for a
node at a URL that is ``ethereum:local:http://127.0.0.1:8545`` (a bare URL is not a network).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from offchain.bots.bot_config import BotConfig
from offchain.bots.builders import load_config, load_key
from offchain.protocol.chain import Block, RpcUnavailable, connect
from offchain.protocol.config_files import ConfigFileError

log = logging.getLogger("dmm.bots")


def _operator_logs() -> None:
    """The bots' own log lines (what was pushed, why, gas) next to Silverback's."""
    root = logging.getLogger("dmm")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-8s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)


_operator_logs()


@contextmanager
def startup(name: str) -> Iterator[None]:
    """Turn a start-up mistake into one line on stderr and an exit code (2 config, 1 node)."""
    try:
        yield
    except ConfigFileError as exc:
        print(f"dmm {name} bot: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except RpcUnavailable as exc:
        print(f"dmm {name} bot: the node did not answer ({exc})", file=sys.stderr)
        raise SystemExit(1) from None


def bot_config() -> BotConfig:
    """The YAML file named by ``DMM_CONFIG`` (see ``offchain/bots/keeper.example.yaml``)."""
    path = os.environ.get("DMM_CONFIG")
    if not path:
        from offchain.bots.bot_config import ConfigError

        raise ConfigError("set DMM_CONFIG to the bot's YAML config")
    return load_config(path)


def required(cfg: BotConfig, key: str) -> str:
    """The config's ``registry`` or ``engine`` address; a one-line error without it."""
    value = getattr(cfg.file, key)
    if not value:
        from offchain.bots.bot_config import ConfigError

        raise ConfigError(f"{cfg.source}: {key}: required (the contract's address)")
    return str(value)


def bot_web3(cfg: BotConfig, provider: Any) -> Any:
    """A ``Web3`` on the config's RPC, or on the node Silverback is connected to."""
    url = cfg.file.rpc or getattr(provider, "uri", None)
    if not url:
        from offchain.bots.bot_config import ConfigError

        raise ConfigError("no RPC URL: set 'rpc' in the config")
    return connect(str(url), timeout=cfg.file.rpc_timeout)


def bot_key(env_var: str) -> Any:
    """The hot key from ``env_var`` (never a file in the repository); ``None``: dry run."""
    return load_key(None, env_var)


class NonOverlapping:
    """Runs ``tick`` for a block unless the previous tick is still running (then skips it)."""

    def __init__(self, name: str, tick: Callable[[Block], Any]) -> None:
        self.name = name
        self.tick = tick
        self._lock = threading.Lock()

    def __call__(self, block: Block) -> Any | None:
        if not self._lock.acquire(blocking=False):
            log.warning(
                "%s: block %d skipped, the previous tick is still running", self.name, block.number
            )
            return None
        try:
            return self.tick(block)
        finally:
            self._lock.release()


def as_block(block: Any) -> Block:
    """An ape block as the bots' ``Block`` (number, timestamp, base fee)."""
    return Block(int(block.number), int(block.timestamp), int(getattr(block, "base_fee", 0) or 0))
