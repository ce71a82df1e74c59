"""``dmm`` on bad input: one line on stderr naming the problem, exit code 2 for a usage or
configuration mistake and 1 at run time, nothing sent. Through click's runner, and a few as real
processes (what an operator's shell sees)."""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from eth_account import Account

from offchain.cli import main, verbosity_options
from tests.risk.test_cli_risk import write_prices

FEED = "0x" + "22" * 20
REGISTRY = "0x" + "11" * 20


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(mix_stderr=False)


@pytest.fixture
def dead_rpc() -> str:
    """A local URL nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def bot_file(tmp_path: Path, body: str, rpc: str = "http://127.0.0.1:1") -> Path:
    path = tmp_path / "bots.yaml"
    path.write_text(f"rpc: {rpc}\nregistry: '{REGISTRY}'\n{body}")
    return path


LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) +dmm")


def one_line_error(result, code: int, *fragments: str) -> str:
    """The result's stderr: one error line starting with "Error: ", holding ``fragments``, last,
    after nothing but log lines."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    *logs, line = result.stderr.splitlines()
    assert line.startswith("Error: "), result.stderr
    assert all(LOG_LINE.match(x) for x in logs), result.stderr
    for fragment in fragments:
        assert fragment in line, line
    assert "Traceback" not in result.stderr + result.stdout
    return line


MARKET = f"{{id: 1, feed: '{FEED}'}}"


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        (f"markets: [{{feed: '{FEED}'}}]\n", ["markets[0].id: required"]),
        (f"markets: [{{id: one, feed: '{FEED}'}}]\n", ["markets[0].id: Input should be a valid"]),
        (f"markets: [{MARKET}]\nkeeper: {{hysteresis: abc}}\n", ["keeper.hysteresis:", "'abc'"]),
        (f"markets: [{MARKET}]\nkeeper: {{hysteresis: .nan}}\n", ["keeper.hysteresis: nan is no"]),
        (f"markets: [{MARKET}]\nkeeper: {{hysteresis: 1.5}}\n", ["keeper: hysteresis must lie"]),
        (f"markets: [{MARKET}]\nmodel: {{kind: garch}}\n", ["model: kind 'garch' is not one of"]),
        ("markets: []\n", ["markets: the keeper needs at least one market"]),
    ],
)
def test_keeper__config_mistakes_exit_2(runner, tmp_path, body, fragments):
    config = bot_file(tmp_path, body)
    result = runner.invoke(main, ["keeper", "--config", str(config), "--dry-run"])
    one_line_error(result, 2, str(config), *fragments)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "no such history file"),
        (b"", "empty file"),
        (b"unix,close\n", "no usable price rows"),
        (b"\x00\x01binary", "binary data"),
    ],
)
def test_keeper__bad_history_file_exit_2(runner, tmp_path, content, fragment):
    history = tmp_path / "btc.csv"
    if content is not None:
        history.write_bytes(content)
    config = bot_file(tmp_path, f"markets: [{{id: 1, feed: '{FEED}', history: btc.csv}}]\n")
    result = runner.invoke(main, ["keeper", "--config", str(config)])
    one_line_error(result, 2, "markets[0].history:", fragment)


@pytest.mark.parametrize(
    ("keyfile", "fragment"),
    [
        ("corrupt", "not a key file (invalid JSON"),
        ("directory", "is a directory, not a key file"),
        ("wrong passphrase", "wrong passphrase"),
    ],
)
def test_keeper__bad_key_file_exit_2(runner, tmp_path, monkeypatch, keyfile, fragment):
    path = tmp_path / "keeper.json"
    if keyfile == "corrupt":
        path.write_text('{"crypto": ')
    elif keyfile == "directory":
        path.mkdir()
    else:
        key = Account.from_key(b"\x07" * 32)
        path.write_text(json.dumps(Account.encrypt(key.key, "right", iterations=2)))
    monkeypatch.setenv("DMM_PASSPHRASE", "wrong")
    config = bot_file(tmp_path, f"markets: [{MARKET}]\n")
    result = runner.invoke(main, ["keeper", "--config", str(config), "--account", str(path)])
    one_line_error(result, 2, fragment)


def test_keeper__history_option_mistakes_are_usage_errors(runner, tmp_path):
    config = bot_file(tmp_path, f"markets: [{MARKET}]\n")
    result = runner.invoke(main, ["keeper", "--config", str(config), "--history", "x.csv"])
    one_line_error(result, 2, "--history", "expected MARKET_ID=CSV")
    result = runner.invoke(main, ["keeper", "--config", str(config), "--history", "7=x.csv"])
    one_line_error(result, 2, "--history", "market 7 is not in the config's markets")


@pytest.mark.parametrize("command", ["status", "keeper", "replay"])
def test_dead_rpc__exit_1_in_one_line(runner, tmp_path, dead_rpc, monkeypatch, command):
    monkeypatch.setenv("DMM_REPLAY_KEY", "0x" + "01" * 32)
    config = bot_file(tmp_path, f"markets: [{MARKET}]\n", rpc=dead_rpc)
    result = runner.invoke(main, [command, "--config", str(config)])
    one_line_error(result, 1, f"cannot reach the node at {dead_rpc} (connection refused)")


def test_status__json_on_dead_rpc_still_one_line(runner, tmp_path, dead_rpc):
    config = bot_file(tmp_path, f"markets: [{MARKET}]\n", rpc=dead_rpc)
    result = runner.invoke(main, ["status", "--config", str(config), "--json", "-"])
    one_line_error(result, 1, "cannot reach the node")
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"\x7fELF\x02\x01\x01\x00\x00", "binary data (a NUL byte at offset 7)"),
        (b"rpc: caf\xe9\n", "not UTF-8 text"),
        (f"markets: [{{id: 1, feed: '{FEED}'}}]\nrpc_timeout: .inf\n".encode(), "inf is not a"),
        (b"markets: [\n", "invalid YAML at line 2"),
    ],
)
def test_config_file__unreadable_yaml_exit_2(runner, tmp_path, content, fragment):
    path = tmp_path / "bots.yaml"
    path.write_bytes(content)
    result = runner.invoke(main, ["status", "--config", str(path)])
    one_line_error(result, 2, str(path), fragment)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--crash-pct", "2"], "'--crash-pct': 2 must be below 1"),
        (["--crash-pct", "nan"], "'--crash-pct': 'nan' is not a finite number"),
        (["--last", "0"], "'--last': 0 is not in the range x>=1"),
        (["--start-price", "-5"], "'--start-price': -5 must be above 0"),
        (["--interval", "inf"], "'--interval': 'inf' is not a finite number"),
    ],
)
def test_replay__bad_options_exit_2(runner, args, fragment):
    result = runner.invoke(main, ["replay", *args])
    line = one_line_error(result, 2, fragment)
    assert line.endswith("(see dmm replay --help)")


def test_replay__nothing_to_replay_exit_2_nothing_sent(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("DMM_REPLAY_KEY", "0x" + "01" * 32)
    empty = tmp_path / "prices.csv"
    empty.write_text("unix,close\n1600000000,nan\n")
    config = bot_file(tmp_path, f"markets: [{MARKET}]\n")
    result = runner.invoke(main, ["replay", "--config", str(config), "--csv", str(empty)])
    one_line_error(result, 2, f"--csv: {empty}: no usable price rows")
    assert "dropped 1 row(s)" in result.stderr  # the warning before it says why


def test_replay__without_a_key_exit_2(runner, tmp_path, monkeypatch):
    monkeypatch.delenv("DMM_REPLAY_KEY", raising=False)
    config = bot_file(tmp_path, f"markets: [{MARKET}]\n")
    result = runner.invoke(main, ["replay", "--config", str(config)])
    one_line_error(result, 2, "replay sends transactions: set DMM_REPLAY_KEY or pass --account")


@pytest.mark.parametrize("shock", ["-5", "-1", "nan", "x"])
def test_risk__impossible_shock_exit_2(runner, tmp_path, shock):
    prices = write_prices(tmp_path / "p.csv", 200)
    result = runner.invoke(main, ["risk", "--prices", str(prices), "--shock", shock])
    one_line_error(result, 2, "'--shock'")


def test_risk__json_to_stdout_text_to_stderr(runner, tmp_path):
    prices = write_prices(tmp_path / "p.csv", 1500)
    with runner.isolated_filesystem(temp_dir=tmp_path):
        result = runner.invoke(main, ["risk", "--prices", str(prices), "--json", "-"])
        assert not Path("-").exists()
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["asset"] == "BTC/USDT" and doc["hours"] == 1500
    assert int(doc["clamped_multiplier"]) >= 10**18 and doc["model_hash"].startswith("0x")
    assert [s["label"] for s in doc["stress"]][-1] == "shock +30.0%"
    assert "model_hash" in result.stderr  # the human table went to stderr


def test_backtest__json_dash_means_stdout(runner, tmp_path):
    prices = write_prices(tmp_path / "p.csv", 1500)
    with runner.isolated_filesystem(temp_dir=tmp_path):
        result = runner.invoke(
            main, ["backtest", "--prices", str(prices), "--json", "-", "--no-progress"]
        )
        assert not Path("-").exists()  # not a file named "-"
        assert Path("backtest_btcusdt.png").exists()
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["asset"] == "BTC/USDT" and "recommended" in doc["models"]
    assert "static_equal_margin" in result.stderr


def test_version(runner):
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("dmm, version ")


# ---------------------------------------------------------------------------------------------
# Logs and the last line of defence


@pytest.fixture
def probe_commands():
    @click.command()
    @verbosity_options
    def talk() -> None:
        log = logging.getLogger("dmm.probe")
        log.debug("debug line")
        log.info("info line")
        log.warning("warning line")
        logging.getLogger("web3.probe").info("library info line")
        click.echo("data line")

    @click.command()
    def boom() -> None:
        raise RuntimeError("something nobody expected\nover two lines")

    main.add_command(talk, "probe-talk")
    main.add_command(boom, "probe-boom")
    yield
    main.commands.pop("probe-talk")
    main.commands.pop("probe-boom")


@pytest.mark.parametrize(
    ("args", "shown", "hidden"),
    [
        (["probe-talk"], ["info line", "warning line"], ["debug line", "library info"]),
        (["probe-talk", "-v"], ["debug line", "info line"], ["library info"]),
        (["-v", "probe-talk"], ["debug line"], ["library info"]),
        (["-vv", "probe-talk"], ["debug line", "library info line"], []),
        (["probe-talk", "-q"], ["warning line"], ["info line"]),
        (["-v", "probe-talk", "-q"], ["info line"], ["debug line"]),
        (["probe-talk", "-qq"], [], ["warning line"]),
    ],
)
def test_logs__info_on_stderr_by_default_v_and_q_anywhere(
    runner, probe_commands, args, shown, hidden
):
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "data line\n"  # data on stdout, logs never
    for text in shown:
        assert text in result.stderr
    for text in hidden:
        assert text not in result.stderr


def test_unexpected_error__one_line_exit_1(runner, probe_commands):
    result = runner.invoke(main, ["probe-boom"])
    one_line_error(
        result, 1, "unexpected RuntimeError: something nobody expected; over two lines", "-vv"
    )


# ---------------------------------------------------------------------------------------------
# As an operator's shell sees it


def dmm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "offchain.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


def test_processes__one_line_on_stderr_and_the_exit_code(tmp_path, dead_rpc):
    bad = bot_file(tmp_path, f"markets: [{{id: x, feed: '{FEED}'}}]\n")
    (tmp_path / "bin.yaml").write_bytes(b"\x00\x00\x00")
    dead = tmp_path / "dead.yaml"
    dead.write_text(f"rpc: {dead_rpc}\nregistry: '{REGISTRY}'\nmarkets: [{MARKET}]\n")
    cases = [
        (["keeper", "--config", str(bad)], 2, "markets[0].id: Input should be a valid integer"),
        (["status", "--config", str(tmp_path / "bin.yaml")], 2, "binary data"),
        (["status", "--config", str(dead)], 1, "cannot reach the node"),
        (["replay", "--crash-pct", "2"], 2, "'--crash-pct': 2 must be below 1"),
    ]
    for args, code, fragment in cases:
        done = dmm(*args, cwd=tmp_path)
        assert done.returncode == code, (args, done.stderr)
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], (
            args,
            done.stderr,
        )
        assert done.stdout == ""


# ---------------------------------------------------------------------------------------------
# Usage errors of every operator command


@pytest.mark.parametrize(
    ("args", "fragment", "hint"),
    [
        (["stauts"], "No such command 'stauts'", "(see dmm --help)"),
        (["status", "--bogus"], "No such option: --bogus", "(see dmm status --help)"),
        (["keeper", "--config"], "Option '--config' requires an argument", ""),
        (["liquidator", "--dry-run=yes"], "Option '--dry-run' does not take a value", ""),
        (["devnet", "--once"], "--once needs --crash", "(see dmm devnet --help)"),
        (
            ["devnet", "--detach", "--bots"],
            "--detach starts the node only",
            "(see dmm devnet --help)",
        ),
        (["devnet", "--port", "0"], "'--port': 0 is not in the range 1<=x<=65535", ""),
        (["dashboard", "--port", "70000"], "'--port': 70000 is not in the range", ""),
        (["replay", "--seed", "x"], "'--seed': 'x' is not a valid integer", ""),
    ],
)
def test_usage_errors__one_line_exit_2_with_the_help_hint(runner, args, fragment, hint):
    line = one_line_error(runner.invoke(main, args), 2, fragment)
    assert line.endswith(hint)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (f"markets: [{MARKET}]\ndashboard: {{prot: 1}}\n", "dashboard.prot: unknown key"),
        (f"markets: [{MARKET}]\ndashboard: {{port: '80'}}\n", "dashboard.port: Input should be"),
        (f"markets: [{MARKET}]\n", "no engine: pass --engine or set 'engine' in the config"),
        ("markets: []\n", "markets: the keeper needs at least one market"),
    ],
)
def test_dashboard__config_mistakes_exit_2(runner, tmp_path, body, fragment):
    result = runner.invoke(main, ["dashboard", "--config", str(bot_file(tmp_path, body))])
    one_line_error(result, 2, fragment)


def test_dashboard__port_taken_exit_2(runner, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        body = f"engine: '{REGISTRY}'\nmarkets: [{MARKET}]\ndashboard: {{port: {port}}}\n"
        result = runner.invoke(main, ["dashboard", "--config", str(bot_file(tmp_path, body))])
    one_line_error(result, 2, f"dashboard.port: cannot listen on 127.0.0.1:{port}")
