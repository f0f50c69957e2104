"""Form building blocks shared by every blueprint: field shapes, not business rules."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from decimal import Decimal

from confusable_homoglyphs import categories as unicode_scripts
from email_validator import EmailNotValidError, validate_email
from flask import current_app
from flask_wtf import FlaskForm
from wtforms import DateField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional, StopValidation, ValidationError

from .models import ENTRY_TYPES
from .money import InvalidAmountError, parse_amount
from .widgets import SelectField

PHONE_PATTERN = re.compile(r"[0-9 +\-()]{7,20}")
# C0/C1 controls other than tab and line breaks; the bidirectional overrides and isolates that
# make stored text display in another order than it reads ("Trojan Source", CVE-2021-42574); and
# the characters that display as nothing, which let a name look like another or look blank
# (Unicode's Default_Ignorable_Code_Point and the blank "letters" TR #36 lists): soft hyphen,
# combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian vowel separator,
# zero-width space, word joiner, invisible operators, deprecated format controls, Braille blank,
# interlinear annotation marks, BOM, Egyptian hieroglyph format controls, shorthand format
# controls, musical symbol format controls, Khitan filler, the code points Unicode reserves as
# default-ignorable (U+2065, U+FFF0..FFF8, U+E0080..E00FF, U+E01F0..E0FFF), and the tag
# characters that can carry a hidden ASCII message ("ASCII smuggling"), unless they spell one of
# the three subdivision flag emoji (EMOJI_TAG_SEQUENCE, removed before the check). Zero-width
# (non-)joiners and variation selectors stay allowed: several scripts need the first in ordinary
# names, and emoji, CJK and Mongolian the second, though a selector only where it selects a
# glyph (_misplaced_variation_selector: one after each base, never a run that hides bytes);
# text made of nothing else is refused as blank (VISIBLE_CATEGORIES, `no_control_characters`).
CONTROL_CHARACTERS = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\xad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b"
    r"\u200e\u200f\u202a-\u202e\u2060-\u206f\u2800\u3164\ufeff\uffa0\ufff0-\ufffb"
    r"\U00013430-\U0001343f\U00016fe4\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e00ff"
    r"\U000e01f0-\U000e0fff]"
)
# The emoji tag sequences Unicode recommends (TS #51, RGI): the black flag, the tag letters of
# "gbeng", "gbsct" or "gbwls", the cancel tag: the flags of England, Scotland and Wales. Their
# tags draw the flag; any other tag text shows nothing and could hide a message.
EMOJI_TAG_SEQUENCE = re.compile(
    "\U0001f3f4\U000e0067\U000e0062(?:\U000e0065\U000e006e\U000e0067|\U000e0073\U000e0063\U000e0074"
    "|\U000e0077\U000e006c\U000e0073)\U000e007f"
)
# What draws something by itself: letters, digits, punctuation and symbols (the general
# categories L*, N*, P*, S*). White space, joiners, variation selectors and combining marks
# alone draw nothing a reader can see.
VISIBLE_CATEGORIES = ("L", "N", "P", "S")
# Accents stacked on one character past this many spill over the lines around them ("Zalgo"
# text); the most any script's ordinary spelling stacks is fewer (Vietnamese 2, Hebrew points
# with cantillation 3, Tibetan stacks 4).
MAX_COMBINING_MARKS = 5
# The scripts whose letters pass for one another (Latin a, Cyrillic а, Greek α, Armenian օ,
# Cherokee Ꭺ, Lisu ꓮ, Coptic ⲁ): one word that mixes them (a Cyrillic А in "Аdministrator") is a
# homograph of another word (Unicode TR #36 section 2, UTS #39 section 5). Other mixes
# (Japanese kanji with kana, "Tシャツ") are ordinary spelling. A word is a run of letters and
# marks (joiners inside it): "Kyiv/Київ" is two words, "Аd\u200dmin" one.
CONFUSABLE_SCRIPTS = frozenset({"LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE", "LISU", "COPTIC"})
# Mathematical Alphanumeric Symbols (𝐀, 𝔄, 𝖠, 𝟏): styled copies of Latin and Greek letters and
# digits that pass for the plain ones and that no one types in a name or a payment reference.
STYLED_LETTERS = re.compile(r"[\U0001d400-\U0001d7ff]")
# Variation selectors: text/emoji presentation, the standardized and ideographic ones, Mongolian.
PRESENTATION_SELECTORS = frozenset({0xFE0E, 0xFE0F})
MONGOLIAN_SELECTORS = frozenset({0x180B, 0x180C, 0x180D, 0x180F})
LINE_BREAKS = re.compile(r"[\t\n\r\u2028\u2029]")
DATE_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class EmptyForm(FlaskForm):
    """A form that only carries the CSRF token, for POST buttons (logout, freeze)."""

    submit = SubmitField("Confirm")


def strip_filter(value: str | None) -> str | None:
    """Trim surrounding white space from text input."""
    return value.strip() if isinstance(value, str) else value


def at_most(limit: int, *, shortest: int = -1) -> Length:
    """WTForms' Length(min=`shortest`, max=`limit`), in characters, with the bank's message,
    "Use at most 140 characters.", instead of the library's "Field cannot be longer than 140
    characters."; the field renders with the matching maxlength (and minlength) attributes."""
    return Length(min=shortest, max=limit, message=f"Use at most {limit} characters.")


def no_control_characters(form, field) -> None:
    """Refuse control characters (other than tab and newlines), bidirectional overrides and
    characters that display as nothing (CONTROL_CHARACTERS) in free text, text that holds only
    characters drawing nothing (joiners, variation selectors, combining marks, white space),
    more than MAX_COMBINING_MARKS marks stacked on one character, styled mathematical letters,
    and words that mix Latin, Cyrillic, Greek or other look-alike letters (CONFUSABLE_SCRIPTS):
    a name, description or note must show what it holds and not pass for other text (OWASP
    ASVS 4.0.3 5.1.3, Unicode TR #36 "Unicode Security Considerations", UTS #39). Raises
    ValidationError with the message to show."""
    if not field.data:
        return
    text = EMOJI_TAG_SEQUENCE.sub("\U0001f3f4", field.data)
    if not any(unicodedata.category(ch).startswith(VISIBLE_CATEGORIES) for ch in text):
        raise ValidationError("Enter visible text: this field shows nothing.")
    if CONTROL_CHARACTERS.search(text) or _misplaced_variation_selector(text):
        raise ValidationError("Remove control characters from this field.")
    if _stacks_combining_marks(text):
        raise ValidationError(f"Use at most {MAX_COMBINING_MARKS} accent marks on one character.")
    if STYLED_LETTERS.search(text):
        raise ValidationError("Use ordinary letters and digits: styled mathematical ones pass for others.")
    if any(len(unicode_scripts.unique_aliases(word) & CONFUSABLE_SCRIPTS) > 1 for word in _words(text)):
        raise ValidationError("Write each word in one alphabet: a word here mixes Latin, Cyrillic, Greek "
                              "or other look-alike letters.")


def _stacks_combining_marks(text: str) -> bool:
    """Whether `text` has more than MAX_COMBINING_MARKS combining marks (Mn, Mc, Me) on one base
    character. Joiners and other format characters between them don't start a new character."""
    run = 0
    for ch in text:
        category = unicodedata.category(ch)
        if category[0] == "M":
            run += 1
            if run > MAX_COMBINING_MARKS:
                return True
        elif category != "Cf":
            run = 0
    return False


def _misplaced_variation_selector(text: str) -> bool:
    """Whether a variation selector in `text` stands where it selects nothing, the way a run of
    selectors can carry hidden bytes ("variation selector smuggling"): each must follow a base
    character directly, never another selector; the text/emoji ones (U+FE0E, U+FE0F) a letter,
    digit, punctuation or symbol; U+FE00..FE0D a symbol or a CJK ideograph; the ideographic
    ones (U+E0100..E01EF) a CJK ideograph; the Mongolian ones a Mongolian letter."""
    base = ""
    for ch in text:
        code = ord(ch)
        if code in PRESENTATION_SELECTORS:
            fits = bool(base) and unicodedata.category(base)[0] in "LNPS"
        elif 0xFE00 <= code <= 0xFE0D:
            fits = bool(base) and (unicodedata.category(base) in ("Sm", "So") or unicode_scripts.alias(base) == "HAN")
        elif 0xE0100 <= code <= 0xE01EF:
            fits = bool(base) and unicode_scripts.alias(base) == "HAN"
        elif code in MONGOLIAN_SELECTORS:
            fits = bool(base) and unicode_scripts.alias(base) == "MONGOLIAN"
        else:
            base = ch
            continue
        if not fits:
            return True
        base = ""  # a second selector in a row has nothing left to select
    return False


def _words(text: str) -> Iterator[str]:
    """The words of `text`: runs of letters and marks, with any format character (a joiner)
    inside them; digits, punctuation, symbols and spaces separate words."""
    word: list[str] = []
    for ch in text:
        category = unicodedata.category(ch)
        if category[0] in "LM" or category == "Cf":
            word.append(ch)
        elif word:
            yield "".join(word)
            word = []
    if word:
        yield "".join(word)


def ascii_email(form, field) -> None:
    """Refuse an email address that is not plain ASCII once normalized (a full-width
    `ｅxample.com` domain folds to ASCII and passes; a punycode `xn--exmple-4nf.org` unfolds to
    Cyrillic and is refused): a Cyrillic `а` or a dotted `İ` in an address
    makes it look like another user's to the staff who read it, a homograph (Unicode TR #36
    section 2, OWASP ASVS 4.0.3 5.1.3). Raises ValidationError; an address that is not valid at
    all is left to the Email validator's message."""
    if not field.data:
        return
    try:  # an ASCII `xn--` domain is normalized to its Unicode form: judged by that, not as typed
        normalized = validate_email(field.data, check_deliverability=False).normalized
    except EmailNotValidError:
        return
    if not normalized.isascii():
        raise ValidationError("Use an email address written in plain ASCII characters (no accented or non-Latin letters).")


def printable_only(form, field) -> None:
    """Refuse any control or format character (NUL, tabs, line breaks, zero-width and
    bidirectional marks) in a one-token field such as an email address, and stop validating it:
    later checks (a database lookup, say) never see such text. PostgreSQL can't even store NUL."""
    if field.data and any(unicodedata.category(ch) in ("Cc", "Cf") for ch in field.data):
        raise StopValidation("Remove control characters from this field.")


def single_line(form, field) -> None:
    """Refuse tabs and line breaks in one-line text (names, subjects, transfer descriptions)."""
    if field.data and LINE_BREAKS.search(field.data):
        raise ValidationError("Keep this field on one line.")


def phone_number(form, field) -> None:
    """7 to 20 characters of digits, spaces and + - ( ), with at least 7 digits (DESIGN.md §8)."""
    value = field.data or ""
    if not PHONE_PATTERN.fullmatch(value) or sum(ch.isdigit() for ch in value) < 7:
        raise ValidationError("Enter a phone number of 7 to 20 characters: digits, spaces and + - ( ).")


class AmountField(StringField):
    """A money input parsed by app.money.parse_amount; `data` becomes a Decimal (two places).

    maximum_setting: the config key of the inclusive maximum (e.g. MAX_TRANSFER_AMOUNT).
    allow_zero: True only for an opening deposit. optional: an empty value gives None.
    Never relies on WTForms' DecimalField, which accepts `Infinity`, `1e3` and non-ASCII digits.
    """

    def __init__(self, label=None, validators=None, *, maximum_setting: str | None = None,
                 allow_zero: bool = False, optional: bool = False, **kwargs) -> None:
        super().__init__(label, validators, **kwargs)
        self.maximum_setting = maximum_setting
        self.allow_zero = allow_zero
        self.optional = optional

    def process_formdata(self, valuelist) -> None:
        self.data = valuelist[0] if valuelist else None

    def _value(self) -> str:
        if self.raw_data:
            return self.raw_data[0]
        return "" if self.data is None else str(self.data)

    def pre_validate(self, form) -> None:
        raw = self.data if isinstance(self.data, str) else ("" if self.data is None else str(self.data))
        if self.optional and raw.strip(" ") == "":
            self.data = None
            raise StopValidation()
        maximum = (current_app.config[self.maximum_setting] if self.maximum_setting
                   else Decimal("999999999999.99"))
        try:
            self.data = parse_amount(raw, maximum=maximum, allow_zero=self.allow_zero)
        except InvalidAmountError as exc:
            self.data = None
            raise StopValidation(str(exc)) from exc


# A date written as YYYY-MM-DD that the calendar doesn't have (2024-13-01, 2024-02-30); WTForms'
# own message ("Not a valid date value.") doesn't say what is wrong with it.
NO_SUCH_DATE_MESSAGE = "There is no such date; enter a real day as YYYY-MM-DD."


def ascii_date(form, field) -> None:
    """Refuse dates not written as ASCII `YYYY-MM-DD` (strptime would accept other digits)."""
    raw = field.raw_data[0] if field.raw_data else ""
    if raw and not DATE_PATTERN.fullmatch(raw):
        field.errors[:] = []  # one clear message instead of the date parser's as well
        raise StopValidation("Enter the date as YYYY-MM-DD.")


# A range whose end comes before its start matches nothing: said so, rather than shown as an
# empty list that reads as "no such entries".
REVERSED_DATES_MESSAGE = "The end date is before the start date; put the earlier day first."
REVERSED_AMOUNTS_MESSAGE = "The maximum is below the minimum; put the smaller amount first."


def date_range_in_order(form, field) -> None:
    """Validator of a `date_to` field: not before the form's `date_from` when both are valid days."""
    start = form.date_from.data
    if field.data is not None and start is not None and field.data < start:
        raise ValidationError(REVERSED_DATES_MESSAGE)


def amount_range_in_order(form, field) -> None:
    """Validator of a `max_amount` field: not below the form's `min_amount` when both are valid."""
    low = form.min_amount.data
    if field.data is not None and low is not None and field.data < low:
        raise ValidationError(REVERSED_AMOUNTS_MESSAGE)


class TransactionFilterForm(FlaskForm):
    """Query-string filters: date_from, date_to (YYYY-MM-DD, inclusive), type, min/max amount."""

    class Meta:
        csrf = False

    date_from = DateField("From (UTC)", format="%Y-%m-%d", validators=[ascii_date, Optional()],
                        invalid_value_message=NO_SUCH_DATE_MESSAGE)
    date_to = DateField("To (UTC)", format="%Y-%m-%d", validators=[ascii_date, Optional(), date_range_in_order],
                        invalid_value_message=NO_SUCH_DATE_MESSAGE)
    type = SelectField("Type", choices=[SelectChoice("", "Any")] + [SelectChoice(t, t.capitalize()) for t in ENTRY_TYPES],
                       validators=[Optional()])
    min_amount = AmountField("Min amount", allow_zero=True, optional=True)
    max_amount = AmountField("Max amount", [amount_range_in_order], allow_zero=True, optional=True)

    def filter_values(self) -> dict:
        """The validated values as keyword arguments of banking's TransactionFilters."""
        return {
            "date_from": self.date_from.data, "date_to": self.date_to.data, "type": self.type.data or None,
            "min_amount": self.min_amount.data, "max_amount": self.max_amount.data,
        }
