"""Every money edge case of DESIGN.md section 2 on every money field (CWE-20 improper input
validation, CWE-681 incorrect numeric conversion; OWASP ASVS 5.1.3, 5.1.4).

The fields: `opening_balance` on /banking/open-account, `amount` on both transfers, and
`min_amount` / `max_amount` on /banking/transactions and /audit/transactions. The rule: after
trimming spaces, the text must be `[0-9]{1,12}(\\.[0-9]{1,2})?` (ASCII digits, no sign, no
separator, no exponent, at most two decimals), at least 0.01 (0.00 allowed for an opening deposit
and the filters), at most the field's maximum (inclusive); an empty filter means "no filter".
Anything else is refused with a form error and changes nothing; anything else is accepted with
exactly that Decimal. Each edge case is one test per field; Hypothesis then throws generated
text at each field against the same rule, and the ledger must verify after every batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.banking.services import verify_ledger
from app.extensions import db
from app.models import Account, Transaction
from tests.factories import issued_key
from tests.security.attack_data import (
    add_credits,
    balances,
    field_errors,
    make_account,
    make_user,
    module_app,
    signed_in,
    table_rows,
)

AMOUNT_SHAPE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")
FILTER_MAXIMUM = Decimal("999999999999.99")
# The ledger entries of the filter account: amounts on both sides of every edge a filter tests.
FILTER_AMOUNTS = ["0.01", "0.02", "0.10", "5.00", "5.01", "12.00", "999.99", "1000.00", "10000.00",
                  "1000000.00", "999999999999.99"]
REFUSED = "refused"


@dataclass(frozen=True)
class MoneyField:
    """One money input: how it is submitted, its maximum, and whether 0 and empty are accepted."""

    name: str
    kind: str            # "opening", "transfer" or "filter"
    form_field: str
    path: str
    allow_zero: bool
    optional: bool

    def maximum(self, app) -> Decimal:
        if self.kind == "opening":
            return app.config["MAX_OPENING_DEPOSIT"]
        if self.kind == "transfer":
            return app.config["MAX_TRANSFER_AMOUNT"]
        return FILTER_MAXIMUM


FIELDS = {
    "open_account-opening_balance": MoneyField("opening_balance", "opening", "opening_balance", "/banking/open-account",
                                               True, False),
    "transfer_internal-amount": MoneyField("internal", "transfer", "amount", "/banking/transfer/internal",
                                           False, False),
    "transfer_external-amount": MoneyField("external", "transfer", "amount", "/banking/transfer/external",
                                           False, False),
    "transactions-min_amount": MoneyField("customer", "filter", "min_amount", "/banking/transactions", True, True),
    "transactions-max_amount": MoneyField("customer", "filter", "max_amount", "/banking/transactions", True, True),
    "audit_transactions-min_amount": MoneyField("auditor", "filter", "min_amount", "/audit/transactions", True, True),
    "audit_transactions-max_amount": MoneyField("auditor", "filter", "max_amount", "/audit/transactions", True, True),
}


def expected_outcome(field: MoneyField, text: str, maximum: Decimal) -> Decimal | None | str:
    """DESIGN.md section 2 as an oracle: the Decimal the field must accept, None for an empty
    optional filter, or REFUSED."""
    cleaned = text.strip(" ")
    if cleaned == "" and field.optional:
        return None
    if not AMOUNT_SHAPE.fullmatch(cleaned):
        return REFUSED
    amount = Decimal(cleaned).quantize(Decimal("0.01"))
    if (amount == 0 and not field.allow_zero) or amount > maximum:
        return REFUSED
    return amount


@pytest.fixture(scope="module")
def world(test_backend):
    """A payer with a large balance, a second customer to pay, an opener (no account limit in
    this module), and a customer whose one account holds FILTER_AMOUNTS."""
    with module_app(test_backend, MAX_ACCOUNTS_PER_CUSTOMER=100_000) as app:
        payer, payee, opener, filtered = (make_user(app, "customer") for _ in range(4))
        auditor = make_user(app, "auditor")
        source = make_account(app, payer, "10000000000.00")
        own_target = make_account(app, payer, "0.00", type="savings")
        payee_account = make_account(app, payee, "0.00")
        filter_account = make_account(app, filtered, FILTER_AMOUNTS[0])
        add_credits(app, filter_account, FILTER_AMOUNTS[1:])
        yield SimpleNamespace(
            app=app, payer=payer, opener=opener, source=source, own_target=own_target, payee_account=payee_account,
            filter_account=filter_account,
            clients={"payer": signed_in(app, payer), "opener": signed_in(app, opener),
                     "customer": signed_in(app, filtered), "auditor": signed_in(app, auditor)},
        )


# ---------------------------------------------------------------------------------------------
# Submitting a value to a field, and judging the answer
# ---------------------------------------------------------------------------------------------


def _ledger_rows(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(Transaction.id)))


def _accounts_of(app, owner_id: int) -> dict[int, Decimal]:
    with app.app_context():
        return dict(db.session.execute(select(Account.id, Account.balance).where(Account.owner_id == owner_id)).all())


def _transfer(world, field: MoneyField, text: str):
    data = {"source_account": str(world.source.id), "amount": text, "description": "edge case",
            "idempotency_key": issued_key(world.app, world.payer.id)}
    if field.name == "internal":
        data["target_account"] = str(world.own_target.id)
    else:
        data["target_account_number"] = world.payee_account.account_number
    return world.clients["payer"].post(field.path, data=data)


def _target(world, field: MoneyField):
    return world.own_target if field.name == "internal" else world.payee_account


def check_transfer(world, field: MoneyField, text: str) -> None:
    app, target = world.app, _target(world, field)
    expected = expected_outcome(field, text, field.maximum(app))
    before, rows = balances(app, [world.source.id, target.id]), _ledger_rows(app)
    response = _transfer(world, field, text)
    after = balances(app, [world.source.id, target.id])
    if expected is REFUSED:
        assert response.status_code == 400, f"{text!r} must be refused"
        assert field_errors(response, "amount"), f"{text!r}: no form error on the amount"
        assert (after, _ledger_rows(app)) == (before, rows), f"{text!r}: a refused amount moved money"
    else:
        assert response.status_code == 302, f"{text!r} must be accepted: {field_errors(response, 'amount')}"
        assert after[world.source.id] == before[world.source.id] - expected
        assert after[target.id] == before[target.id] + expected
        with app.app_context():
            amounts = db.session.scalars(select(Transaction.amount).order_by(Transaction.id.desc()).limit(2)).all()
        assert amounts == [expected, expected] and _ledger_rows(app) == rows + 2


def check_opening(world, field: MoneyField, text: str) -> None:
    app = world.app
    expected = expected_outcome(field, text, field.maximum(app))
    before, rows = _accounts_of(app, world.opener.id), _ledger_rows(app)
    response = world.clients["opener"].post(field.path, data={"type": "checking", "opening_balance": text})
    after = _accounts_of(app, world.opener.id)
    if expected is REFUSED:
        assert response.status_code == 400, f"{text!r} must be refused"
        assert field_errors(response, "opening_balance"), f"{text!r}: no form error on the opening balance"
        assert (after, _ledger_rows(app)) == (before, rows), f"{text!r}: a refused deposit opened an account"
    else:
        assert response.status_code == 302, f"{text!r} must be accepted: {field_errors(response, 'opening_balance')}"
        [new] = set(after) - set(before)
        assert after[new] == expected
        assert _ledger_rows(app) == rows + (1 if expected > 0 else 0)


def _amounts_listed(response) -> list[Decimal]:
    """The unsigned amounts of the listed entries (the amount column is the one with a decimal point)."""
    found = []
    for row in table_rows(response):
        [cell] = [c for c in row if re.fullmatch(r"-?[0-9,]+\.[0-9]{2}", c)]
        found.append(abs(Decimal(cell.replace(",", ""))))
    return sorted(found)


def check_filter(world, field: MoneyField, text: str) -> None:
    expected = expected_outcome(field, text, FILTER_MAXIMUM)
    query = {field.form_field: text}
    if field.name == "auditor":
        query["account_number"] = world.filter_account.account_number
    response = world.clients[field.name].get(field.path, query_string=query)
    if expected is REFUSED:
        assert response.status_code == 400, f"{text!r} must be refused"
        assert field_errors(response, field.form_field), f"{text!r}: no form error on {field.form_field}"
        assert table_rows(response) == [], f"{text!r}: a refused filter listed entries"
        return
    assert response.status_code == 200, f"{text!r} must be accepted: {field_errors(response, field.form_field)}"
    everything = sorted(Decimal(a) for a in FILTER_AMOUNTS)
    if expected is None:
        wanted = everything
    elif field.form_field == "min_amount":
        wanted = [a for a in everything if a >= expected]
    else:
        wanted = [a for a in everything if a <= expected]
    assert _amounts_listed(response) == wanted, f"{text!r} filtered as something else than {expected}"


CHECKS = {"transfer": check_transfer, "opening": check_opening, "filter": check_filter}


def _assert_ledger_holds(world) -> None:
    with world.app.app_context():
        report = verify_ledger()
        db.session.rollback()
    assert report.ok, report.problems


# ---------------------------------------------------------------------------------------------
# The edge cases of DESIGN.md section 2, one test per field
# ---------------------------------------------------------------------------------------------

# case -> (text, or a function of the field's maximum; expected for transfer, opening, filter)
OK, NO = "accepted", REFUSED
EDGE_CASES = {
    "zero": ("0", NO, OK, OK),
    "zero_with_two_decimals": ("0.00", NO, OK, OK),
    "negative": ("-5.00", NO, NO, NO),
    "three_decimals": ("1.005", NO, NO, NO),
    "exponent": ("1e3", NO, NO, NO),
    "nan": ("NaN", NO, NO, NO),
    "infinity": ("Infinity", NO, NO, NO),
    "negative_zero": ("-0", NO, NO, NO),
    "a_tenth_of_a_cent": ("0.001", NO, NO, NO),
    "thousands_separator": ("1,000.00", NO, NO, NO),
    "arabic_indic_digits": ("\u0661\u0662", NO, NO, NO),
    "fullwidth_digits": ("\uff11\uff12", NO, NO, NO),
    "trailing_newline": ("5\n", NO, NO, NO),
    "leading_plus": ("+5", NO, NO, NO),
    "space_inside": ("1 000", NO, NO, NO),
    "tab_around": ("\t5\t", NO, NO, NO),
    "empty": ("", NO, NO, OK),
    "over_maximum_by_one_cent": (lambda maximum: str(maximum + Decimal("0.01")), NO, NO, NO),
    "exactly_maximum": (lambda maximum: str(maximum), OK, OK, OK),
    "one_cent": ("0.01", OK, OK, OK),
    "thirteen_integer_digits": ("1234567890123", NO, NO, NO),
    "spaces_around": ("  7.5  ", OK, OK, OK),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
@pytest.mark.parametrize("field_id", list(FIELDS))
def test_money_edge_case_is_refused_or_accepted_exactly(world, field_id, case):
    """Improper input validation / numeric conversion (CWE-20, CWE-681): is this edge case of
    DESIGN.md section 2 refused on this money field with a form error and no change (or no
    listing), or — exactly maximum, 0.01, zero where allowed, empty filter, spaces around —
    accepted with exactly its Decimal value?"""
    field = FIELDS[field_id]
    text, *expected_by_kind = EDGE_CASES[case]
    maximum = field.maximum(world.app)
    text = text(maximum) if callable(text) else text
    wanted = dict(zip(("transfer", "opening", "filter"), expected_by_kind))[field.kind]
    assert (expected_outcome(field, text, maximum) is REFUSED) == (wanted == REFUSED), "the oracle disagrees"
    CHECKS[field.kind](world, field, text)
    _assert_ledger_holds(world)


# ---------------------------------------------------------------------------------------------
# Generated text (Hypothesis), against the same rule
# ---------------------------------------------------------------------------------------------


def _amount_texts(maximum: Decimal):
    """Well-formed amounts from 0 to a little above `maximum` (often just around it or around
    zero), with 0, 1 or 2 decimals."""
    top = int(maximum * 100)
    cents = st.one_of(st.integers(min_value=0, max_value=top + 200),
                      st.integers(min_value=top - 300, max_value=top + 300),
                      st.integers(min_value=0, max_value=300))

    def spell(cents_and_places):
        cents, places = cents_and_places
        whole, fraction = divmod(cents, 100)
        return str(whole) if places == 0 else f"{whole}.{fraction // 10}" if places == 1 else f"{whole}.{fraction:02d}"

    return st.tuples(cents, st.sampled_from([0, 1, 2])).map(spell)


WHITESPACE = ["", " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2003"]
OTHER_DIGITS = [str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"),
                str.maketrans("0123456789", "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19")]


def money_text(maximum: Decimal):
    amounts = _amount_texts(maximum)
    edges = [str(maximum), str(maximum + Decimal("0.01")), "0", "0.00", "0.01", "0.001", "-0", "1e3", "NaN"]
    return st.one_of(
        st.text(max_size=16),                                                   # anything at all
        st.text(alphabet="0123456789.,+-eE \n\t\u0661\uff11", max_size=14),  # look like numbers
        st.from_regex(r" {0,2}[0-9]{1,13}(\.[0-9]{0,3})? {0,2}", fullmatch=True),  # right and nearly right
        amounts,                                                                # well-formed, near the limits
        st.sampled_from(edges),                                                 # the edges themselves
        st.tuples(st.sampled_from(WHITESPACE), amounts, st.sampled_from(WHITESPACE))
        .map("".join),                                                          # spaces and other white space
        st.tuples(amounts, st.sampled_from(OTHER_DIGITS)).map(lambda pair: pair[0].translate(pair[1])),  # other digits
    )


GENERATED = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("field_id", list(FIELDS))
def test_generated_money_text_follows_the_rule(world, field_id):
    """Improper input validation / numeric conversion (CWE-20, CWE-681), generated: for any text
    Hypothesis makes up, is it refused with a form error and no change when it does not match
    `[0-9]{1,12}(\\.[0-9]{1,2})?` after trimming spaces or lies outside the field's limits, and
    accepted with exactly its Decimal otherwise — and does the ledger still verify afterwards,
    with every balance what the accepted values add up to?"""
    field = FIELDS[field_id]
    maximum = field.maximum(world.app)
    watched = [world.source.id, world.own_target.id, world.payee_account.id, world.filter_account.id]
    expected = balances(world.app, watched)

    @GENERATED
    @given(text=money_text(maximum))
    def run(text):
        outcome = expected_outcome(field, text, maximum)
        CHECKS[field.kind](world, field, text)
        if field.kind == "transfer" and outcome is not REFUSED:
            expected[world.source.id] -= outcome
            expected[_target(world, field).id] += outcome

    run()
    _assert_ledger_holds(world)
    assert balances(world.app, watched) == expected


def test_verify_ledger_command_passes_after_the_batch(world):
    """Improper input validation (CWE-20) aftermath: after every edge case and generated value of
    this module, does `flask verify-ledger` still find every balance equal to its ledger?"""
    result = world.app.test_cli_runner().invoke(args=["verify-ledger"])
    assert result.exit_code == 0, result.output
