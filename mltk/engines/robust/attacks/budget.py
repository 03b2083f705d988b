"""Attack budgets as users write them: ``8/255``, ``0.03137`` or ``2/255``."""

from __future__ import annotations

from fractions import Fraction

from mltk.core.errors import UsageError


def parse_fraction(value: str | float | int, key: str) -> float:
    """``"8/255"`` -> 0.031372...; a UsageError naming ``key`` unless the value is a number in [0, 1]."""
    text = str(value).strip()
    try:
        number = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--{key.replace('_', '-')}: {text!r} is not a number or a fraction such as 8/255",
                         hint=f"give --{key.replace('_', '-')} on the [0, 1] pixel scale, e.g. 8/255 or 0.0314") from None
    if not 0 <= number <= 1:
        raise UsageError(f"--{key.replace('_', '-')}: {text} lies outside [0, 1]",
                         hint="budgets are on the [0, 1] pixel scale: 8/255, not 8") from None
    return number
