"""What the Silverback modules share: config from ``DMM_CONFIG``, one tick at a time."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from offchain.bots.builders import load_config, load_key
from offchain.protocol.chain import Block, connect

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


def bot_config() -> dict[str, Any]:
    """The YAML file named by ``DMM_CONFIG`` (see ``offchain/bots/keeper.example.yaml``)."""
    path = os.environ.get("DMM_CONFIG")
    if not path:
        raise RuntimeError("set DMM_CONFIG to the bot's YAML config")
    return load_config(path)


def bot_web3(cfg: dict[str, Any], provider: Any) -> Any:
    """A ``Web3`` on the config's RPC, or on the node Silverback is connected to."""
    url = cfg.get("rpc") or getattr(provider, "uri", None)
    if not url:
        raise RuntimeError("no RPC URL: set 'rpc' in the config")
    return connect(str(url), timeout=float(cfg.get("rpc_timeout", 10)))


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
