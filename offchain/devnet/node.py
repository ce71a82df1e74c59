"""An anvil node of our own: start it on a port, wait until it answers, stop it by its pid.

``dmm devnet`` starts anvil in its own session (so Ctrl-C in the terminal reaches ``dmm``, which
stops the node in order) and, with ``--detach``, leaves it running with a pid file;
``dmm devnet --stop`` stops exactly that process (after checking it is an anvil).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]


class NodeError(RuntimeError):
    """The node could not be started or stopped; the message says why in one line."""


def anvil_binary() -> str:
    """The anvil binary: the platform package npm installed, its launcher, or one on PATH."""
    for found in sorted(ROOT.glob("node_modules/@foundry-rs/anvil-*/bin/anvil")):
        if os.access(found, os.X_OK):
            return str(found)
    launcher = ROOT / "node_modules" / ".bin" / "anvil"
    if launcher.exists():
        return str(launcher)
    on_path = shutil.which("anvil")
    if on_path:
        return on_path
    raise NodeError("anvil not found: run `make install` (it installs anvil from npm)")


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class Node:
    """A running anvil we started."""

    process: subprocess.Popen
    url: str
    port: int
    chain_id: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 15.0) -> None:
        stop_pid(self.pid, timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)


def _answers(url: str) -> int | None:
    import requests

    try:
        reply = requests.post(
            url,
            json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
            timeout=0.5,
        )
        return int(reply.json()["result"], 16)
    except Exception:
        return None


def start_anvil(
    port: int, chain_id: int, log: IO[bytes] | int = subprocess.DEVNULL, host: str = "127.0.0.1"
) -> Node:
    """Start anvil (mining each transaction at once; the caller switches to a block time once
    the system is deployed) and wait until it answers."""
    if not port_free(host, port):
        raise NodeError(
            f"port {port} is in use (another devnet? `dmm devnet --stop`, or pick --port)"
        )
    cmd = [anvil_binary(), "--host", host, "--port", str(port), "--chain-id", str(chain_id)]
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NodeError(f"anvil exited at start with code {process.returncode}")
        if _answers(url) is not None:
            return Node(process, url, port, chain_id)
        time.sleep(0.1)
    stop_pid(process.pid)
    raise NodeError(f"anvil did not answer on {url} within 20 s")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[-1].startswith("Z"))


def stop_pid(pid: int, timeout: float = 15.0) -> bool:
    """SIGTERM ``pid`` (a process this tool started), SIGKILL after ``timeout``; True if it ran."""
    if not alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True


def write_pidfile(path: Path, node: Node) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": node.pid, "url": node.url, "port": node.port}) + "\n")


def stop_from_pidfile(path: Path) -> str:
    """Stop the detached node named by ``path``; returns what was done."""
    if not path.exists():
        return f"no detached devnet ({path} does not exist)"
    try:
        doc = json.loads(path.read_text())
        pid = int(doc["pid"])
    except (ValueError, KeyError, TypeError):
        path.unlink()
        return f"{path} was not a pid file; removed"
    cmdline = Path(f"/proc/{pid}/cmdline")
    if alive(pid) and cmdline.exists() and b"anvil" not in cmdline.read_bytes():
        path.unlink()
        return f"pid {pid} is no longer a devnet node; {path} removed"
    stopped = stop_pid(pid)
    path.unlink()
    return f"devnet on {doc.get('url', '?')} (pid {pid}) " + ("stopped" if stopped else "was gone")


__all__ = [
    "Node",
    "NodeError",
    "alive",
    "anvil_binary",
    "port_free",
    "start_anvil",
    "stop_from_pidfile",
    "stop_pid",
    "write_pidfile",
]
