"""The bots' loop on a scripted node: outages are measured in time since the node last answered
(any call), tick failures while it answers are counted."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from offchain.bots.loop import LoopConfig, TooManyFailures, run_loop
from offchain.bots.metrics import BotMetrics
from offchain.protocol.chain import Block, RpcUnavailable, TrackedHTTPProvider, last_answer

FAST = {"poll_interval": 0.001, "backoff_initial": 0.001, "backoff_max": 0.001}


class ScriptedNode:
    """``w3`` whose ``get_block`` follows a script: "up" answers (a new block), "down" raises.
    Every call moves the fake clock by ``step`` seconds; an answer stamps ``last_answer``."""

    def __init__(self, script: list[str], step: float = 10.0) -> None:
        self.script = list(script)
        self.now = 0.0
        self.step = step
        self.number = 0
        self.provider = SimpleNamespace(last_answer=None)
        self.eth = SimpleNamespace(get_block=self.get_block)

    def clock(self) -> float:
        return self.now

    def get_block(self, _: str) -> dict:
        self.now += self.step
        state = self.script.pop(0) if self.script else "up"
        if state == "down":
            raise RpcUnavailable("ConnectionError: [Errno 111] Connection refused")
        self.provider.last_answer = self.now
        self.number += 1
        return {"number": self.number, "timestamp": 1_000 + self.number, "baseFeePerGas": 0}


def test_run_loop__successful_calls_reset_the_outage_clock():
    # The node answers every block read but a call inside the tick times out, 20 times in a row
    # over 200 s: each answer shows the node is there, so a 30 s tolerance is never used up.
    node = ScriptedNode(["up"] * 40)
    calls = {"n": 0}

    def tick(block: Block) -> None:
        calls["n"] += 1
        if calls["n"] <= 20:
            raise RpcUnavailable("ReadTimeout: read timed out")

    config = LoopConfig(
        outage_tolerance_seconds=30, max_consecutive_failures=2, max_ticks=1, **FAST
    )
    ticks = run_loop("keeper", node, tick, config, clock=node.clock)

    assert ticks == 1 and calls["n"] == 21
    assert node.now == 210.0  # 21 block reads, 10 s apart: far beyond the tolerance in total


def test_run_loop__silent_node_stops_after_the_tolerance(caplog):
    node = ScriptedNode(["up"] + ["down"] * 10)
    metrics = BotMetrics("keeper")
    config = LoopConfig(outage_tolerance_seconds=30, max_ticks=5, **FAST)

    with pytest.raises(TooManyFailures) as excinfo:
        run_loop("keeper", node, lambda b: None, config, metrics, clock=node.clock)

    assert str(excinfo.value) == (
        "keeper: stopping: the node has not answered for 30 s (tolerance 30 s);"
        " last error: RpcUnavailable: connection refused"
    )
    assert node.now == 40.0  # answered at 10, silent at 20, 30, 40: stopped at 30 s of silence
    assert "node unreachable for 20.0 s of 30 s tolerated" in caplog.text


def test_run_loop__failures_while_the_node_answers_are_counted():
    node = ScriptedNode([])

    def tick(block: Block) -> None:
        raise ValueError("registry answered garbage")

    config = LoopConfig(max_consecutive_failures=3, **FAST)
    with pytest.raises(TooManyFailures, match="stopping after 3 consecutive failed ticks; last"):
        run_loop("liquidator", node, tick, config, clock=node.clock)
    assert node.number == 3


def test_run_loop__a_good_tick_resets_the_count(caplog):
    node = ScriptedNode([])
    outcomes = iter(
        [ValueError("a"), ValueError("b"), None, ValueError("c"), ValueError("d"), None]
    )

    def tick(block: Block) -> None:
        error = next(outcomes)
        if error is not None:
            raise error

    config = LoopConfig(max_consecutive_failures=3, max_ticks=2, **FAST)
    assert run_loop("keeper", node, tick, config, clock=node.clock) == 2  # never gave up
    assert "(2/3 in a row): ValueError: b" in caplog.text
    assert "(1/3 in a row): ValueError: c" in caplog.text  # counted afresh after the good tick


def test_tracked_provider__notes_each_answer_only():
    provider = TrackedHTTPProvider("http://127.0.0.1:1", request_kwargs={"timeout": 0.2})
    provider.exception_retry_configuration = None
    w3 = SimpleNamespace(provider=provider)
    assert last_answer(w3) is None
    with pytest.raises(Exception):  # noqa: B017 - whatever the transport raises
        provider.make_request("eth_chainId", [])
    assert last_answer(w3) is None  # a refused connection is not an answer


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_consecutive_failures": 0}, "at least 1"),
        ({"outage_tolerance_seconds": -1}, "must not be negative"),
        ({"backoff_initial": 2.0, "backoff_max": 1.0}, "at least backoff_initial"),
    ],
)
def test_loop_config__refuses_nonsense(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoopConfig(**kwargs)
