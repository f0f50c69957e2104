"""Internal and external transfers through the routes and the service (DESIGN.md sections 2, 3, 6, 8)."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update

from app.banking import services
from app.errors import AccountNotActiveError, AccountNotFoundError, LimitExceededError, TargetUnavailableError
from app.extensions import db
from app.models import Account, AuditLog, Transaction, User
from tests import factories

INTERNAL = "/banking/transfer/internal"
EXTERNAL = "/banking/transfer/external"
DANGER = re.compile(r'<div class="alert alert-danger" role="alert">(.*?)</div>', re.S)
KEY_INPUT = re.compile(r'name="idempotency_key" type="hidden" value="([^"]*)"')


@dataclass(frozen=True)
class State:
    balances: dict[int, Decimal]
    ledger_rows: int
    actions: list[str]


def _state(app) -> State:
    with app.app_context():
        return State(
            dict(db.session.execute(select(Account.id, Account.balance)).all()),
            db.session.scalar(select(func.count(Transaction.id))),
            list(db.session.scalars(select(AuditLog.action).order_by(AuditLog.id))),
        )


def _new_actions(before: State, after: State) -> list[str]:
    return after.actions[len(before.actions):]


def _text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def _danger(response) -> list[str]:
    return [html.unescape(m.strip()) for m in DANGER.findall(response.get_data(as_text=True))]


def _audit(app, action: str) -> list[tuple[int | None, dict]]:
    with app.app_context():
        rows = db.session.execute(select(AuditLog.user_id, AuditLog.details).where(AuditLog.action == action)
                                  .order_by(AuditLog.id)).all()
    return [(user_id, json.loads(details)) for user_id, details in rows]


def _form_key(client, url: str) -> str:
    """The idempotency key the transfer form at `url` issues to the signed-in user (a
    well-formed unsigned key when the page has no form, e.g. for a refused role)."""
    match = KEY_INPUT.search(client.get(url).get_data(as_text=True))
    return match.group(1) if match else "A" * 20 + "." + "B" * 43


def _internal(client, source, target, amount, description="", key=None, query=""):
    return client.post(INTERNAL + query, data={
        "source_account": str(getattr(source, "id", source)), "target_account": str(getattr(target, "id", target)),
        "amount": amount, "description": description,
        "idempotency_key": _form_key(client, INTERNAL + query) if key is None else key,
    })


def _external(client, source, number, amount, description="", key=None, query=""):
    return client.post(EXTERNAL + query, data={
        "source_account": str(getattr(source, "id", source)), "target_account_number": number, "amount": amount,
        "description": description, "idempotency_key": _form_key(client, EXTERNAL + query) if key is None else key,
    })


def _set_status(app, account_id: int, status: str) -> None:
    with app.app_context():
        db.session.execute(update(Account).where(Account.id == account_id).values(status=status))
        db.session.commit()


@pytest.fixture
def checking(logged_in_customer, make_account):
    return make_account(logged_in_customer, "100.00", type="checking")


@pytest.fixture
def savings(logged_in_customer, make_account):
    return make_account(logged_in_customer, "0.00", type="savings")


@pytest.fixture
def foreign(other_customer, make_account):
    """An account of another customer."""
    return make_account(other_customer, "10.00")


def _assert_refused_without_trace(app, before: State, response, message: str | tuple[str, ...]) -> None:
    """400 with `message` (or one of several) shown, balances and ledger unchanged, and exactly
    one new audit row since `before`: TRANSFER_FAILED."""
    assert response.status_code == 400, response.get_data(as_text=True)
    messages = (message,) if isinstance(message, str) else message
    assert any(text in _text(response) for text in messages), messages
    after = _state(app)
    assert after.balances == before.balances
    assert after.ledger_rows == before.ledger_rows
    assert "TRANSFER_CREATED" not in _new_actions(before, after)
    assert _new_actions(before, after) == ["TRANSFER_FAILED"]


# ---------------------------------------------------------------------------------------------
# Happy paths
# ---------------------------------------------------------------------------------------------


def test_transfer_form_carries_a_fresh_server_issued_key(client, app, logged_in_customer, checking):
    """Does each GET of a transfer form carry a new key, signed by the server for this user?"""
    keys = []
    for url in (INTERNAL, INTERNAL, EXTERNAL):
        page = client.get(url)
        assert page.status_code == 200
        keys.append(KEY_INPUT.search(page.get_data(as_text=True)).group(1))

    assert all(re.fullmatch(services.IDEMPOTENCY_KEY_PATTERN, key) for key in keys)
    assert len(set(keys)) == 3
    with app.app_context():
        assert all(services.is_issued_idempotency_key(logged_in_customer.id, key) for key in keys)
        assert not any(services.is_issued_idempotency_key(logged_in_customer.id + 1, key) for key in keys)


def _swap_character(text: str, index: int) -> str:
    """`text` with the character at `index` replaced by another URL-safe base64 character."""
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1:]


@pytest.mark.parametrize("forge", ["made_up", "other_users", "tampered"])
def test_transfer_refuses_a_key_the_server_did_not_issue_to_this_user(client, app, logged_in_customer,
                                                                       other_customer, checking, savings, forge):
    """Is a well-formed key that this server did not issue to the signed-in user (made up, issued
    to another user, or with its signature altered) refused with 400, moving nothing?"""
    issued = _form_key(client, INTERNAL)
    key = {
        "made_up": "A" * 20 + "." + "B" * 43,
        "other_users": factories.issued_key(app, other_customer.id),
        # The signature's first character: its last one carries 2 padding bits that base64
        # decoding ignores, so changing it may leave the signature valid (a flaky test).
        "tampered": _swap_character(issued, issued.index(".") + 1),
    }[forge]
    before = _state(app)

    response = _internal(client, checking, savings, "1.00", key=key)

    assert response.status_code == 400
    assert "reload the page" in _text(response)
    after = _state(app)
    assert after.balances == before.balances and after.ledger_rows == before.ledger_rows


def _selected(page: str, name: str) -> list[str]:
    """The values of the selected options of the select named `name` in `page`."""
    select_html = re.search(rf'<select[^>]*name="{name}"[^>]*>(.*?)</select>', page, re.S).group(1)
    return [re.search(r'value="([^"]*)"', tag).group(1) for tag in re.findall(r"<option[^>]*>", select_html)
            if re.search(r"\sselected[\s>=]", tag)]


def test_internal_form_starts_with_two_different_accounts(client, logged_in_customer, checking, savings):
    """Does a new internal transfer form preselect the first account as the source and the second
    as the target, so sending it as it comes doesn't fail with "Choose two different accounts"?"""
    page = client.get(INTERNAL).get_data(as_text=True)

    assert _selected(page, "target_account") == [str(savings.id)]
    assert _selected(page, "source_account") in ([], [str(checking.id)])


def test_internal_transfer_moves_money_with_one_debit_and_one_credit(client, app, logged_in_customer, checking, savings):
    """Does an internal transfer move the amount, write a debit and a credit sharing one reference,
    log TRANSFER_CREATED and redirect to the dashboard with a message?"""
    page = client.get(INTERNAL).get_data(as_text=True)
    key = KEY_INPUT.search(page).group(1)

    response = _internal(client, checking, savings, "40.25", "Rainy day", key=key)

    assert response.status_code == 302 and response.headers["Location"].endswith("/banking/dashboard")
    state = _state(app)
    assert state.balances[checking.id] == Decimal("59.75") and state.balances[savings.id] == Decimal("40.25")
    with app.app_context():
        rows = db.session.execute(
            select(Transaction.account_id, Transaction.type, Transaction.amount, Transaction.sender_account_id,
                   Transaction.receiver_account_id, Transaction.reference, Transaction.description,
                   Transaction.initiated_by_user_id, Transaction.idempotency_key)
            .where(Transaction.description == "Rainy day").order_by(Transaction.type)
        ).all()
    [credit, debit] = rows
    assert (debit.account_id, debit.type, debit.amount) == (checking.id, "debit", Decimal("40.25"))
    assert (credit.account_id, credit.type, credit.amount) == (savings.id, "credit", Decimal("40.25"))
    assert debit.reference == credit.reference and re.fullmatch(r"TX-[0-9A-F]{16}", debit.reference)
    assert (debit.sender_account_id, debit.receiver_account_id) == (checking.id, savings.id)
    assert (credit.sender_account_id, credit.receiver_account_id) == (checking.id, savings.id)
    assert debit.initiated_by_user_id == credit.initiated_by_user_id == logged_in_customer.id
    assert debit.idempotency_key == key
    [(actor, details)] = _audit(app, "TRANSFER_CREATED")
    assert actor == logged_in_customer.id
    assert details["reference"] == debit.reference and details["amount"] == "40.25"
    assert details["kind"] == "internal" and details["source_owner_id"] == logged_in_customer.id
    assert "idempotency_key" not in json.dumps(details)
    dashboard = client.get("/banking/dashboard")
    assert f"Transfer complete. Reference {debit.reference}." in _text(dashboard)
    with app.app_context():
        assert services.verify_ledger().ok


def test_external_transfer_moves_money_to_another_customer(client, app, logged_in_customer, other_customer,
                                                          checking, foreign):
    """Does an external transfer to another customer's number debit the sender, credit the receiver
    under one reference, and log TRANSFER_CREATED naming both owners?"""
    response = _external(client, checking, foreign.account_number, "30.00", "Dinner")

    assert response.status_code == 302
    state = _state(app)
    assert state.balances[checking.id] == Decimal("70.00") and state.balances[foreign.id] == Decimal("40.00")
    with app.app_context():
        rows = db.session.execute(
            select(Transaction.account_id, Transaction.type, Transaction.reference)
            .where(Transaction.description == "Dinner")
        ).all()
    assert sorted((r.account_id, r.type) for r in rows) == sorted([(checking.id, "debit"), (foreign.id, "credit")])
    assert len({r.reference for r in rows}) == 1
    [(actor, details)] = _audit(app, "TRANSFER_CREATED")
    assert actor == logged_in_customer.id and details["kind"] == "external"
    assert details["source_owner_id"] == logged_in_customer.id and details["target_owner_id"] == other_customer.id
    assert details["target_account"] == foreign.account_number
    with app.app_context():
        assert services.verify_ledger().ok


def test_transfer_of_the_exact_balance_is_allowed(client, app, logged_in_customer, checking, savings):
    """May a customer send exactly the whole balance, leaving 0.00?"""
    response = _internal(client, checking, savings, "100.00")

    assert response.status_code == 302
    assert _state(app).balances[checking.id] == Decimal("0.00")


def test_transfer_at_the_maximum_amount_is_allowed(client, app, logged_in_customer, make_account, savings):
    """Is MAX_TRANSFER_AMOUNT (1,000,000.00) inclusive?"""
    rich = make_account(logged_in_customer, "1000000.00")

    response = _internal(client, rich, savings, "1000000.00")

    assert response.status_code == 302
    assert _state(app).balances[savings.id] == Decimal("1000000.00")


# ---------------------------------------------------------------------------------------------
# Domain refusals: 400, a message, nothing changed, one TRANSFER_FAILED row
# ---------------------------------------------------------------------------------------------


def test_transfer_refuses_amount_above_balance(client, app, logged_in_customer, checking, savings):
    """Is a transfer of more than the balance refused, leaving nothing but a TRANSFER_FAILED row?"""
    before = _state(app)

    response = _internal(client, checking, savings, "100.01")

    _assert_refused_without_trace(app, before, response, "Insufficient funds in the source account.")
    [(actor, details)] = _audit(app, "TRANSFER_FAILED")
    assert actor == logged_in_customer.id
    assert details["reason"] == "InsufficientFundsError" and details["amount"] == "100.01"


def test_transfer_refuses_the_same_account_as_source_and_target(client, app, logged_in_customer, checking):
    """Is moving money from an account to itself refused (internal form and external number)?"""
    before = _state(app)
    response = _internal(client, checking, checking, "1.00")
    _assert_refused_without_trace(app, before, response, "Choose two different accounts.")

    before = _state(app)
    response = _external(client, checking, checking.account_number, "1.00")
    _assert_refused_without_trace(app, before, response, "Choose two different accounts.")


@pytest.mark.parametrize("status", ["frozen", "closed"])
def test_transfer_refuses_a_frozen_or_closed_source(client, app, logged_in_customer, checking, savings, foreign, status):
    """Is a frozen or closed source refused for both kinds of transfer, with the account still
    listed in the form so the refusal is visible?"""
    _set_status(app, checking.id, status)
    page = client.get(INTERNAL).get_data(as_text=True)
    assert f"({status})" in page

    before = _state(app)
    response = _internal(client, checking, savings, "1.00")
    _assert_refused_without_trace(app, before, response, "The source account is frozen or closed")

    before = _state(app)
    response = _external(client, checking, foreign.account_number, "1.00")
    _assert_refused_without_trace(app, before, response, "The source account is frozen or closed")


def test_internal_transfer_refuses_a_frozen_target(client, app, logged_in_customer, checking, savings):
    """Is an internal transfer into one's own frozen account refused?"""
    _set_status(app, savings.id, "frozen")
    before = _state(app)

    response = _internal(client, checking, savings, "1.00")

    _assert_refused_without_trace(app, before, response, "The target account is frozen or closed")


def test_external_unknown_frozen_and_closed_targets_give_the_identical_answer(client, app, logged_in_customer,
                                                                             checking, foreign, make_account,
                                                                             other_customer):
    """Do an unknown, a frozen and a closed external account number get the same status and the
    same message, so the form can't be used to probe which numbers exist or their status?"""
    closed = make_account(other_customer, "0.00")
    _set_status(app, foreign.id, "frozen")
    _set_status(app, closed.id, "closed")
    unknown = "123456789012"
    assert unknown not in (foreign.account_number, closed.account_number, checking.account_number)

    answers = []
    for number in (unknown, foreign.account_number, closed.account_number):
        before = _state(app)
        response = _external(client, checking, number, "5.00")
        _assert_refused_without_trace(app, before, response, "That account number cannot receive transfers.")
        answers.append((response.status_code, _danger(response)))

    assert answers[0] == answers[1] == answers[2]
    assert answers[0][1] == ["That account number cannot receive transfers. Check the number and try again."]
    reasons = {details["reason"] for _, details in _audit(app, "TRANSFER_FAILED")}
    assert reasons == {"TargetUnavailableError"}


def test_an_amount_over_the_balance_gets_the_same_answer_whatever_the_target(client, app, logged_in_customer,
                                                                          checking, foreign, make_account,
                                                                          other_customer):
    """Does an amount over the source's balance get the same status and message for an active,
    a frozen and an unknown external account number? Were the target looked up before the funds
    were checked, the existing numbers would answer "insufficient funds" and the others "cannot
    receive", and the form would tell which account numbers exist (DESIGN.md section 3)."""
    frozen = make_account(other_customer, "0.00")
    _set_status(app, frozen.id, "frozen")
    unknown = "123456789012"
    assert unknown not in (foreign.account_number, frozen.account_number, checking.account_number)

    answers = []
    for number in (foreign.account_number, frozen.account_number, unknown):
        before = _state(app)
        response = _external(client, checking, number, "100.01")
        _assert_refused_without_trace(app, before, response, "Insufficient funds in the source account.")
        answers.append((response.status_code, _danger(response)))

    assert answers[0] == answers[1] == answers[2]
    reasons = {details["reason"] for _, details in _audit(app, "TRANSFER_FAILED")}
    assert reasons == {"InsufficientFundsError"}


def test_refused_transfer_leaves_its_key_usable(client, app, logged_in_customer, checking, savings):
    """After a refusal, can the corrected form be resubmitted with the same key and go through?"""
    key = _form_key(client, INTERNAL)
    assert _internal(client, checking, savings, "500.00", key=key).status_code == 400

    response = _internal(client, checking, savings, "50.00", key=key)

    assert response.status_code == 302
    assert _state(app).balances[savings.id] == Decimal("50.00")


# ---------------------------------------------------------------------------------------------
# Form errors: 400, a message, nothing changed, one TRANSFER_FAILED row
# ---------------------------------------------------------------------------------------------


def test_source_account_of_another_customer_is_a_form_error(client, app, logged_in_customer, checking, savings, foreign):
    """Is another customer's account id posted as the source refused (400) with nothing moved,
    on both forms, and the attempt audited with the id that was tried?"""
    before = _state(app)
    key = _form_key(client, INTERNAL)
    response = _internal(client, foreign, savings, "1.00", key=key)
    _assert_refused_without_trace(app, before, response, "Not a valid choice")
    [(actor, details)] = _audit(app, "TRANSFER_FAILED")
    assert actor == logged_in_customer.id
    assert details["reason"] == "InvalidForm" and details["fields"] == ["source_account"]
    assert details["submitted"]["source_account"] == str(foreign.id) and details["kind"] == "internal"
    assert "reason_given" not in details  # only an admin's description is a reason
    assert key not in json.dumps(details)

    before = _state(app)
    response = _external(client, foreign, checking.account_number, "1.00")
    _assert_refused_without_trace(app, before, response, "Not a valid choice")
    assert _state(app).balances[foreign.id] == Decimal("10.00")


def test_internal_target_of_another_customer_is_a_form_error(client, app, logged_in_customer, checking, foreign):
    """Is another customer's account id posted as the internal form's target refused (400)?"""
    before = _state(app)

    response = _internal(client, checking, foreign, "1.00")

    _assert_refused_without_trace(app, before, response, "Not a valid choice")


@pytest.mark.parametrize("source_or_target", ["source_account", "target_account"])
def test_malformed_account_ids_are_form_errors(client, app, logged_in_customer, checking, savings, source_or_target):
    """Are malformed account ids (empty, text, negative, decimal, huge, non-ASCII) a 400 form
    error, never a 500, moving nothing?"""
    for value in ("", "abc", "-1", "1.5", "99999999999999999999999", "\uff11"):
        before = _state(app)
        data = {"source_account": str(checking.id), "target_account": str(savings.id), "amount": "1.00",
                "description": "", "idempotency_key": _form_key(client, INTERNAL), source_or_target: value}

        response = client.post(INTERNAL, data=data)

        # An id that doesn't convert gets the app's own words, not WTForms' "could not coerce".
        _assert_refused_without_trace(app, before, response, ("Not a valid choice", "Choose one of the listed options."))
        assert "coerce" not in _text(response)


BAD_AMOUNTS = [
    ("0", "The amount must be at least 0.01."),
    ("0.00", "The amount must be at least 0.01."),
    ("-5", "Enter the amount as digits"),
    ("1e3", "Enter the amount as digits"),
    ("NaN", "Enter the amount as digits"),
    ("Infinity", "Enter the amount as digits"),
    ("1.005", "Enter the amount as digits"),
    ("1,000", "Enter the amount as digits"),
    ("\uff15", "Enter the amount as digits"),
    ("", "Enter an amount."),
    ("1000000.01", "The amount must not exceed 1,000,000.00."),
]


@pytest.mark.parametrize("kind", ["internal", "external"])
def test_malformed_or_out_of_range_amounts_are_refused(client, app, logged_in_customer, checking, savings, foreign,
                                                       kind):
    """Are zero, negative, exponent, NaN, Infinity, three-decimal, separated, non-ASCII, empty and
    above-maximum amounts refused with a message, moving nothing?"""
    for amount, message in BAD_AMOUNTS:
        before = _state(app)
        if kind == "internal":
            response = _internal(client, checking, savings, amount)
        else:
            response = _external(client, checking, foreign.account_number, amount)

        _assert_refused_without_trace(app, before, response, message)


@pytest.mark.parametrize("app_overrides", [{"MAX_TRANSFER_AMOUNT": Decimal("50.00")}])
def test_maximum_transfer_amount_follows_configuration(client, app, logged_in_customer, checking, savings):
    """Does the MAX_TRANSFER_AMOUNT setting bound the amount (inclusive) instead of a constant?"""
    before = _state(app)
    response = _internal(client, checking, savings, "50.01")
    _assert_refused_without_trace(app, before, response, "The amount must not exceed 50.00.")

    assert _internal(client, checking, savings, "50.00").status_code == 302


def test_description_over_140_characters_is_refused(client, app, logged_in_customer, checking, savings):
    """Is a description of 141 characters refused (140 accepted)?"""
    before = _state(app)
    response = _internal(client, checking, savings, "1.00", "x" * 141)
    _assert_refused_without_trace(app, before, response, "Use at most 140 characters.")

    assert _internal(client, checking, savings, "1.00", "y" * 140).status_code == 302


@pytest.mark.parametrize("description, message", [
    ("\u200c\u200d", "Enter visible text: this field shows nothing."),
    ("\ufe0f \ufe0f", "Enter visible text: this field shows nothing."),
    ("rent\U000e0020\U000e0070\U000e0061\U000e0079", "Remove control characters from this field."),
    ("rent\U0001d173", "Remove control characters from this field."),
    ("Lunch \U0001f3f4\U000e0070\U000e0061\U000e0079\U000e007f", "Remove control characters from this field."),
])
def test_description_that_shows_nothing_or_hides_text_is_refused(client, app, logged_in_customer, checking, savings,
                                                                  description, message):
    """Is a description of joiners and variation selectors only (a blank that isn't empty), or one
    carrying tag characters (hidden ASCII) or invisible format controls, refused, moving nothing?"""
    before = _state(app)
    response = _internal(client, checking, savings, "1.00", description)
    _assert_refused_without_trace(app, before, response, message)


@pytest.mark.parametrize("description", ["Rent Kyiv/\u041a\u0438\u0457\u0432", "\u03b2-blocker refund",
                                         "SMS-\u043a\u043e\u0434 \U0001f3f4\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f"])
def test_description_with_words_of_several_alphabets_is_accepted(client, app, logged_in_customer, checking, savings,
                                                                 description):
    """Are words of different alphabets joined by punctuation ("Kyiv/Київ", "β-blocker"), and
    the flag of Wales, accepted in a description (the one-alphabet rule is per word)?"""
    assert _internal(client, checking, savings, "1.00", description).status_code == 302


def test_missing_or_malformed_idempotency_key_is_refused(client, app, logged_in_customer, checking, savings):
    """Is a transfer without a well-formed server-issued idempotency key refused with a message?"""
    for key, message in [
        ("", "The form is incomplete; reload the page and try again."),
        ("short", "The form is invalid; reload the page."),
        ("x" * 65, "The form is invalid; reload the page."),
        ("has spaces in it and is long enough to pass", "The form is invalid; reload the page."),
    ]:
        before = _state(app)
        response = _internal(client, checking, savings, "1.00", key=key)

        _assert_refused_without_trace(app, before, response, message)


def test_idempotency_key_field_absent_is_refused(client, app, logged_in_customer, checking, savings):
    """Is a POST that leaves the idempotency_key field out entirely refused?"""
    before = _state(app)

    response = client.post(INTERNAL, data={"source_account": checking.id, "target_account": savings.id,
                                           "amount": "1.00"})

    _assert_refused_without_trace(app, before, response, "The form is incomplete")


def test_malformed_external_account_number_is_a_form_error(client, app, logged_in_customer, checking):
    """Is a target account number that is not exactly 12 ASCII digits refused by the form?"""
    for number in ("", "12345678901", "1234567890123", "12345678901a", "\uff11" * 12):
        before = _state(app)
        response = _external(client, checking, number, "1.00")

        _assert_refused_without_trace(app, before, response, ("Enter the 12-digit account number.",
                                                              "An account number is exactly 12 digits."))


# ---------------------------------------------------------------------------------------------
# Idempotency
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["internal", "external"])
def test_replayed_idempotency_key_moves_money_once(client, app, logged_in_customer, checking, savings, foreign, kind):
    """Does resubmitting the same form (same key) move the money once and answer the replay with a
    redirect to the dashboard saying the transfer was already made?"""
    key = _form_key(client, INTERNAL)

    def submit():
        if kind == "internal":
            return _internal(client, checking, savings, "25.00", key=key)
        return _external(client, checking, foreign.account_number, "25.00", key=key)

    assert submit().status_code == 302
    after_first = _state(app)
    replay = submit()

    assert replay.status_code == 302 and replay.headers["Location"].endswith("/banking/dashboard")
    assert "This transfer was already made; it was not repeated." in _text(client.get("/banking/dashboard"))
    after_replay = _state(app)
    assert after_replay.balances == after_first.balances
    assert after_replay.balances[checking.id] == Decimal("75.00")
    assert after_replay.ledger_rows == after_first.ledger_rows
    assert after_replay.actions.count("TRANSFER_CREATED") == 1
    assert "TRANSFER_FAILED" not in _new_actions(after_first, after_replay)


# ---------------------------------------------------------------------------------------------
# Suspicious transfers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("app_overrides", [{"SUSPICIOUS_TRANSFER_THRESHOLD": Decimal("50.00")}])
def test_suspicious_transfer_is_logged_strictly_above_the_threshold(client, app, logged_in_customer, make_account,
                                                                    savings):
    """Is SUSPICIOUS_TRANSFER logged for a transfer one cent above the threshold, and not for one
    exactly at it?"""
    source = make_account(logged_in_customer, "200.00")
    assert _internal(client, source, savings, "50.00").status_code == 302
    assert _audit(app, "SUSPICIOUS_TRANSFER") == []

    assert _internal(client, source, savings, "50.01").status_code == 302

    [(actor, details)] = _audit(app, "SUSPICIOUS_TRANSFER")
    assert actor == logged_in_customer.id
    assert details["amount"] == "50.01" and details["threshold"] == "50.00"
    references = [d["reference"] for _, d in _audit(app, "TRANSFER_CREATED")]
    assert details["reference"] == references[-1]


def test_suspicious_transfer_uses_the_default_threshold(client, app, logged_in_customer, make_account, foreign):
    """With the default threshold (10,000.00), is 10,000.00 quiet and 10,000.01 flagged?"""
    rich = make_account(logged_in_customer, "30000.00")

    assert _external(client, rich, foreign.account_number, "10000.00").status_code == 302
    assert _audit(app, "SUSPICIOUS_TRANSFER") == []
    assert _external(client, rich, foreign.account_number, "10000.01").status_code == 302

    assert len(_audit(app, "SUSPICIOUS_TRANSFER")) == 1


# ---------------------------------------------------------------------------------------------
# The service's own guards (what the form can't see)
# ---------------------------------------------------------------------------------------------


def test_service_refuses_a_customer_acting_on_another_customers_accounts(app, customer, other_customer, make_account):
    """Does transfer_external refuse a customer who names another customer as owner or passes
    another customer's source id, logging TRANSFER_FAILED and moving nothing?"""
    own = make_account(customer, "100.00")
    theirs = make_account(other_customer, "100.00")
    before = _state(app)

    with app.app_context():
        actor = db.session.get(User, customer.id)
        with pytest.raises(AccountNotFoundError):
            services.transfer_external(actor, other_customer.id, theirs.id, own.account_number, Decimal("5.00"), "",
                                       services.new_idempotency_key(actor.id))
        with pytest.raises(AccountNotFoundError):
            services.transfer_external(actor, customer.id, theirs.id, own.account_number, Decimal("5.00"), "",
                                       services.new_idempotency_key(actor.id))

    after = _state(app)
    assert after.balances == before.balances and after.ledger_rows == before.ledger_rows
    assert _new_actions(before, after) == ["TRANSFER_FAILED", "TRANSFER_FAILED"]


def test_service_refuses_amount_above_maximum(app, customer, make_account):
    """Does the service itself enforce MAX_TRANSFER_AMOUNT (not only the form), logging TRANSFER_FAILED?"""
    rich = make_account(customer, "2000000.00")
    other = make_account(customer, "0.00")
    before = _state(app)

    with app.app_context():
        actor = db.session.get(User, customer.id)
        with pytest.raises(LimitExceededError):
            services.transfer_internal(actor, customer.id, rich.id, other.id, Decimal("1000000.01"), "",
                                       services.new_idempotency_key(actor.id))

    after = _state(app)
    assert after.balances == before.balances and _new_actions(before, after) == ["TRANSFER_FAILED"]


def test_service_requires_a_reason_from_an_admin(app, admin, customer, make_account):
    """Does the service itself refuse an admin's transfer without a description (not only the form)?"""
    from app.errors import ValidationRuleError

    source = make_account(customer, "100.00")
    target = make_account(customer, "0.00")
    before = _state(app)

    with app.app_context():
        actor = db.session.get(User, admin.id)
        with pytest.raises(ValidationRuleError):
            services.transfer_internal(actor, customer.id, source.id, target.id, Decimal("1.00"), "  ",
                                       services.new_idempotency_key(actor.id))

    after = _state(app)
    assert after.balances == before.balances and _new_actions(before, after) == ["TRANSFER_FAILED"]


# ---------------------------------------------------------------------------------------------
# Admin transfers and roles
# ---------------------------------------------------------------------------------------------


def test_admin_without_owner_gets_the_customer_picker(client, auth, admin, customer):
    """Does an admin opening a transfer form without ?owner_user_id= first choose the customer?"""
    auth.login(admin.email)

    for url in (INTERNAL, EXTERNAL):
        page = client.get(url)
        assert page.status_code == 200
        body = page.get_data(as_text=True)
        assert 'name="owner_user_id"' in body and f'value="{customer.id}"' in body
        assert 'name="idempotency_key"' not in body


def test_admin_transfer_lists_the_chosen_customers_accounts(client, auth, admin, customer, other_customer,
                                                            make_account):
    """Does ?owner_user_id= make the form list that customer's accounts only?"""
    mine = make_account(customer, "10.00")
    theirs = make_account(other_customer, "10.00")
    auth.login(admin.email)

    body = client.get(f"{INTERNAL}?owner_user_id={customer.id}").get_data(as_text=True)

    assert mine.account_number in body and theirs.account_number not in body


def test_admin_transfer_requires_a_description(client, app, auth, admin, customer, make_account):
    """Is an admin's transfer without a reason in the description refused, moving nothing?"""
    source = make_account(customer, "100.00")
    target = make_account(customer, "0.00")
    auth.login(admin.email)
    before = _state(app)

    response = _internal(client, source, target, "10.00", "   ", query=f"?owner_user_id={customer.id}")

    _assert_refused_without_trace(app, before, response, "As an administrator, give the reason for this transfer.")


def test_admin_internal_transfer_is_audited_under_the_admin(client, app, auth, admin, customer, make_account):
    """Does an admin's internal transfer for a customer move the money and log TRANSFER_CREATED
    with the admin as actor and the customer as both owners?"""
    source = make_account(customer, "100.00")
    target = make_account(customer, "0.00")
    auth.login(admin.email)

    response = _internal(client, source, target, "10.00", "Customer asked by phone",
                         query=f"?owner_user_id={customer.id}")

    assert response.status_code == 302
    assert _state(app).balances[target.id] == Decimal("10.00")
    [(actor, details)] = _audit(app, "TRANSFER_CREATED")
    assert actor == admin.id and details["acting_role"] == "admin"
    assert details["source_owner_id"] == customer.id and details["target_owner_id"] == customer.id


def test_admin_external_transfer_names_admin_and_both_owners(client, app, auth, admin, customer, other_customer,
                                                             make_account):
    """Does an admin's external transfer log the acting admin and both customers' ids?"""
    source = make_account(customer, "100.00")
    target = make_account(other_customer, "0.00")
    auth.login(admin.email)

    response = _external(client, source, target.account_number, "15.00", "Court order 42",
                         query=f"?owner_user_id={customer.id}")

    assert response.status_code == 302
    state = _state(app)
    assert state.balances[source.id] == Decimal("85.00") and state.balances[target.id] == Decimal("15.00")
    [(actor, details)] = _audit(app, "TRANSFER_CREATED")
    assert actor == admin.id
    assert details["source_owner_id"] == customer.id and details["target_owner_id"] == other_customer.id
    with app.app_context():
        initiators = set(db.session.scalars(select(Transaction.initiated_by_user_id)
                                            .where(Transaction.reference == details["reference"])))
    assert initiators == {admin.id}


BANK_MARK = "made by the bank"


def _marked_descriptions(page: str) -> list[str]:
    """The descriptions of a transactions page's rows that carry the "made by the bank" mark."""
    return [html.unescape(match) for match in
            re.findall(r"<td>([^<]*) <span class=\"badge text-bg-secondary\">" + BANK_MARK + "</span></td>", page)]


def test_transfers_an_admin_made_are_marked_for_the_customer_and_the_auditor(client, app, auth, admin, customer,
                                                                              other_customer, make_account,
                                                                              make_user):
    """Are the entries of transfers an admin made on a customer's accounts (both sides of an
    internal one, and the receiver's side of an external one) marked "made by the bank" on the
    customers' transactions pages and the auditor's, while the customers' own transfers and
    opening deposits are not, so a customer can tell the bank's moves from their own?"""
    source = make_account(customer, "100.00")
    target = make_account(customer, "0.00")
    theirs = make_account(other_customer, "50.00")
    auditor = make_user("auditor")
    auth.login(admin.email)
    assert _internal(client, source, target, "10.00", "Bank move inside",
                     query=f"?owner_user_id={customer.id}").status_code == 302
    assert _external(client, source, theirs.account_number, "5.00", "Bank move out",
                     query=f"?owner_user_id={customer.id}").status_code == 302
    auth.logout()
    auth.login(customer.email)
    assert _internal(client, source, target, "1.00", "My own move").status_code == 302
    auth.logout()
    auth.login(other_customer.email)
    assert _external(client, theirs, source.account_number, "2.00", "A friend pays").status_code == 302
    receiver_page = client.get("/banking/transactions").get_data(as_text=True)
    auth.logout()
    auth.login(customer.email)
    customer_page = client.get("/banking/transactions").get_data(as_text=True)
    auth.logout()
    auth.login(auditor.email)
    auditor_page = client.get("/audit/transactions").get_data(as_text=True)

    assert sorted(_marked_descriptions(customer_page)) == ["Bank move inside", "Bank move inside", "Bank move out"]
    assert "My own move" in customer_page and "A friend pays" in customer_page
    assert _marked_descriptions(receiver_page) == ["Bank move out"]
    assert sorted(_marked_descriptions(auditor_page)) == ["Bank move inside", "Bank move inside",
                                                         "Bank move out", "Bank move out"]
    assert "Opening deposit" in auditor_page


@pytest.mark.parametrize("url", [INTERNAL, EXTERNAL])
def test_admin_owner_that_is_not_a_customer_is_404(client, app, auth, admin, make_user, url):
    """Is ?owner_user_id= naming staff, the admin, nobody or junk a 404 on GET and POST, moving
    nothing?"""
    owners = {
        "support": make_user("support").id,
        "auditor": make_user("auditor").id,
        "another admin": make_user("admin").id,
        "the admin": admin.id,
        "missing": 999999,
        "text": "abc",
        "empty": "",
        "negative": "-1",
    }
    auth.login(admin.email)
    before = _state(app)

    for who, owner in owners.items():
        assert client.get(f"{url}?owner_user_id={owner}").status_code == 404, who
        response = client.post(f"{url}?owner_user_id={owner}", data={"amount": "1.00", "description": "x"})
        assert response.status_code == 404, who

    assert _state(app).ledger_rows == before.ledger_rows


def test_admin_can_move_money_out_of_a_deactivated_customers_account(client, app, auth, admin, make_user,
                                                                    other_customer, make_account):
    """A deactivated customer's active accounts still receive money (a transfer's credit checks
    the account, not its owner). Can an admin move it out, as from any customer's active account
    (DESIGN.md section 8), so that it is never held where nobody can move it; is the customer
    offered in the picker, marked as deactivated?"""
    gone = make_user("customer", is_active=False)
    source = make_account(gone, "100.00")
    target = make_account(other_customer, "0.00")
    auth.login(admin.email)

    picker = client.get(EXTERNAL).get_data(as_text=True)
    response = _external(client, source, target.account_number, "100.00", "Account closed: balance returned",
                         query=f"?owner_user_id={gone.id}")

    assert f'value="{gone.id}"' in picker and "(deactivated)" in picker
    assert response.status_code == 302
    state = _state(app)
    assert state.balances[source.id] == Decimal("0.00") and state.balances[target.id] == Decimal("100.00")
    [(actor, details)] = _audit(app, "TRANSFER_CREATED")
    assert actor == admin.id and details["source_owner_id"] == gone.id


def test_a_deactivated_customer_still_cannot_transfer_for_themself(client, app, make_user, make_account):
    """Does the deactivated customer themself stay signed out (their correct password fails), so
    only an admin moves their money?"""
    gone = make_user("customer", is_active=False)
    make_account(gone, "100.00")

    response = client.post("/auth/login", data={"email": gone.email, "password": factories.DEFAULT_PASSWORD})

    assert response.status_code == 400
    assert client.get(EXTERNAL).status_code == 302


@pytest.mark.parametrize("role", ["support", "auditor"])
@pytest.mark.parametrize("url", [INTERNAL, EXTERNAL])
def test_support_and_auditor_cannot_transfer(client, app, auth, make_user, customer, make_account, role, url):
    """Do support and auditor users get 403 and an ACCESS_DENIED row on both transfer forms?"""
    source = make_account(customer, "100.00")
    user = make_user(role)
    auth.login(user.email)
    before = _state(app)

    assert client.get(url).status_code == 403
    response = client.post(f"{url}?owner_user_id={customer.id}", data={
        "source_account": source.id, "target_account": source.id, "target_account_number": "123456789012",
        "amount": "1.00", "idempotency_key": "A" * 20 + "." + "B" * 43})
    assert response.status_code == 403

    after = _state(app)
    assert after.balances == before.balances
    assert _new_actions(before, after) == ["ACCESS_DENIED", "ACCESS_DENIED"]


def test_only_the_exact_issued_spelling_of_a_key_is_accepted(app, customer):
    """Is a key whose last character differs only in bits that base64 decoding ignores refused,
    so one issued key can't be submitted under four spellings?"""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    with app.app_context():
        key = services.new_idempotency_key(customer.id)
        twin = key[:-1] + alphabet[alphabet.index(key[-1]) ^ 1]

        assert services.is_issued_idempotency_key(customer.id, key)
        assert not services.is_issued_idempotency_key(customer.id, twin)


# --- the write-time checks themselves (each also guarded by an earlier check) -----------------


@pytest.mark.parametrize("kind", ["internal", "external"])
def test_replay_of_a_transfer_that_emptied_the_account_says_already_made(client, app, logged_in_customer,
                                                                         make_account, other_customer, kind):
    """Is a replayed form recognised as a replay before any balance check, so that after a
    transfer of the whole balance the second submission says "already made" (and logs no
    TRANSFER_FAILED) instead of "insufficient funds"?"""
    checking = make_account(logged_in_customer, "100.00")
    savings = make_account(logged_in_customer, "0.00", type="savings")
    foreign = make_account(other_customer, "0.00")
    key = _form_key(client, INTERNAL if kind == "internal" else EXTERNAL)

    def submit():
        if kind == "internal":
            return _internal(client, checking, savings, "100.00", key=key)
        return _external(client, checking, foreign.account_number, "100.00", key=key)

    assert submit().status_code == 302
    after_first = _state(app)
    replay = submit()
    assert replay.status_code == 302 and replay.headers["Location"].endswith("/banking/dashboard")
    assert "This transfer was already made; it was not repeated." in _text(client.get("/banking/dashboard"))
    assert "TRANSFER_FAILED" not in _new_actions(after_first, _state(app))


@pytest.mark.parametrize("kind", ["internal", "external"])
def test_target_frozen_between_the_check_and_the_credit_moves_nothing(app, customer, other_customer, make_account,
                                                                      monkeypatch, kind):
    """Does the credit's conditional UPDATE itself require an active target (DESIGN.md section 3),
    so an admin's freeze landing after the target was read still stops the transfer?"""
    source = make_account(customer, "100.00")
    target = make_account(customer if kind == "internal" else other_customer, "0.00", type="savings")
    original = services._resolve_target

    def resolve_then_freeze(*args, **kwargs):
        found = original(*args, **kwargs)
        db.session.execute(update(Account).where(Account.id == found.id).values(status="frozen"))
        return found

    monkeypatch.setattr(services, "_resolve_target", resolve_then_freeze)
    before = _state(app)
    with app.app_context():
        actor = db.session.get(User, customer.id)
        with pytest.raises((AccountNotActiveError, TargetUnavailableError)):
            if kind == "internal":
                services.transfer_internal(actor, customer.id, source.id, target.id, Decimal("10.00"), "",
                                           services.new_idempotency_key(actor.id))
            else:
                services.transfer_external(actor, customer.id, source.id, target.account_number, Decimal("10.00"),
                                           "", services.new_idempotency_key(actor.id))
    assert _state(app).balances == before.balances


def test_the_debit_update_itself_checks_the_owner(app, customer, other_customer, make_account):
    """Does the debit's conditional UPDATE carry `owner_id` (DESIGN.md section 3), refusing a
    debit of another customer's account even when called past every earlier check?"""
    theirs = make_account(other_customer, "100.00")
    with app.app_context():
        account = db.session.get(Account, theirs.id)
        with pytest.raises(AccountNotFoundError):
            services._debit(account, customer.id, Decimal("5.00"))
        db.session.rollback()
        assert db.session.scalar(select(Account.balance).where(Account.id == theirs.id)) == Decimal("100.00")


@pytest.mark.parametrize("missing_key", [None, ""])
def test_a_transfer_without_an_idempotency_key_is_refused_not_taken_for_a_replay(app, logged_in_customer,
                                                                               make_account, missing_key):
    """Is a transfer called without an idempotency key refused as invalid, with a TRANSFER_FAILED
    row, rather than matched (as a replay) with the customer's rows that carry no key — the
    opening deposits and the credits?"""
    from app.errors import DuplicateTransferError, ValidationRuleError

    source = make_account(logged_in_customer, "100.00")  # its opening deposit has no key
    target = make_account(logged_in_customer, "0.00")
    with app.app_context():
        actor = db.session.get(User, logged_in_customer.id)
        failures_before = db.session.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "TRANSFER_FAILED"))
        with pytest.raises(ValidationRuleError) as refused:
            services.transfer_internal(actor, logged_in_customer.id, source.id, target.id, Decimal("1.00"), "",
                                       missing_key)
        assert not isinstance(refused.value, DuplicateTransferError)
        failures = db.session.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "TRANSFER_FAILED"))
        balances = [db.session.get(Account, account.id).balance for account in (source, target)]
    assert failures == failures_before + 1
    assert balances == [Decimal("100.00"), Decimal("0.00")]
