"""``dmm``: the project's command line (parsing and printing only; the work is in the modules).

Subcommands are imported when used, so ``dmm --help`` stays fast and a command's heavy imports
(arch, matplotlib, web3) are only paid by that command. To add one, either list it in
``LAZY_COMMANDS`` (``"name": "module:attribute"``) or call ``main.add_command(command)``.

Conventions of every command: logs (INFO by default, ``-v`` debug, ``-q`` warnings only, on the
group or the command) go to stderr, data to stdout; ``--json -`` writes JSON to stdout. Exit codes:
0 done, 1 a runtime failure (node unreachable, a transaction reverted, a bot that kept failing),
2 a usage or configuration mistake. Every error is one line on stderr, never a traceback (``-vv``
logs the traceback of an unexpected one).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from offchain import __version__

# Subcommands defined in other modules, by name ("module:attribute").
LAZY_COMMANDS: dict[str, str] = {
    "dashboard": "offchain.cli_ops:dashboard_command",
    "devnet": "offchain.cli_ops:devnet_command",
    "keeper": "offchain.cli_ops:keeper_command",
    "liquidator": "offchain.cli_ops:liquidator_command",
    "replay": "offchain.cli_ops:replay_command",
    "status": "offchain.cli_ops:status_command",
    "backtest": "offchain.cli_risk:backtest",
    "risk": "offchain.cli_risk:risk",
    "calibrate": "offchain.cli_risk:calibrate",
    "backtest-portfolio": "offchain.cli_risk:backtest_portfolio",
}

log = logging.getLogger("dmm")


# ---------------------------------------------------------------------------------------------
# Logs


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (click's test runner
    swaps it per invocation)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stderr)
        super().emit(record)


def setup_logging(verbosity: int) -> None:
    """``verbosity`` 0: INFO from the project's loggers; 1: DEBUG; 2+: DEBUG from every library
    too; -1: warnings only; -2: errors only. One handler on stderr."""
    level = max(logging.DEBUG, min(logging.ERROR, logging.INFO - 10 * verbosity))
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "_dmm", False)]
    handler = StderrHandler()
    handler._dmm = True  # type: ignore[attr-defined]
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
    )
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else max(level, logging.WARNING))
    logging.getLogger("dmm").setLevel(level)


def _verbosity_callback(ctx: click.Context, param: click.Parameter, value: int) -> int:
    root = ctx.find_root()
    counts = root.meta.setdefault("dmm.verbosity", {})
    counts[(id(ctx), param.name)] = value
    setup_logging(
        sum(v for (_, n), v in counts.items() if n == "verbose")
        - sum(v for (_, n), v in counts.items() if n == "quiet")
    )
    return value


def verbosity_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``-v/--verbose`` and ``-q/--quiet`` (repeatable), counted with the group's."""
    f = click.option(
        "-q",
        "--quiet",
        count=True,
        expose_value=False,
        callback=_verbosity_callback,
        help="Fewer logs: -q warnings only, -qq errors only.",
    )(f)
    return click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=_verbosity_callback,
        help="More logs: -v debug, -vv debug from every library.",
    )(f)


# ---------------------------------------------------------------------------------------------
# Errors and exit codes


class ConfigProblem(click.ClickException):
    """A configuration mistake: exit code 2, one line."""

    exit_code = 2


def one_line(text: str) -> str:
    return "; ".join(p.strip() for p in str(text).splitlines() if p.strip())


def describe_rpc_error(exc: BaseException) -> str:
    """The short reason a node did not answer ("connection refused", "timed out")."""
    from offchain.protocol.chain import describe_unavailable

    return describe_unavailable(exc)


# Failures at run time whose message already says what and where (exit code 1).
RUNTIME_ERRORS = (
    "CallFailed",
    "DeployStepError",
    "DevnetError",
    "NodeError",
    "SimulationReverted",
    "TooManyFailures",
    "TxFailed",
    "TxTimeout",
)


def error_exit_code(exc: BaseException) -> tuple[int, str]:
    """Exit code and one-line message for an exception that reached the command line."""
    from offchain.protocol.config_files import ConfigFileError

    if isinstance(exc, ConfigFileError):
        return 2, one_line(str(exc))
    from offchain.protocol.chain import RpcUnavailable

    if isinstance(exc, RpcUnavailable):
        return 1, f"the node did not answer ({describe_rpc_error(exc)})"
    name = type(exc).__name__
    if name == "DeployRecordError":
        return 2, one_line(str(exc))
    if name in RUNTIME_ERRORS:
        return 1, one_line(str(exc))
    return 1, f"unexpected {name}: {one_line(str(exc))} (run with -vv for the traceback)"


class LazyGroup(click.Group):
    """A click group that imports the commands of ``LAZY_COMMANDS`` on first use, and turns
    every error into one line on stderr with the project's exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            module, _, attr = LAZY_COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("Error: aborted", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            message = one_line(exc.format_message())
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see {exc.ctx.command_path} --help)"
            click.echo(f"Error: {message}{hint}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            code, message = error_exit_code(exc)
            log.debug("traceback of the error below", exc_info=True)
            click.echo(f"Error: {message}", err=True)
            sys.exit(code)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(name="dmm", cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="dmm")
@verbosity_options
def main() -> None:
    """Dynamic Margin: risk model, backtest and operator tools."""
    click.get_current_context().find_root().meta.setdefault("dmm.verbosity", {})
    if not logging.getLogger().handlers or not any(
        getattr(h, "_dmm", False) for h in logging.getLogger().handlers
    ):
        setup_logging(0)


# ---------------------------------------------------------------------------------------------
# Output


def write_json(doc: Any, target: str | Path) -> None:
    """``doc`` as JSON to ``target``; ``-`` is stdout."""
    text = json.dumps(doc, indent=2) + "\n"
    if str(target) == "-":
        click.echo(text, nl=False)
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    log.info("wrote %s", path)


class FiniteFloat(click.ParamType):
    """A finite float within optional bounds (click's ``FloatRange`` lets NaN through)."""

    name = "number"

    def __init__(
        self,
        low: float | None = None,
        low_open: bool = False,
        high: float | None = None,
        high_open: bool = False,
    ) -> None:
        self.low, self.low_open, self.high, self.high_open = low, low_open, high, high_open

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.low is not None and (number <= self.low if self.low_open else number < self.low):
            side = "above" if self.low_open else "at least"
            self.fail(f"{number:g} must be {side} {self.low:g}", param, ctx)
        if self.high is not None and (
            number >= self.high if self.high_open else number > self.high
        ):
            side = "below" if self.high_open else "at most"
            self.fail(f"{number:g} must be {side} {self.high:g}", param, ctx)
        return number


if __name__ == "__main__":
    main()
