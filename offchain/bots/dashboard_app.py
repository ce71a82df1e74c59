"""``dmm dashboard``: the live risk page as a read-only ASGI app (Starlette, served by uvicorn).

Routes::

    GET /               the page (HTML, inline CSS and SVG charts; works offline, no CDN)
    GET /fragment       the page's live part, which the page's few lines of script fetch every
                        ``refresh_seconds`` and swap in (without script: reload the page)
    GET /api/snapshot   the same numbers as JSON (200; 503 while the chain cannot be read,
                        with the error and the last good snapshot)
    GET /healthz        200 "ok: block N" or 503 and the one-line error

The numbers come from :class:`offchain.bots.dashboard.RiskReader` through a
:class:`~offchain.bots.dashboard.SnapshotCache` (one chain read at a time, at most one per half
refresh). A failed read never takes the page down: it shows the error in one line, since when,
and the last good numbers marked with their block.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.routing import Route

from offchain.bots.dashboard import HEALTH_BUCKETS, DashboardConfig, SnapshotCache
from offchain.bots.dashboard_charts import bar_chart_svg, line_chart_svg

TEMPLATES = Path(__file__).resolve().parent / "templates"


def age(seconds: float | None) -> str:
    """``42 s``, ``12 min``, ``3.5 h``, ``2.0 d``; ``-`` for none."""
    if seconds is None:
        return "-"
    s = float(seconds)
    if abs(s) < 120:
        return f"{s:.0f} s"
    if abs(s) < 7200:
        return f"{s / 60:.0f} min"
    if abs(s) < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def utc(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        usd=lambda v: f"{v:,.2f}",
        mult=lambda v: f"{v:.4f}",
        pct=lambda v, d=3: f"{v:.{d}f}%",
        sci=lambda v: f"{v:.3e}",
        age=age,
        utc=utc,
        short=lambda a: f"{a[:6]}...{a[-4:]}" if a else "-",
    )
    return env


def view(state: dict[str, Any], config: DashboardConfig) -> dict[str, Any]:
    """What the templates show: the cache's state with the charts drawn."""
    snap = state["snapshot"]
    charts: dict[int, str] = {}
    health_svg = ""
    if snap is not None:
        for m in snap["markets"]:
            if not m.get("configured"):
                continue
            markers = [
                (t, pct, f"keeper update: multiplier {wei / 10**18:.4f}")
                for t, pct, wei in m["update_points"]
            ]
            charts[m["id"]] = line_chart_svg(
                m["margin_history"], markers, label=f"market {m['name']} margin over time"
            )
        health_svg = bar_chart_svg(
            [(r["bucket"], r["count"]) for r in snap["accounts"]["distribution"]]
        )
    return {
        **state,
        "snap": snap,
        "charts": charts,
        "health_svg": health_svg,
        "buckets": [label for label, _ in HEALTH_BUCKETS],
        "refresh_ms": int(config.refresh_seconds * 1000),
        "config": config,
    }


def create_app(cache: SnapshotCache, config: DashboardConfig, title: str = "") -> Starlette:
    """The page, its live fragment, the JSON and the health check over ``cache``."""
    env = environment()
    page, live = env.get_template("dashboard.html"), env.get_template("dashboard_live.html")
    heading = title or "Dynamic Margin risk"

    async def state() -> dict[str, Any]:
        return view(await run_in_threadpool(cache.get), config)

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page.render(**await state(), title=heading))

    async def fragment(request: Request) -> HTMLResponse:
        return HTMLResponse(live.render(**await state()), headers={"Cache-Control": "no-store"})

    async def snapshot(request: Request) -> JSONResponse:
        s = await run_in_threadpool(cache.get)
        return JSONResponse(s, status_code=200 if s["ok"] else 503)

    async def healthz(request: Request) -> PlainTextResponse:
        s = await run_in_threadpool(cache.get)
        if s["ok"]:
            return PlainTextResponse(f"ok: block {s['snapshot']['block']}\n")
        return PlainTextResponse(f"error: {s['error']}\n", status_code=503)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/fragment", fragment),
            Route("/api/snapshot", snapshot),
            Route("/healthz", healthz),
        ]
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; ``OSError`` if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(app: Starlette, sock: socket.socket) -> None:
    """Run uvicorn on a bound socket until interrupted (quiet: the bots' logs are the log)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])


__all__ = ["age", "bind", "create_app", "environment", "serve", "utc", "view"]
