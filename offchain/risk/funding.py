"""The funding rate the keeper signs per market: from its own fills or from a larger venue.

Every quantity is an integer in WAD (``1e18`` = 100%); rates signed on-chain are per second and
positive when longs pay shorts.

**Premium mode** (Binance / dYdX v3 style). The engine accumulates, per market, the fills'
notional ``A_n`` and notional times premium ``A_w`` (``premium = (fill - mark) / mark``;
``MarginEngine.premium_accumulator``). From two readings ``a`` (the newest at or before
``t - W``) and ``b`` (the newest) the premium over the funding window ``W`` is the
notional-weighted average of the fills in between, shrunk toward zero when they are thin::

    P = (A_w(b) - A_w(a)) / max(A_n(b) - A_n(a), N_min)

``N_min`` (``min_window_notional``) reads as "the rest of ``N_min`` traded at the mark": a lone
10-dollar fill at the edge of the price band cannot set the rate. The 8-hour rate is Binance's::

    F = P + clamp(I - P, -c, +c)          I = 0.01% and c = 0.05% per 8 hours

so ``F = I`` while ``P`` lies within ``c`` of ``I``, and ``F`` follows ``P`` (less ``c``) beyond.
Per second: ``rate = trunc(F / 28_800)``, then clamped to the registry's
``+-max_funding_rate`` (nothing is clamped on-chain).

*No fills in the window.* The premium of the last window that held fills, ``P_last`` (computed
at the reading ``t_last``), decays linearly to zero over ``D`` (``decay``, default one funding
window)::

    P(t) = P_last * max(0, D - (t - t_last)) / D         (truncated toward zero)

so the rate falls to the interest term ``I``: the premium stays while the window still holds the
last fills (up to ``W``), then fades over ``D``; a market that stops trading pays only the
interest term within ``W + D`` (16 hours by default). Linear, like the registry's own stale
funding rule, and a single trade resets it.

**Reference mode.** A market that mirrors a larger venue signs that venue's published rate: a
Chainlink-style feed whose answer is the venue's funding rate per 8 hours in ``10**-decimals``
(the devnet's ``MockPriceFeed`` with 8 decimals: ``10_000`` is 0.01% per 8 hours; a venue that
settles every 1, 2 or 4 hours is published as its 8-hour equivalent). Per second:
``trunc(answer * 10**(18 - decimals) / 28_800)``. Once the answer is older than ``max_age``
(default nine hours: one settlement interval and an hour's grace) it decays linearly to zero
over ``decay`` (default eight hours), then the market pays nothing until the feed recovers.
The same registry bound applies.

References
----------
Binance, "Introduction to Binance Futures Funding Rates" (premium index, interest rate 0.01% per
8 hours, clamp +-0.05%). dYdX v3, "Perpetual contract funding" (premium averaged over the hour).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from offchain import WAD
from offchain.protocol.margin_math import MAX_FUNDING_RATE_BOUND

HOUR_S = 3600
INTERVAL_8H_S = 8 * HOUR_S
DEFAULT_INTEREST_8H = 10**14  # 0.01% per 8 hours
DEFAULT_INTEREST_CLAMP_8H = 5 * 10**14  # +-0.05% per 8 hours
DEFAULT_MIN_WINDOW_NOTIONAL = 100_000 * WAD  # USD of fills for a full-weight premium
DEFAULT_REFERENCE_DECIMALS = 8
MAX_ABS_RATE_8H = WAD  # a published 8-hour rate beyond +-100% is a broken feed

Source = Literal["premium", "decay", "none", "reference", "reference_stale"]


# ---------------------------------------------------------------------------------------------
# Pure maths


def trunc_div(a: int, b: int) -> int:
    """``a / b`` truncated toward zero, ``b > 0`` (the EVM's signed division)."""
    q = abs(a) // b
    return q if a >= 0 else -q


def clamp(x: int, low: int, high: int) -> int:
    """``min(max(x, low), high)``."""
    return min(max(x, low), high)


def window_premium(d_weighted: int, d_notional: int, min_notional: int) -> int:
    """The window's premium (WAD) from accumulator differences.

    ``P = trunc(dW * WAD / max(dN, N_min))``: the notional-weighted average premium of the fills,
    shrunk toward zero when ``dN < N_min``.

    Examples
    --------
    >>> window_premium(1_000 * 10**18, 1_000_000 * 10**18, 0)  # 0.1% on 1M USD
    1000000000000000
    >>> window_premium(1_000 * 10**18, 500_000 * 10**18, 1_000_000 * 10**18)  # half weight
    1000000000000000
    """
    if d_notional < 0:
        raise ValueError(f"accumulated notional went down by {-d_notional}")
    denominator = max(d_notional, min_notional)
    if denominator == 0:
        return 0
    return trunc_div(d_weighted * WAD, denominator)


def decayed_premium(premium: int, since: int, decay_s: int) -> int:
    """``trunc(P * max(0, D - since) / D)``: linear to zero over ``decay_s`` seconds."""
    if since < 0:
        raise ValueError(f"decay measured from the future ({since} s)")
    if decay_s <= 0 or since >= decay_s:
        return 0
    return trunc_div(premium * (decay_s - since), decay_s)


def funding_rate_8h(premium: int, interest: int, interest_clamp: int) -> int:
    """Binance's ``F = P + clamp(I - P, -c, +c)`` (all per 8 hours, WAD).

    Examples
    --------
    >>> funding_rate_8h(0, 10**14, 5 * 10**14)  # no premium: the interest term
    100000000000000
    >>> funding_rate_8h(10**15, 10**14, 5 * 10**14)  # 0.1% premium: 0.1% - 0.05%
    500000000000000
    """
    return premium + clamp(interest - premium, -interest_clamp, interest_clamp)


def per_second(rate_8h: int, interval_s: int = INTERVAL_8H_S) -> int:
    """A rate per ``interval_s`` as a rate per second, truncated toward zero."""
    return trunc_div(rate_8h, interval_s)


def bounded(rate: int, max_funding_rate: int) -> int:
    """``rate`` clamped to ``[-max_funding_rate, max_funding_rate]`` (the registry's bound)."""
    if not 0 <= max_funding_rate <= MAX_FUNDING_RATE_BOUND:
        raise ValueError(f"max_funding_rate {max_funding_rate} outside [0, 2**47 - 1]")
    return clamp(rate, -max_funding_rate, max_funding_rate)


def reference_rate_8h(answer: int, decimals: int) -> int:
    """A reference feed's answer (the 8-hour rate in ``10**-decimals``) in WAD."""
    if not 0 <= decimals <= 18:
        raise ValueError(f"reference feed decimals must be 0 to 18, got {decimals}")
    return answer * 10 ** (18 - decimals)


def stale_factor(age_s: int, max_age_s: int, decay_s: int) -> tuple[int, int]:
    """``(numerator, denominator)`` of the weight of a reading ``age_s`` old: 1 up to
    ``max_age_s``, then linear to 0 over ``decay_s``."""
    if age_s <= max_age_s:
        return 1, 1
    if decay_s <= 0 or age_s >= max_age_s + decay_s:
        return 0, 1
    return max_age_s + decay_s - age_s, decay_s


def fmt_rate_8h(rate_8h: int) -> str:
    """``0.0100%/8h``."""
    return f"{rate_8h / WAD:.4%}/8h"


# ---------------------------------------------------------------------------------------------
# Quotes and readings


@dataclass(frozen=True)
class AccumulatorReading:
    """``premium_accumulator(market)`` read at time ``at`` (the block's timestamp)."""

    at: int
    weighted: int
    notional: int


@dataclass(frozen=True)
class ReferenceReading:
    """A reference feed's ``latestRoundData``: the 8-hour rate and when it was published."""

    answer: int
    updated_at: int
    decimals: int = DEFAULT_REFERENCE_DECIMALS


@dataclass(frozen=True)
class FundingQuote:
    """The rate to sign and why.

    ``rate`` is per second (WAD), inside the bound; ``rate_8h`` the 8-hour rate before the
    conversion and the bound; ``premium`` the premium term used (0 in reference mode);
    ``window_notional`` the fills' notional in the window; ``clipped`` whether the bound cut it.
    """

    rate: int
    rate_8h: int
    source: Source
    premium: int = 0
    window_notional: int = 0
    window_s: int = 0
    clipped: bool = False
    note: str = ""

    def detail(self) -> str:
        """One line for the keeper's log."""
        head = {
            "premium": f"premium {self.premium / WAD:.4%} over {self.window_s / HOUR_S:.1f} h"
            f" (USD {self.window_notional / WAD:,.0f} of fills)",
            "decay": f"no fills in the window: premium decaying, {self.premium / WAD:.4%}",
            "none": "no fills yet: interest term only",
            "reference": "reference rate",
            "reference_stale": "reference feed stale: rate decaying",
        }[self.source]
        clip = " (clipped to the registry bound)" if self.clipped else ""
        note = f"; {self.note}" if self.note else ""
        return (
            f"funding {head} -> {fmt_rate_8h(self.rate_8h)} = {self.rate / WAD:.4e}/s{clip}{note}"
        )


# ---------------------------------------------------------------------------------------------
# Models


class PremiumFundingModel:
    """Funding from the market's own fills (module docstring), fed the engine's accumulators.

    Parameters
    ----------
    window_s
        Funding window ``W`` over which the premium is averaged (seconds).
    min_window_notional
        ``N_min``: fills worth less than this in the window are shrunk toward a zero premium.
    interest_8h, interest_clamp_8h
        ``I`` and ``c`` of ``F = P + clamp(I - P, -c, c)``, per 8 hours (WAD).
    decay_s
        ``D``: after the last window with fills, the premium falls linearly to zero over this.

    Examples
    --------
    >>> m = PremiumFundingModel(min_window_notional=0)
    >>> m.observe(AccumulatorReading(0, 0, 0))
    >>> m.observe(AccumulatorReading(8 * 3600, 1_000 * 10**18, 1_000_000 * 10**18))
    >>> q = m.quote(8 * 3600, max_funding_rate=10**12)
    >>> q.source, q.rate_8h, q.rate
    ('premium', 500000000000000, 17361111111)
    """

    def __init__(
        self,
        window_s: int = INTERVAL_8H_S,
        min_window_notional: int = DEFAULT_MIN_WINDOW_NOTIONAL,
        interest_8h: int = DEFAULT_INTEREST_8H,
        interest_clamp_8h: int = DEFAULT_INTEREST_CLAMP_8H,
        decay_s: int = INTERVAL_8H_S,
    ) -> None:
        if window_s < HOUR_S:
            raise ValueError(f"window_s must be at least one hour, got {window_s}")
        if min_window_notional < 0:
            raise ValueError(f"min_window_notional must be >= 0, got {min_window_notional}")
        if abs(interest_8h) > MAX_ABS_RATE_8H:
            raise ValueError(f"interest_8h {interest_8h} beyond +-100% per 8 hours")
        if not 0 <= interest_clamp_8h <= MAX_ABS_RATE_8H:
            raise ValueError(f"interest_clamp_8h must lie in [0, 1e18], got {interest_clamp_8h}")
        if decay_s < 0:
            raise ValueError(f"decay_s must be >= 0, got {decay_s}")
        self.window_s = window_s
        self.min_window_notional = min_window_notional
        self.interest_8h = interest_8h
        self.interest_clamp_8h = interest_clamp_8h
        self.decay_s = decay_s
        self._readings: deque[AccumulatorReading] = deque()
        self._last_filled: tuple[int, int] | None = None  # (at, premium) of the last busy window

    @property
    def readings(self) -> tuple[AccumulatorReading, ...]:
        """The readings kept (the window's start edge and everything after)."""
        return tuple(self._readings)

    @property
    def last_filled(self) -> tuple[int, int] | None:
        """``(at, premium)`` of the last window that held fills, or ``None``."""
        return self._last_filled

    def observe(self, reading: AccumulatorReading) -> None:
        """Add a reading (strictly later than the last; accumulated notional never falls)."""
        if self._readings:
            last = self._readings[-1]
            if reading.at <= last.at:
                raise ValueError(f"reading at {reading.at} not after the last one ({last.at})")
            if reading.notional < last.notional:
                raise ValueError(
                    f"premium accumulator notional fell from {last.notional} to"
                    f" {reading.notional} (another engine, or a reorganised chain)"
                )
        self._readings.append(reading)
        # Keep the newest reading at or before the window's start, and everything after it.
        start = reading.at - self.window_s
        while len(self._readings) >= 2 and self._readings[1].at <= start:
            self._readings.popleft()
        d_n = reading.notional - self._readings[0].notional
        if d_n > 0:
            d_w = reading.weighted - self._readings[0].weighted
            self._last_filled = (reading.at, window_premium(d_w, d_n, self.min_window_notional))

    def premium(self, now: int) -> tuple[int, Source, int, int]:
        """``(P, source, window notional, window seconds)`` at ``now``."""
        if not self._readings:
            raise ValueError("no premium accumulator reading yet")
        first, last = self._readings[0], self._readings[-1]
        if last.at > now:
            raise ValueError(f"latest reading at {last.at} is after now ({now})")
        if now - last.at > self.window_s:
            raise ValueError(
                f"latest premium reading is {now - last.at} s old (more than the"
                f" {self.window_s} s window): read the engine before quoting"
            )
        d_n = last.notional - first.notional
        if d_n > 0:
            p = window_premium(last.weighted - first.weighted, d_n, self.min_window_notional)
            return p, "premium", d_n, last.at - first.at
        if self._last_filled is None:
            return 0, "none", 0, last.at - first.at
        at, p_last = self._last_filled
        return decayed_premium(p_last, now - at, self.decay_s), "decay", 0, last.at - first.at

    def quote(self, now: int, max_funding_rate: int) -> FundingQuote:
        """The rate to sign at ``now`` inside ``+-max_funding_rate`` (per second, WAD)."""
        p, source, notional, span = self.premium(now)
        f = funding_rate_8h(p, self.interest_8h, self.interest_clamp_8h)
        raw = per_second(f)
        rate = bounded(raw, max_funding_rate)
        note = ""
        if source == "premium" and span < self.window_s:
            note = f"partial window ({span} s of readings)"
        if source == "premium" and notional < self.min_window_notional:
            note = ", ".join(
                filter(
                    None,
                    [note, f"thin: weighted as USD {self.min_window_notional / WAD:,.0f}"],
                )
            )
        return FundingQuote(rate, f, source, p, notional, span, rate != raw, note)


class ReferenceFundingModel:
    """Funding mirrored from a larger venue's published rate (module docstring).

    Parameters
    ----------
    max_age_s
        A reading older than this starts to decay (default nine hours).
    decay_s
        Seconds over which a stale reading's rate falls linearly to zero.
    interval_s
        The period the published rate is per (8 hours).

    Examples
    --------
    >>> m = ReferenceFundingModel()
    >>> reading = ReferenceReading(answer=10_000, updated_at=1)  # 0.01% per 8 hours
    >>> q = m.quote(reading, now=3600, max_funding_rate=10**12)
    >>> q.source, q.rate_8h, q.rate
    ('reference', 100000000000000, 3472222222)
    """

    def __init__(
        self,
        max_age_s: int = INTERVAL_8H_S + HOUR_S,
        decay_s: int = INTERVAL_8H_S,
        interval_s: int = INTERVAL_8H_S,
    ) -> None:
        if max_age_s < 0 or decay_s < 0:
            raise ValueError(f"max_age_s and decay_s must be >= 0, got {max_age_s}, {decay_s}")
        if interval_s < 1:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.max_age_s = max_age_s
        self.decay_s = decay_s
        self.interval_s = interval_s

    def quote(self, reading: ReferenceReading, now: int, max_funding_rate: int) -> FundingQuote:
        """The rate to sign at ``now`` from the feed's last answer."""
        if reading.updated_at > now:
            raise ValueError(f"reference reading from the future ({reading.updated_at} > {now})")
        if reading.updated_at <= 0:
            raise ValueError("reference feed has never been updated")
        full = reference_rate_8h(reading.answer, reading.decimals)
        if abs(full) > MAX_ABS_RATE_8H:
            raise ValueError(f"reference rate {full / WAD:.2%} per 8 hours is implausible")
        age = now - reading.updated_at
        num, den = stale_factor(age, self.max_age_s, self.decay_s)
        f = trunc_div(full * num, den)
        raw = per_second(f, self.interval_s)
        rate = bounded(raw, max_funding_rate)
        source: Source = "reference" if age <= self.max_age_s else "reference_stale"
        note = f"published {age} s ago" + (f", full {fmt_rate_8h(full)}" if num != den else "")
        return FundingQuote(rate, f, source, clipped=rate != raw, note=note)


def funding_needs_push(
    current: int, proposed: int, relative: float = 0.1, floor: int = DEFAULT_INTEREST_8H // 280_000
) -> bool:
    """Whether a new rate is worth an update on its own: it changes sign, or moves by more than
    ``relative`` of the current rate and by more than ``floor`` (default 0.001% per 8 hours,
    a tenth of the interest term). The premium decays every second and moves with every fill;
    without this the keeper would push a funding change every block.

    >>> funding_needs_push(17_361_111_111, 17_000_000_000)  # -2%: no
    False
    >>> funding_needs_push(3_472_222_222, 17_361_111_111), funding_needs_push(1, -1)
    (True, True)
    """
    if proposed == current:
        return False
    if (proposed > 0) != (current > 0) and (proposed != 0 or current != 0):
        return True
    change = abs(proposed - current)
    return change > floor and change > relative * abs(current)


# ---------------------------------------------------------------------------------------------
# Configuration


FundingModel = PremiumFundingModel | ReferenceFundingModel


def _wad(section: Mapping[str, Any], key: str, default: int, where: str) -> int:
    if key not in section:
        return default
    value = section[key]
    try:
        x = float(str(value))
    except ValueError:
        raise ValueError(f"{where}.{key}: not a number: {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{where}.{key}: not finite: {value!r}")
    return round(x * WAD)


def _hours(section: Mapping[str, Any], key: str, default_s: int, where: str) -> int:
    if key not in section:
        return default_s
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{where}.{key}: expected a number of hours >= 0, got {value!r}")
    return round(value * HOUR_S)


def funding_model_from_config(section: Mapping[str, Any] | None, where: str) -> FundingModel | None:
    """Build a market's funding model from its ``funding:`` section (``None``: sign zero).

    Keys: ``mode`` (``premium``, ``reference`` or ``zero``); premium: ``window_hours`` (8),
    ``min_window_notional_usd`` (100000), ``interest_8h`` ("0.0001"), ``interest_clamp_8h``
    ("0.0005"), ``decay_hours`` (8); reference: ``feed`` (read by the keeper),
    ``max_age_hours`` (9), ``decay_hours`` (8). Raises ``ValueError`` naming the bad key.
    """
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(section).__name__}")
    mode = section.get("mode", "premium")
    premium_keys = {"window_hours", "min_window_notional_usd", "interest_8h", "interest_clamp_8h"}
    reference_keys = {"feed", "max_age_hours"}
    allowed = {"mode", "decay_hours"} | premium_keys | reference_keys
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if mode == "zero":
        return None
    if mode == "premium":
        if reference_keys & set(section):
            raise ValueError(f"{where}: feed/max_age_hours belong to mode: reference")
        notional = section.get("min_window_notional_usd", DEFAULT_MIN_WINDOW_NOTIONAL // WAD)
        if isinstance(notional, bool) or not isinstance(notional, int | float) or notional < 0:
            raise ValueError(
                f"{where}.min_window_notional_usd: expected USD >= 0, got {notional!r}"
            )
        return PremiumFundingModel(
            window_s=_hours(section, "window_hours", INTERVAL_8H_S, where),
            min_window_notional=round(notional) * WAD,
            interest_8h=_wad(section, "interest_8h", DEFAULT_INTEREST_8H, where),
            interest_clamp_8h=_wad(section, "interest_clamp_8h", DEFAULT_INTEREST_CLAMP_8H, where),
            decay_s=_hours(section, "decay_hours", INTERVAL_8H_S, where),
        )
    if mode == "reference":
        if premium_keys & set(section):
            raise ValueError(f"{where}: premium keys given with mode: reference")
        if not section.get("feed"):
            raise ValueError(f"{where}.feed: required with mode: reference")
        return ReferenceFundingModel(
            max_age_s=_hours(section, "max_age_hours", INTERVAL_8H_S + HOUR_S, where),
            decay_s=_hours(section, "decay_hours", INTERVAL_8H_S, where),
        )
    raise ValueError(f"{where}.mode: expected premium, reference or zero, got {mode!r}")


__all__ = [
    "DEFAULT_INTEREST_8H",
    "DEFAULT_INTEREST_CLAMP_8H",
    "DEFAULT_MIN_WINDOW_NOTIONAL",
    "INTERVAL_8H_S",
    "AccumulatorReading",
    "FundingModel",
    "FundingQuote",
    "PremiumFundingModel",
    "ReferenceFundingModel",
    "ReferenceReading",
    "bounded",
    "decayed_premium",
    "funding_model_from_config",
    "funding_needs_push",
    "funding_rate_8h",
    "per_second",
    "reference_rate_8h",
    "stale_factor",
    "window_premium",
]
