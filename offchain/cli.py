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

import dataclasses
import importlib
import json
import logging
import math
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from offchain import __version__

# Subcommands defined in other modules, by name ("module:attribute").
LAZY_COMMANDS: dict[str, str] = {
    "devnet": "offchain.cli_ops:devnet_command",
    "keeper": "offchain.cli_ops:keeper_command",
    "liquidator": "offchain.cli_ops:liquidator_command",
    "replay": "offchain.cli_ops:replay_command",
    "status": "offchain.cli_ops:status_command",
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


def _when(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d %H:%M UTC")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower()) or "asset"


PRICES = click.option(
    "--prices",
    "prices_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Hourly candle CSV (CryptoDataDownload layout, or timestamp,close).",
)
CONFIDENCE = click.option(
    "--confidence",
    default=0.99,
    show_default=True,
    type=click.FloatRange(0.5, 1, min_open=True, max_open=True),
)
HORIZON = click.option(
    "--horizon", default=1, show_default=True, type=click.IntRange(1, 168), help="Hours."
)


def _load(path: Path, err: bool = False) -> Any:
    from offchain.risk.prices import load_candles

    try:
        candles, report = load_candles(path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(report.summary(), err=err)
    return candles


@main.command()
@PRICES
@CONFIDENCE
@HORIZON
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the results as JSON ('-': stdout, the table then goes to stderr).",
)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a TTY).")
@verbosity_options
def backtest(
    prices_path: Path,
    confidence: float,
    horizon: int,
    json_path: Path | None,
    plot_path: Path | None,
    progress: bool | None,
) -> None:
    """Walk-forward backtest of the margin models and baselines on one price file."""
    from offchain.risk.backtest import BacktestConfig, format_table, plot_backtest, run_backtest

    to_stdout = json_path is not None and str(json_path) == "-"
    candles = _load(prices_path, err=to_stdout)
    config = BacktestConfig(confidence=confidence, horizon=horizon)
    show = sys.stderr.isatty() if progress is None else progress
    try:
        result = run_backtest(candles, config, progress=show)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_table(result), err=to_stdout)
    if json_path is not None:
        write_json(result.to_json(), json_path)
        if not to_stdout:
            click.echo(f"wrote {json_path}")
    if plot_path is None:
        name = f"backtest_{_slug(result.asset)}.png"
        plot_path = json_path.with_suffix(".png") if json_path and not to_stdout else Path(name)
    click.echo(f"wrote {plot_backtest(result, plot_path)}", err=to_stdout)


@main.command()
@PRICES
@CONFIDENCE
@HORIZON
@click.option("--market-id", default=1, show_default=True, type=click.IntRange(0))
@click.option(
    "--current",
    type=click.FloatRange(min=0, min_open=True),
    help="The market's current target multiplier (default: no update yet).",
)
@click.option(
    "--shock",
    "shocks",
    multiple=True,
    type=FiniteFloat(-1.0, low_open=True),
    default=(-0.3, -0.2, -0.1, 0.1, 0.2, 0.3),
    show_default=True,
    help="Hypothetical price move for the stress table, above -1 (-0.3: down 30%; repeat).",
)
@click.option(
    "--json",
    "json_out",
    is_flag=False,
    flag_value="-",
    default=None,
    help="Write the figures as JSON to a file ('--json' alone or '--json -': stdout).",
)
@verbosity_options
def risk(
    prices_path: Path,
    confidence: float,
    horizon: int,
    market_id: int,
    current: float | None,
    shocks: tuple[float, ...],
    json_out: str | None,
) -> None:
    """The parameters the keeper would sign now for the market of a price file."""
    import dataclasses
    from fractions import Fraction

    from offchain import WAD
    from offchain.protocol.margin_math import MarketState
    from offchain.risk.calibration import DEFAULT_GUARDRAILS, RECOMMENDED_MODEL, calibrate
    from offchain.risk.stress import shock_losses, worst_windows

    err = json_out == "-"  # JSON on stdout: the text goes to stderr
    candles = _load(prices_path, err=err)
    now = int(candles.timestamps[-1]) + 3600
    state = None
    if current is not None:
        target = int(Fraction(current) * WAD)
        state = MarketState(target=target, ramp_from=target, updated_at=now - 3600)
    model = dataclasses.replace(RECOMMENDED_MODEL, confidence=confidence)
    try:
        cal = calibrate(
            candles, market_id=market_id, now=now, state=state, model=model, horizon=horizon
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    s = cal.snapshot
    g = DEFAULT_GUARDRAILS
    lines = [
        f"{candles.symbol}: {len(candles)} hourly prices, {_when(candles.timestamps[0])} .. "
        f"{_when(candles.timestamps[-1])}; observed_at {s.observed_at} ({_when(s.observed_at)})",
        f"model          {model.name}: {model.params()}",
        f"volatility     {s.sigma_hourly:.4%} per hour, {s.sigma_annual:.1%} annualised",
        f"VaR {confidence:.1%} {horizon}h  long {s.var_long:.4%}  short {s.var_short:.4%}",
        f"ES  {confidence:.1%} {horizon}h  long {s.es_long:.4%}  short {s.es_short:.4%}",
        f"stressed ES    {s.stressed_es:.4%} -> floor {s.floor_rate:.4%}",
        f"rate to cover  {s.target_rate:.4%} ({model.measure.upper()}, larger side, floored)",
        f"multiplier     {cal.proposed / WAD:.6f}x ({cal.proposed} wei) -> clamped "
        f"{cal.clamped / WAD:.6f}x ({cal.clamped} wei) within [{g.min_multiplier / WAD:g}x, "
        f"{g.max_multiplier / WAD:g}x]",
        f"model_hash     0x{cal.model_hash.hex()}",
        f"decision       {'push' if cal.push else 'skip'}: {cal.reason}",
    ]
    if cal.update is not None:
        u = cal.update
        lines.append(
            f"RiskUpdate     market_id={u.market_id} multiplier={u.multiplier} "
            f"funding_rate={u.funding_rate} observed_at={u.observed_at} deadline={u.deadline}"
        )
    click.echo("\n".join(lines), err=err)
    click.echo(f"\nstress ({horizon}h windows; loss as % of notional, long / short)", err=err)
    worst = worst_windows(candles, horizon, k=3)
    for side in ("long", "short"):
        for sc in worst[side]:
            click.echo(
                f"  {sc.label:<24} {_when(sc.start or 0)}  move {sc.move:+8.3%}  "
                f"loss {sc.loss_long:+8.3%} / {sc.loss_short:+8.3%}",
                err=err,
            )
    shocked = shock_losses(shocks)
    for sc in shocked:
        click.echo(
            f"  {sc.label:<24} {'':<20}  move {sc.move:+8.3%}  "
            f"loss {sc.loss_long:+8.3%} / {sc.loss_short:+8.3%}",
            err=err,
        )
    if json_out is not None:
        u = cal.update
        write_json(
            {
                "asset": candles.symbol,
                "hours": len(candles),
                "market_id": market_id,
                "observed_at": s.observed_at,
                "model": model.name,
                "confidence": confidence,
                "horizon_hours": horizon,
                "sigma_hourly": s.sigma_hourly,
                "var_long": s.var_long,
                "var_short": s.var_short,
                "es_long": s.es_long,
                "es_short": s.es_short,
                "stressed_es": s.stressed_es,
                "floor_rate": s.floor_rate,
                "target_rate": s.target_rate,
                "proposed_multiplier": str(cal.proposed),
                "clamped_multiplier": str(cal.clamped),
                "model_hash": "0x" + cal.model_hash.hex(),
                "push": bool(cal.push),
                "reason": cal.reason,
                "update": None
                if u is None
                else {
                    "market_id": u.market_id,
                    "multiplier": str(u.multiplier),
                    "funding_rate": str(u.funding_rate),
                    "observed_at": u.observed_at,
                    "deadline": u.deadline,
                },
                "stress": [
                    {"label": sc.label, "move": sc.move, "start": sc.start}
                    for side in ("long", "short")
                    for sc in worst[side]
                ]
                + [{"label": sc.label, "move": sc.move, "start": None} for sc in shocked],
            },
            json_out,
        )


# ---------------------------------------------------------------------------------------------
# dmm backtest-portfolio: the portfolio margin over joint scenarios (the work is in
# offchain/risk/portfolio_report.py; this block only parses, checks and prints)


class _OneLineUsageError(click.UsageError):
    """A usage error printed as one line, ``Error: ...``, exit code 2."""

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def _portfolio_day(text: str | None, option: str) -> int | None:
    """``YYYY-MM-DD`` (UTC) as epoch seconds of its midnight."""
    if text is None:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise _OneLineUsageError(f"{option} must be a date YYYY-MM-DD, got {text!r}") from None
    return int(day.timestamp())


def _portfolio_candles(paths: tuple[Path, ...]) -> list[Any]:
    from offchain.risk.portfolio_config import market_name
    from offchain.risk.prices import load_candles

    if len(paths) < 2:
        raise _OneLineUsageError(f"need --prices for two markets or more, got {len(paths)}")
    for path in paths:
        if not path.is_file():
            raise _OneLineUsageError(f"--prices {path}: no such file")
    out = []
    for path in paths:
        try:
            candles, _ = load_candles(path)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        out.append(dataclasses.replace(candles, symbol=market_name(candles.symbol)))
    names = [c.symbol for c in out]
    if len(set(names)) != len(names):
        raise _OneLineUsageError(f"the same market twice: {', '.join(names)}")
    return out


@main.command("backtest-portfolio")
@click.option(
    "--prices",
    "prices_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Hourly candle CSV of one market of the group; repeat (two markets or more).",
)
@click.option("--from", "from_day", help="First evaluated day, UTC YYYY-MM-DD (earlier: warm-up).")
@click.option("--to", "to_day", help="Last evaluated day, UTC YYYY-MM-DD (included).")
@click.option("--json", "json_out", help="Write the SPEC.md layout here ('-': stdout).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--calibrate",
    is_flag=True,
    help="Rerun the rule on data up to 2021 (the first two files, then all) and compare it "
    "with the frozen parameters.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a TTY).")
def backtest_portfolio(
    prices_paths: tuple[Path, ...],
    from_day: str | None,
    to_day: str | None,
    json_out: str | None,
    plot_path: Path | None,
    calibrate: bool,
    progress: bool | None,
) -> None:
    """Walk-forward backtest of the portfolio margin against the tiered sum."""
    from offchain.risk.joint_returns import common_hours
    from offchain.risk.portfolio_report import (
        calibration_report,
        format_portfolio_table,
        plot_portfolio,
        run_with_adversarial,
    )

    start = _portfolio_day(from_day, "--from")
    end_day = _portfolio_day(to_day, "--to")
    if start is not None and end_day is not None and start > end_day:
        raise _OneLineUsageError(f"--from {from_day} is after --to {to_day}")
    candles = _portfolio_candles(prices_paths)
    hours = common_hours(candles)
    if len(hours) == 0:
        raise _OneLineUsageError("the price files share no hour")
    if (start is not None and start > hours[-1]) or (
        end_day is not None and end_day + 86_400 <= hours[0]
    ):
        raise _OneLineUsageError(
            f"the window {from_day or '...'} .. {to_day or '...'} misses the files' common hours "
            f"({_when(hours[0])} .. {_when(hours[-1])})"
        )
    show = sys.stderr.isatty() if progress is None else progress
    to_stdout = json_out == "-"
    if calibrate:
        groups = [candles[:2], candles] if len(candles) > 2 else [candles]
        try:
            text, _ = calibration_report(groups, progress=show)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(text, err=to_stdout)
    end = None if end_day is None else end_day + 86_400
    try:
        result = run_with_adversarial(candles, start=start, end=end, progress=show)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_portfolio_table(result), err=to_stdout)
    if json_out is not None:
        doc = json.dumps(result.to_json(), indent=2) + "\n"
        if to_stdout:
            click.echo(doc, nl=False)
        else:
            out = Path(json_out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(doc)
            click.echo(f"wrote {out}")
    if plot_path is None:
        name = f"backtest_portfolio_{'_'.join(_slug(m) for m in result.markets)}.png"
        plot_path = Path(json_out).with_suffix(".png") if json_out and not to_stdout else Path(name)
    click.echo(f"wrote {plot_portfolio(result, plot_path)}", err=to_stdout)


if __name__ == "__main__":
    main()
