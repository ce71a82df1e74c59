"""A screenshot of the live risk page after a devnet crash: ``docs/dashboard.png``.

    make dashboard-screenshot          # or: .venv/bin/python scripts/dashboard_screenshot.py

Runs what an operator runs: ``dmm devnet --crash`` (anvil, the system from deploy/devnet.yaml,
both bots, a replayed crash) on free ports, then ``dmm dashboard`` on its bots.yaml, loads the
page in Debian's headless ``chromium`` (Playwright) and saves a full-page PNG. Everything it
started is stopped at the end. About a minute.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {what} not reached in {timeout:.0f} s")
        time.sleep(0.5)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def dmm(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "offchain.cli", *args], cwd=ROOT, **kw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "dashboard.png"), help="PNG file")
    parser.add_argument("--width", type=int, default=1400, help="viewport width, pixels")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("error: chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="dmm-screenshot-"))
    doc = yaml.safe_load((ROOT / "deploy" / "devnet.yaml").read_text())
    doc["node"]["port"] = free_port()
    for key in ("keeper_metrics_port", "liquidator_metrics_port", "dashboard_port"):
        doc["bots"][key] = free_port()
    (work / "devnet.yaml").write_text(yaml.safe_dump(doc))
    out = work / "out"
    devnet_log = (work / "devnet.log").open("w")
    devnet = dmm(
        "devnet", "--config", str(work / "devnet.yaml"), "--out", str(out), "--crash",
        stdout=devnet_log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    dashboard: subprocess.Popen | None = None
    try:
        wait_for(
            "the devnet's crash",
            lambda: "up until Ctrl-C" in (work / "devnet.log").read_text(),
            300,
        )
        dashboard = dmm(
            "dashboard", "--config", str(out / "bots.yaml"),
            stdout=subprocess.DEVNULL, stderr=(work / "dashboard.log").open("w"),
        )  # fmt: skip
        url = f"http://127.0.0.1:{doc['bots']['dashboard_port']}/"
        wait_for("the dashboard", lambda: answers(url + "healthz"), 60)
        time.sleep(3)  # the bots' last ticks after the replay
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": args.width, "height": 1000})
            page.goto(url)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        if dashboard is not None:
            dashboard.terminate()
            dashboard.wait(timeout=20)
        if devnet.poll() is None:
            os.killpg(devnet.pid, signal.SIGINT)  # the devnet stops its bots and its node
            try:
                devnet.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(devnet.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
