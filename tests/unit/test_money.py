"""app/money.py: the one parser, converter and formatter of amounts (DESIGN.md section 2)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.money import (
    InvalidAmountError,
    format_amount,
    from_cents,
    mask_account_number,
    parse_amount,
    quantize,
    to_cents,
)

MAXIMUM = Decimal("1000000.00")
MAX_CENTS = 100_000_000
FORMATTED = re.compile(r"-?[0-9]{1,3}(,[0-9]{3})*\.[0-9]{2}")
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)

REJECTED_INPUTS = {
    "zero": "0",
    "zero with decimals": "0.00",
    "negative": "-1.00",
    "negative zero": "-0",
    "explicit plus sign": "+5",
    "three decimals": "10.005",
    "many decimals": "1.0000001",
    "exponent": "1e3",
    "upper-case exponent": "1E3",
    "NaN": "NaN",
    "lower-case nan": "nan",
    "signalling NaN": "sNaN",
    "Infinity": "Infinity",
    "short infinity": "inf",
    "negative infinity": "-Infinity",
    "comma thousands separator": "1,000",
    "comma thousands separator with decimals": "1,000.00",
    "space thousands separator": "1 000",
    "underscore separator": "1_000",
    "apostrophe separator": "1'000",
    "decimal comma": "10,50",
    "fullwidth digits": "\uff11\uff10\uff10",
    "Arabic-Indic digits": "\u0661\u0660\u0660",
    "Devanagari digits": "\u0967\u0966\u0966",
    "superscript digit": "\u00b9",
    "empty": "",
    "spaces only": "   ",
    "tab only": "\t",
    "newline only": "\n",
    "trailing newline": "100\n",
    "leading tab": "\t100",
    "trailing dot": "5.",
    "leading dot": ".5",
    "two dots": "1.2.3",
    "currency sign": "$5",
    "currency code": "5 EUR",
    "hex": "0x10",
    "thirteen integer digits": "1234567890123",
    "above maximum by a cent": "1000000.01",
    "far above maximum": "999999999999.99",
}


@pytest.mark.parametrize("text", REJECTED_INPUTS.values(), ids=REJECTED_INPUTS.keys())
def test_parse_amount_rejects_input_outside_plain_ascii_notation(text):
    """Is every input DESIGN.md section 2 lists as invalid refused with InvalidAmountError?"""
    with pytest.raises(InvalidAmountError):
        parse_amount(text, maximum=MAXIMUM)


def test_parse_amount_rejects_none():
    """Is a missing value (None) refused rather than crashing?"""
    with pytest.raises(InvalidAmountError, match="Enter an amount"):
        parse_amount(None, maximum=MAXIMUM)


@pytest.mark.parametrize("text", ["", "   "])
def test_parse_amount_asks_for_an_amount_when_empty(text):
    """Does an empty field get a message that asks for an amount?"""
    with pytest.raises(InvalidAmountError, match="Enter an amount"):
        parse_amount(text, maximum=MAXIMUM)


def test_parse_amount_explains_the_expected_notation():
    """Does malformed input get a message that shows the accepted notation?"""
    with pytest.raises(InvalidAmountError, match="at most two decimals"):
        parse_amount("1e3", maximum=MAXIMUM)


def test_parse_amount_names_the_minimum_for_zero():
    """Is zero refused with a message naming the 0.01 minimum?"""
    with pytest.raises(InvalidAmountError, match="0.01"):
        parse_amount("0.00", maximum=MAXIMUM)


def test_parse_amount_names_the_maximum_when_exceeded():
    """Is an amount over the maximum refused with the maximum formatted for people?"""
    with pytest.raises(InvalidAmountError, match="1,000,000.00"):
        parse_amount("1000000.01", maximum=MAXIMUM)


@pytest.mark.parametrize("text", ["9999999999999", "1234567890123.45", "1" + "0" * 40])
def test_parse_amount_names_the_maximum_for_too_many_digits(text):
    """Is a plain number with more digits than any amount refused as over the maximum, not as
    badly written?"""
    with pytest.raises(InvalidAmountError, match="must not exceed 1,000,000.00"):
        parse_amount(text, maximum=MAXIMUM)


@pytest.mark.parametrize("text", ["00000000000001", "00000000000000000001.00", "0000000000000.5"])
def test_parse_amount_zero_padding_past_twelve_digits_is_a_notation_error_that_says_why(text):
    """Is a small amount padded with zeros past twelve digits (DESIGN.md section 2 allows at
    most 12) refused for its notation, with a message naming the rule it breaks, not as over
    the maximum nor with the general "digits with at most two decimals", which it is?"""
    with pytest.raises(InvalidAmountError, match="^Enter at most 12 digits before the decimal point.$"):
        parse_amount(text, maximum=MAXIMUM)


def test_parse_amount_accepts_twelve_digits_with_leading_zeros():
    """Are leading zeros within the 12 digits still accepted (DESIGN.md's pattern allows them)?"""
    assert parse_amount("000000000001.50", maximum=MAXIMUM) == Decimal("1.50")


def test_parse_amount_accepts_the_maximum_itself():
    """Is the maximum inclusive?"""
    assert parse_amount("1000000.00", maximum=MAXIMUM) == MAXIMUM
    assert parse_amount("1000000", maximum=MAXIMUM) == MAXIMUM


def test_parse_amount_accepts_the_smallest_positive_amount():
    """Is 0.01 accepted as the smallest transfer amount?"""
    assert parse_amount("0.01", maximum=MAXIMUM) == Decimal("0.01")


@pytest.mark.parametrize("text", ["0", "0.0", "0.00"])
def test_parse_amount_accepts_zero_only_when_allowed(text):
    """Is zero accepted for an opening deposit (allow_zero) and returned with two places?"""
    amount = parse_amount(text, maximum=MAXIMUM, allow_zero=True)
    assert amount == Decimal("0.00")
    assert amount.as_tuple().exponent == -2


def test_parse_amount_with_allow_zero_still_rejects_negative():
    """Does allow_zero let through zero only, never a negative amount?"""
    with pytest.raises(InvalidAmountError):
        parse_amount("-0.01", maximum=MAXIMUM, allow_zero=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1250", "1250.00"), ("1250.5", "1250.50"), ("1250.55", "1250.55"), ("  42.10  ", "42.10"), ("007", "7.00")],
)
def test_parse_amount_returns_exactly_two_places(text, expected):
    """Does a valid input come back as the same value with exactly two decimal places?"""
    amount = parse_amount(text, maximum=MAXIMUM)
    assert amount == Decimal(expected)
    assert str(amount) == expected


def test_to_cents_refuses_more_than_two_places():
    """Does converting 10.005 to cents raise instead of silently rounding?"""
    with pytest.raises(ValueError):
        to_cents(Decimal("10.005"))


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("sNaN")])
def test_quantize_refuses_non_finite_values(value):
    """Are NaN and Infinity refused before they could reach the database?"""
    with pytest.raises(ValueError):
        quantize(value)


@pytest.mark.parametrize("value", [1.5, "1.50", 150])
def test_quantize_refuses_non_decimal_types(value):
    """Are floats, strings and ints refused where a Decimal is required?"""
    with pytest.raises(ValueError):
        quantize(value)


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (Decimal("0"), "0.00"),
        (Decimal("5"), "5.00"),
        (Decimal("999.9"), "999.90"),
        (Decimal("1000"), "1,000.00"),
        (Decimal("1234.56"), "1,234.56"),
        (Decimal("1234567.89"), "1,234,567.89"),
        (Decimal("-1234.56"), "-1,234.56"),
    ],
)
def test_format_amount_uses_comma_thousands_and_two_decimals(amount, expected):
    """Is money shown as 1,234.56 (DESIGN.md section 8), with a leading minus for debits?"""
    assert format_amount(amount) == expected


def test_format_amount_of_none_is_empty():
    """Does a missing amount format as an empty string rather than 'None'?"""
    assert format_amount(None) == ""


def test_mask_account_number_shows_only_last_four_digits():
    """Is a counterparty's account number masked to ••••1234?"""
    assert mask_account_number("123456781234") == "\u2022\u2022\u2022\u20221234"
    assert "12345678" not in mask_account_number("123456781234")


@PROPERTY_SETTINGS
@given(st.integers(min_value=-(10**14), max_value=10**14))
def test_from_cents_then_to_cents_round_trips(cents):
    """Does every integer number of cents survive Decimal and back unchanged?"""
    amount = from_cents(cents)
    assert amount.as_tuple().exponent == -2
    assert to_cents(amount) == cents


@PROPERTY_SETTINGS
@given(st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=2, allow_nan=False,
                   allow_infinity=False))
def test_to_cents_then_from_cents_round_trips(amount):
    """Does every two-place Decimal survive cents and back with the same value?"""
    cents = to_cents(amount)
    assert isinstance(cents, int)
    assert from_cents(cents) == amount


@PROPERTY_SETTINGS
@given(st.integers(min_value=1, max_value=MAX_CENTS), st.sampled_from(["two", "one", "none"]))
def test_parse_amount_returns_exactly_the_written_value(cents, places):
    """Does any valid amount written with 0, 1 or 2 decimals parse to exactly that value?"""
    whole, fraction = divmod(cents, 100)
    if places == "two":
        text, expected = f"{whole}.{fraction:02d}", from_cents(cents)
    elif places == "one":
        text, expected = f"{whole}.{fraction // 10}", from_cents(cents - cents % 10)
    else:
        text, expected = str(whole), from_cents(cents - fraction)
    if expected == 0:
        return
    amount = parse_amount(text, maximum=MAXIMUM)
    assert amount == expected
    assert amount.as_tuple().exponent == -2


@PROPERTY_SETTINGS
@given(st.integers(min_value=MAX_CENTS + 1, max_value=10**14 - 1))
def test_parse_amount_refuses_every_value_above_the_maximum(cents):
    """Is every well-formed amount above the maximum refused?"""
    whole, fraction = divmod(cents, 100)
    with pytest.raises(InvalidAmountError):
        parse_amount(f"{whole}.{fraction:02d}", maximum=MAXIMUM)


@PROPERTY_SETTINGS
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=20))
def test_parse_amount_never_raises_anything_but_invalid_amount(text):
    """Does arbitrary text either parse to a two-place amount in range or raise InvalidAmountError
    (never another exception, such as decimal.InvalidOperation)?"""
    try:
        amount = parse_amount(text, maximum=MAXIMUM)
    except InvalidAmountError:
        return
    assert Decimal("0.01") <= amount <= MAXIMUM
    assert amount.as_tuple().exponent == -2
    assert re.fullmatch(r" *[0-9]{1,12}(\.[0-9]{1,2})? *", text)


@PROPERTY_SETTINGS
@given(st.integers(min_value=-(10**14), max_value=10**14))
def test_format_amount_groups_thousands_and_keeps_the_value(cents):
    """Is every amount shown with comma thousands, two decimals, and the exact value?"""
    amount = from_cents(cents)
    shown = format_amount(amount)
    assert FORMATTED.fullmatch(shown), shown
    assert Decimal(shown.replace(",", "")) == amount
