"""The funding study: reference-mode backtest, the registry's funding bound and the funding reserve.

    python scripts/funding_study.py --out out/funding            # BTC, ETH, SOL from ../shared/data
    python scripts/funding_study.py --market FUNDING.csv PRICES.csv --horizon 1 --horizon 8

Writes ``funding_study.json`` and ``funding_study.png`` into ``--out`` and prints the tables
(``offchain/risk/funding_study.py`` says what each figure is). ``make funding-study`` runs it on
the shared data. Exit codes: 2 for unreadable or malformed input (one line naming the file and
the row), 1 when the study itself fails.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_MARKETS = (
    ("binance_btcusdt_funding_8h_2019_2023.csv", "binance_btcusdt_1h_2018_2023.csv"),
    ("binance_ethusdt_funding_8h_2019_2023.csv", "binance_ethusdt_1h_2018_2023.csv"),
    ("binance_solusdt_funding_8h_2020_2023.csv", "binance_solusdt_1h_2020_2023.csv"),
)


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.command()
@click.option(
    "--market",
    "markets",
    nargs=2,
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A settlement CSV and the same asset's hourly candles (repeat; default BTC, ETH, SOL).",
)
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=SHARED,
    show_default=True,
    help="Folder of the default files.",
)
@click.option(
    "--horizon",
    "horizons",
    multiple=True,
    type=click.IntRange(1, 168),
    help="Liquidation horizons in hours (the first sizes the reserve; default 1).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out"),
    show_default=True,
)
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a TTY).")
@click.option("-v", "--verbose", count=True)
def cli(
    markets: tuple[tuple[Path, Path], ...],
    data: Path,
    horizons: tuple[int, ...],
    out: Path,
    progress: bool | None,
    verbose: int,
) -> None:
    """Reference-mode backtest, max_funding_rate and funding reserve on 2019-2021 / 2022-2023."""
    logging.basicConfig(
        level=logging.INFO - 10 * min(verbose, 1),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from offchain.risk.funding_history import FundingDataError, load_funding_history
    from offchain.risk.funding_study import plot_study, run_funding_study
    from offchain.risk.prices import load_candles

    pairs = markets or tuple((data / f, data / p) for f, p in DEFAULT_MARKETS)
    loaded = []
    for funding_path, prices_path in pairs:
        for path in (funding_path, prices_path):
            if not path.is_file():
                _fail(f"{path}: no such file", 2)
        try:
            history = load_funding_history(funding_path)
            candles, _ = load_candles(prices_path)
        except (FundingDataError, ValueError) as exc:
            _fail(str(exc), 2)
        loaded.append((history, candles))
    show = sys.stderr.isatty() if progress is None else progress
    try:
        study = run_funding_study(loaded, horizons or (1,), progress=show)
    except ValueError as exc:
        _fail(str(exc), 1)
    click.echo(study.table())
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "funding_study.json"
    json_path.write_text(json.dumps(study.to_json(), indent=2) + "\n")
    click.echo(f"wrote {json_path}")
    click.echo(f"wrote {plot_study(study, out / 'funding_study.png')}")


if __name__ == "__main__":
    cli()
