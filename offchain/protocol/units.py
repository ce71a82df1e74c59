"""Numbers as the configuration files write them: decimals as exact WAD integers."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator

from offchain import WAD


def to_wad(value: Any) -> int:
    """A decimal written in the file (``"0.005"``, ``2``, ``"1e6"``) as an exact WAD integer."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a number")
    try:
        scaled = Decimal(str(value).strip()) * WAD
    except (InvalidOperation, ValueError):
        raise ValueError(f"{value!r} is not a number") from None
    if not scaled.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value!r} has more than 18 decimals")
    if scaled < 0:
        raise ValueError(f"{value!r} is negative")
    return int(scaled)


Wad = Annotated[int, BeforeValidator(to_wad)]

__all__ = ["Wad", "to_wad"]
