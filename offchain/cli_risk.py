"""The risk model's commands: ``dmm backtest``, ``dmm risk``, ``dmm calibrate`` and
``dmm backtest-portfolio`` (parsing and printing only; the work is in ``offchain.risk``).
``offchain/cli.py`` mounts them lazily on the ``dmm`` group."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from offchain.cli import FiniteFloat, verbosity_options, write_json

log = logging.getLogger("dmm.cli")


def _when(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d %H:%M UTC")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower()) or "asset"


PRICES = click.option(
    "--prices",
    "prices_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Hourly candle CSV (Binance/CryptoDataDownload, freqtrade, or timestamp,close).",
)
CONFIG = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Risk configuration (default: the shipped deploy/risk.yaml).",
)
MARKET = click.option(
    "--market",
    "market_name",
    help="Market of the configuration (default: the one matching the file's asset).",
)
HORIZON = click.option(
    "--horizon", type=click.IntRange(1, 168), help="Hours (default: the configuration's)."
)
DATE = click.DateTime(formats=["%Y-%m-%d"])


def _load(path: Path) -> Any:
    """Candles of a price file; its load report is logged once (stderr)."""
    from offchain.risk.prices import load_candles

    try:
        candles, _ = load_candles(path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    return candles


def _market(config_path: Path | None, name: str | None, asset: str, horizon: int | None) -> Any:
    """The market's shipped configuration; a bad file or an unknown market is a usage error."""
    import dataclasses

    from offchain.risk.risk_config import RiskConfigError, load_risk_config

    try:
        config = load_risk_config(config_path)
        market = config.market(name or asset)
    except RiskConfigError as exc:
        hint = "" if name else "; pass --market"
        raise click.UsageError(f"{exc}{hint}") from exc
    if horizon is not None:
        market = dataclasses.replace(
            market, model=dataclasses.replace(market.model, horizon=horizon)
        )
    return config, market


def _utc(day: datetime | None, plus_days: int = 0) -> int | None:
    if day is None:
        return None
    return int(day.replace(tzinfo=UTC).timestamp()) + plus_days * 86_400


@click.command()
@PRICES
@CONFIG
@MARKET
@click.option(
    "--from", "from_day", type=DATE, help="First scored day (UTC); earlier hours warm up."
)
@click.option("--to", "to_day", type=DATE, help="Last scored day (UTC), inclusive.")
@click.option(
    "--confidence",
    type=click.FloatRange(0.5, 1, min_open=True, max_open=True),
    help="Target coverage (default: the configuration's, 0.99).",
)
@HORIZON
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the results as JSON ('-': stdout, the tables then go to stderr).",
)
@click.option(
    "--validation-json",
    "validation_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Further tests (default: next to --json, *_validation.json).",
)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--vol-index",
    "vol_index_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Deribit DVOL CSV (hourly or daily): adds the implied-volatility candidate.",
)
@click.option(
    "--candidates/--no-candidates",
    default=True,
    show_default=True,
    help="Also score the comparison models (GARCH-t is the slow one).",
)
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a TTY).")
@verbosity_options
def backtest(
    prices_path: Path,
    config_path: Path | None,
    market_name: str | None,
    from_day: datetime | None,
    to_day: datetime | None,
    confidence: float | None,
    horizon: int | None,
    json_path: Path | None,
    validation_path: Path | None,
    plot_path: Path | None,
    vol_index_path: Path | None,
    candidates: bool,
    progress: bool | None,
) -> None:
    """Walk-forward backtest of the shipped configuration, baselines and candidates."""
    from offchain.risk.backtest import BacktestConfig, run_backtest
    from offchain.risk.backtest_report import format_table, format_validation, plot_backtest
    from offchain.risk.backtest_validation import validate

    candles = _load(prices_path)
    config, market = _market(config_path, market_name, candles.symbol, horizon)
    implied = None
    if vol_index_path is not None:
        from offchain.risk.implied_vol import align_to_candles, hourly_volatility, load_vol_index

        try:
            implied = hourly_volatility(align_to_candles(load_vol_index(vol_index_path), candles))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
    show = sys.stderr.isatty() if progress is None else progress
    try:
        bt = BacktestConfig(
            market,
            confidence=confidence or config.confidence,
            start=_utc(from_day),
            stop=_utc(to_day, 1),
            candidates=candidates,
            implied=implied,
            dvol_weight=config.dvol_weight,
        )
        result = run_backtest(candles, bt, progress=show)
        checks = validate(candles, bt, result)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    to_stdout = json_path is not None and str(json_path) == "-"
    click.echo(format_table(result), err=to_stdout)
    click.echo(format_validation(checks), err=to_stdout)
    if json_path is not None:
        write_json(result.to_json(), json_path)
        if validation_path is None and not to_stdout:
            validation_path = json_path.with_name(json_path.stem + "_validation.json")
    if validation_path is not None:
        write_json(checks, validation_path)
    if plot_path is None:
        name = f"backtest_{_slug(result.asset)}.png"
        plot_path = json_path.with_suffix(".png") if json_path and not to_stdout else Path(name)
    log.info("wrote %s", plot_backtest(result, plot_path))


@click.command()
@PRICES
@CONFIG
@MARKET
@HORIZON
@click.option(
    "--market-id", type=click.IntRange(0), help="Id in the update (default: the config's)."
)
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
    config_path: Path | None,
    market_name: str | None,
    horizon: int | None,
    market_id: int | None,
    current: float | None,
    shocks: tuple[float, ...],
    json_out: str | None,
) -> None:
    """What the keeper would sign now for the market of a price file (the shipped model)."""
    from fractions import Fraction

    from offchain import WAD
    from offchain.protocol.margin_math import MarketState, apply_update, clamp_multiplier
    from offchain.protocol.signing import RiskUpdate
    from offchain.risk.calibration import multiplier_for_rate, push_decision
    from offchain.risk.margin_model import model_hash, proposal_series
    from offchain.risk.stress import shock_losses, worst_windows

    candles = _load(prices_path)
    _, market = _market(config_path, market_name, candles.symbol, horizon)
    model, g = market.model, market.guardrails
    observed_at = int(candles.timestamps[-1]) + 3600
    now = observed_at
    state = MarketState()
    if current is not None:
        target = int(Fraction(current) * WAD)
        state = MarketState(
            target=target, ramp_from=target, updated_at=now - 3600, observed_at=now - 3600
        )
    try:
        series = proposal_series(candles, model, market.floor_rate, market.cap_rate)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    rate = float(series.proposal[-1])
    if rate != rate:
        raise click.ClickException(
            f"{candles.symbol}: {len(candles)} prices are not enough for {model.name} "
            f"(warm-up {model.warmup} hours)"
        )
    proposed = multiplier_for_rate(rate, market.tiers[0].maintenance_rate)
    clamped = clamp_multiplier(state, g, proposed, now)
    push, reason = push_decision(state, g, clamped, now, market.hysteresis)
    digest = model_hash(
        model,
        market.floor_rate,
        market.cap_rate,
        int(candles.timestamps[0]),
        int(candles.timestamps[-1]),
        len(candles),
    )
    mid = market.market_id if market_id is None else market_id
    lines = [
        f"{candles.symbol}: {len(candles)} hourly prices, {_when(candles.timestamps[0])} .. "
        f"{_when(candles.timestamps[-1])}; observed_at {observed_at} ({_when(observed_at)})",
        f"market         {market.name} (id {mid}), model {model.name}: {model.params()}",
        f"volatility     {float(series.sigma[-1]):.4%} per hour",
        f"VaR {model.quantile:.2%} {model.horizon}h  {float(series.var[-1]):.4%}  "
        f"ES {float(series.es[-1]):.4%}",
        f"stress rank    {float(series.rank[-1]):.3f} "
        f"(APC {model.apc}, strength {model.apc_strength})",
        f"model rate     {float(series.rate[-1]):.4%} -> proposed {rate:.4%} "
        f"(band {market.floor_rate:.3%}..{market.cap_rate:.3%}, rise budget {model.rise_budget})",
        f"multiplier     {proposed / WAD:.6f}x ({proposed} wei) -> clamped "
        f"{clamped / WAD:.6f}x ({clamped} wei) within [{g.min_multiplier / WAD:g}x, "
        f"{g.max_multiplier / WAD:g}x]",
        f"model_hash     0x{digest.hex()}",
        f"decision       {'push' if push else 'skip'}: {reason}",
    ]
    update = None
    if push:
        update = RiskUpdate(mid, clamped, 0, observed_at, now + 900, digest)
        apply_update(state, g, update, now)
        lines.append(
            f"RiskUpdate     market_id={update.market_id} multiplier={update.multiplier} "
            f"funding_rate=0 observed_at={update.observed_at} deadline={update.deadline}"
        )
    err = json_out == "-"  # JSON on stdout: the text goes to stderr
    click.echo("\n".join(lines), err=err)
    h = model.horizon
    click.echo(f"\nstress ({h}h windows; loss as % of notional, long / short)", err=err)
    worst = worst_windows(candles, h, k=3)
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
        write_json(
            {
                "asset": candles.symbol,
                "hours": len(candles),
                "market": market.name,
                "market_id": mid,
                "observed_at": observed_at,
                "model": model.name,
                "horizon_hours": model.horizon,
                "sigma_hourly": float(series.sigma[-1]),
                "var": float(series.var[-1]),
                "es": float(series.es[-1]),
                "stress_rank": float(series.rank[-1]),
                "model_rate": float(series.rate[-1]),
                "proposed_rate": rate,
                "proposed_multiplier": str(proposed),
                "clamped_multiplier": str(clamped),
                "model_hash": "0x" + digest.hex(),
                "push": bool(push),
                "reason": reason,
                "update": None
                if update is None
                else {
                    "market_id": update.market_id,
                    "multiplier": str(update.multiplier),
                    "funding_rate": str(update.funding_rate),
                    "observed_at": update.observed_at,
                    "deadline": update.deadline,
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


@click.command()
@click.option(
    "--prices",
    "prices_paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Hourly candles of each market (repeat; matched to the configuration by asset).",
)
@CONFIG
@click.option(
    "--vol-index",
    "vol_indices",
    multiple=True,
    metavar="MARKET=FILE",
    help="DVOL file of a market, for the implied-volatility candidate (repeat).",
)
@click.option(
    "--out",
    "out_dir",
    default=Path("out"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option(
    "--write-config",
    "write_config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the frozen configuration here (the shipped one: deploy/risk.yaml).",
)
@click.option(
    "--folds/--no-folds",
    default=True,
    show_default=True,
    help="Run the nested walk-forward (the rule twice more on earlier data).",
)
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a TTY).")
@verbosity_options
def calibrate(
    prices_paths: tuple[Path, ...],
    config_path: Path | None,
    vol_indices: tuple[str, ...],
    out_dir: Path,
    write_config: Path | None,
    folds: bool,
    progress: bool | None,
) -> None:
    """Choose every parameter by the written rule on data through 2021-12-31, then report."""
    from offchain.risk import calibration_run as cr
    from offchain.risk.risk_config import RiskConfigError, load_risk_config

    try:
        base = load_risk_config(config_path)
    except RiskConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    candles = {}
    for path in prices_paths:
        c = _load(path)
        try:
            market = base.market(c.symbol)
        except RiskConfigError as exc:
            raise click.UsageError(str(exc)) from exc
        candles[market.name] = c
    indices = {}
    for item in vol_indices:
        name, sep, file = item.partition("=")
        if not sep or not Path(file).is_file():
            raise click.UsageError(
                f"--vol-index {item!r}: expected MARKET=FILE of an existing file"
            )
        indices[base.market(name).name] = Path(file)
    show = sys.stderr.isatty() if progress is None else progress
    try:
        result = cr.run(candles, base, indices, progress=show, folds=folds)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "calibration.json").write_text(json.dumps(cr.to_json(result), indent=2) + "\n")
    markdown = cr.to_markdown(result)
    (out_dir / "calibration.md").write_text(markdown)
    cr.plot_frontier(result, out_dir / "frontier.png")
    text = cr.to_yaml(result, base)
    (out_dir / "risk.yaml").write_text(text)
    if write_config is not None:
        write_config.write_text(text)
        log.info("wrote %s", write_config)
    click.echo(markdown)
    log.info("wrote %s/calibration.json, calibration.md, frontier.png, risk.yaml", out_dir)


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


@click.command("backtest-portfolio")
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
@verbosity_options
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
