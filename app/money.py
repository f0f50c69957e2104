"""Money: the one place that parses, validates, quantizes, converts and formats amounts.

Amounts are `decimal.Decimal` with exactly two places in Python and integer minor units
(cents) in the database (DESIGN.md section 2). Nothing else in the application does arithmetic
on strings or floats.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
# ASCII digits only (`\d` would accept other scripts) and fullmatch (`$` would accept "\n").
AMOUNT_PATTERN = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")
# Plain digits, but more of them than any amount has: over every maximum, and said so.
LONG_AMOUNT_PATTERN = re.compile(r"([0-9]{13,})(\.[0-9]{1,2})?")


class InvalidAmountError(ValueError):
    """The text is not an acceptable amount; the message is safe to show to the user."""


def parse_amount(text: str | None, *, maximum: Decimal, allow_zero: bool = False) -> Decimal:
    """Parse user input into a Decimal amount with exactly two places.

    text: plain ASCII decimal notation, e.g. "1250" or "1250.5"; surrounding spaces are trimmed.
    maximum: inclusive upper bound (Decimal, two places).
    allow_zero: True only for an opening deposit; transfers need at least 0.01.
    Returns the amount quantized to 0.01. Raises InvalidAmountError for anything else: empty,
    negative, zero (unless allowed), more than two decimals, exponents (1e3), NaN, Infinity,
    thousands separators, non-ASCII digits, more than 12 digits before the point (zeros
    included), or above `maximum` (DESIGN.md section 2).
    """
    if text is None:
        raise InvalidAmountError("Enter an amount.")
    cleaned = text.strip(" ")
    if cleaned == "":
        raise InvalidAmountError("Enter an amount.")
    too_long = LONG_AMOUNT_PATTERN.fullmatch(cleaned)
    if too_long and len(too_long.group(1).lstrip("0")) > 12:
        raise InvalidAmountError(f"The amount must not exceed {format_amount(maximum)}.")
    if too_long:  # a small amount padded with zeros past 12 digits: refused for its notation, told why
        raise InvalidAmountError("Enter at most 12 digits before the decimal point.")
    if not AMOUNT_PATTERN.fullmatch(cleaned):
        raise InvalidAmountError(
            "Enter the amount as digits with at most two decimals, for example 1250.00 "
            "(no signs, separators or exponents)."
        )
    amount = Decimal(cleaned).quantize(CENT)
    if amount == ZERO and not allow_zero:
        raise InvalidAmountError("The amount must be at least 0.01.")
    if amount > maximum:
        raise InvalidAmountError(f"The amount must not exceed {format_amount(maximum)}.")
    return amount


def quantize(amount: Decimal) -> Decimal:
    """Return `amount` with exactly two places; raise ValueError if that would change its value."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValueError(f"money must be a finite Decimal, got {amount!r}")
    exact = amount.quantize(CENT, rounding=ROUND_HALF_EVEN)
    if exact != amount:
        raise ValueError(f"money has more than two decimal places: {amount!r}")
    return exact


def to_cents(amount: Decimal) -> int:
    """Convert a Decimal amount (two places) to integer minor units; raise ValueError if inexact."""
    return int(quantize(amount) * 100)


def from_cents(cents: int) -> Decimal:
    """Convert integer minor units to a Decimal amount with exactly two places."""
    return (Decimal(int(cents)) / 100).quantize(CENT)


def format_amount(amount: Decimal | None) -> str:
    """Format an amount for display: two decimals, comma thousands separator (`1,234.56`).

    Negative amounts keep their leading minus (`-1,234.56`); None formats as an empty string.
    """
    if amount is None:
        return ""
    try:
        return f"{Decimal(amount).quantize(CENT):,.2f}"
    except InvalidOperation:
        return ""


def mask_account_number(number: str | None) -> str:
    """Show only the last four digits of an account number: `••••1234` (DESIGN.md section 8)."""
    if not number:
        return ""
    return "\u2022\u2022\u2022\u2022" + number[-4:]
