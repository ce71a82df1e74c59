"""Prometheus metrics and the watchdog of the bots.

Each bot process owns one ``BotMetrics`` on its own ``CollectorRegistry`` (no global state, so
tests and several bots in one process do not collide). ``serve`` exposes ``/metrics`` for
Prometheus and ``/healthz``, which answers 503 once the last completed tick is older than the
watchdog's limit: a hung or crashed loop is visible to the orchestrator that restarts it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


@dataclass
class Watchdog:
    """Timestamp of the last completed tick; unhealthy when older than ``max_age`` seconds."""

    max_age: float
    clock: Callable[[], float] = time.time
    last_tick: float | None = None

    def beat(self, now: float | None = None) -> None:
        self.last_tick = self.clock() if now is None else now

    def age(self, now: float | None = None) -> float:
        if self.last_tick is None:
            return float("inf")
        return (self.clock() if now is None else now) - self.last_tick

    def healthy(self, now: float | None = None) -> bool:
        return self.age(now) <= self.max_age


@dataclass
class BotMetrics:
    """The counters and gauges of one bot (``bot`` label: ``keeper`` or ``liquidator``)."""

    bot: str
    watchdog: Watchdog = field(default_factory=lambda: Watchdog(max_age=120.0))
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.updates_pushed = Counter(
            "dmm_updates_pushed", "Risk updates applied on-chain", ["market"], registry=r
        )
        self.updates_skipped = Counter(
            "dmm_updates_skipped", "Markets skipped in a tick, by reason", ["reason"], registry=r
        )
        self.gas_spent = Counter(
            "dmm_gas_spent_wei", "Wei spent on gas by the bot", ["bot"], registry=r
        )
        self.liquidations = Counter(
            "dmm_liquidations", "Liquidations and backstops sent", ["kind"], registry=r
        )
        self.failures = Counter(
            "dmm_failures", "Failed ticks and transactions", ["bot", "kind"], registry=r
        )
        self.ticks = Counter("dmm_ticks", "Completed ticks", ["bot"], registry=r)
        self.liquidatable = Gauge(
            "dmm_liquidatable_accounts", "Liquidatable subaccounts at the last scan", registry=r
        )
        self.scan_seconds = Gauge(
            "dmm_scan_seconds", "Duration of the last liquidation scan", registry=r
        )
        self.last_tick_age = Gauge(
            "dmm_last_tick_age_seconds",
            "Seconds since the last completed tick",
            ["bot"],
            registry=r,
        )
        self.last_tick_age.labels(self.bot).set_function(self.watchdog.age)

    def tick_done(self, now: float | None = None) -> None:
        self.watchdog.beat(now)
        self.ticks.labels(self.bot).inc()

    def failure(self, kind: str) -> None:
        self.failures.labels(self.bot, kind).inc()

    def gas(self, wei: int) -> None:
        self.gas_spent.labels(self.bot).inc(wei)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def serve(metrics: BotMetrics, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve ``/metrics`` and ``/healthz`` on a daemon thread; returns the server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/healthz"):
                ok = metrics.watchdog.healthy()
                body = (
                    f"{'ok' if ok else 'stale'}: last tick {metrics.watchdog.age():.1f} s ago\n"
                ).encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "text/plain")
            elif self.path.startswith("/metrics"):
                body = metrics.render()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            else:
                body = b"not found\n"
                self.send_response(404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(
        target=server.serve_forever, name=f"metrics-{metrics.bot}", daemon=True
    ).start()
    return server


__all__ = ["BotMetrics", "Watchdog", "serve"]
