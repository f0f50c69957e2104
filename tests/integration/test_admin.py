"""The admin console under /banking/admin: users, roles, deactivation, accounts and freezes
(DESIGN.md sections 4, 5, 6, 8; spec section 8)."""

from __future__ import annotations

import html
import json
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from app.auth import services as identity
from app.banking import services as banking
from app.extensions import db
from app.models import Account, AuditLog, User
from tests import factories

USERS = "/banking/admin/users"
ACCOUNTS = "/banking/admin/accounts"


def _edit_url(user_id: int) -> str:
    return f"{USERS}/{user_id}/edit"


def _form(user, **changes) -> dict:
    data = {"full_name": user.full_name, "email": user.email, "phone": "+1 555 0100", "role": user.role,
            "is_active": "y"}
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def _user(app, user_id: int) -> User:
    with app.app_context():
        user = db.session.get(User, user_id)
        db.session.expunge(user)
        return user


def _audit(app, action: str) -> list[tuple[int | None, dict]]:
    with app.app_context():
        rows = db.session.execute(select(AuditLog.user_id, AuditLog.details).where(AuditLog.action == action)
                                  .order_by(AuditLog.id)).all()
    return [(user_id, json.loads(details)) for user_id, details in rows]


REFUSAL_MESSAGES = {
    "UserUpdateRefusedError": (identity.HOLDS_ACCOUNTS_MESSAGE,
                               "You cannot change your own role or deactivate yourself.",
                               "The last active administrator cannot be demoted or deactivated."),
    "DuplicateEmailError": (str(identity.DuplicateEmailError()),),
}


def _refused(user_id: int, reason: str, role: str, is_active: bool, message: str) -> dict:
    """The details of a refused USER_UPDATED row: an edit of `user_id` that asked for `role`
    and `is_active`, refused with the error named `reason` and its `message`."""
    assert message in REFUSAL_MESSAGES[reason]
    return {"user_id": user_id, "outcome": "refused", "reason": reason, "message": message,
            "requested": {"role": role, "is_active": is_active}}


def _status(app, account_id: int) -> str:
    with app.app_context():
        return db.session.scalar(select(Account.status).where(Account.id == account_id))


@pytest.fixture
def admin_client(app, admin):
    client = app.test_client()
    assert client.post("/auth/login", data={"email": admin.email, "password": factories.DEFAULT_PASSWORD}).status_code == 302
    return client


def _client_for(app, user):
    client = app.test_client()
    assert client.post("/auth/login", data={"email": user.email, "password": factories.DEFAULT_PASSWORD}).status_code == 302
    return client


# ---------------------------------------------------------------------------------------------
# Users list and edit
# ---------------------------------------------------------------------------------------------


def test_users_list_shows_every_user_with_role_state_and_edit_link(admin_client, admin, customer, make_user):
    """Does the users list show each user's email, role badge, active state and an edit link?"""
    inactive = make_user("support", is_active=False)

    body = admin_client.get(USERS).get_data(as_text=True)

    for user in (admin, customer, inactive):
        assert user.email in body and _edit_url(user.id) in body
    assert "deactivated" in body and ">support<" in body


def test_users_list_paginates_by_25_newest_first(admin_client, make_user):
    """Does the users list show 25 users a page, newest first, with rel=next, and an empty page
    past the end or for a malformed page number?"""
    made = [make_user("customer") for _ in range(26)]

    first = admin_client.get(USERS).get_data(as_text=True)
    second = admin_client.get(USERS + "?page=2").get_data(as_text=True)

    assert 'rel="next"' in first and made[-1].email in first
    assert first.index(made[-1].email) < first.index(made[-2].email)
    assert 'rel="prev"' in second
    for page in ("99", "abc", "-1"):
        response = admin_client.get(USERS, query_string={"page": page})
        assert response.status_code == 200 and "No users on this page." in response.get_data(as_text=True)


def test_admin_edits_details_and_logs_field_names_only(app, admin_client, admin, customer):
    """Does an edit of name, email and phone save them (email lower-cased), log USER_UPDATED with
    the field names (and, for the email, which identifies the user, the old and new address) but
    not the other values, only their MAC (contact_mac, for verify-audit), and redirect to the
    users list?"""
    response = admin_client.post(_edit_url(customer.id), data=_form(
        customer, full_name="Renamed Person", email="  New.Address@Example.com ", phone="+44 20 7946 0001"))

    assert response.status_code == 302 and response.headers["Location"].endswith(USERS)
    user = _user(app, customer.id)
    assert (user.full_name, user.email, user.phone) == ("Renamed Person", "new.address@example.com", "+44 20 7946 0001")
    [(actor, details)] = _audit(app, "USER_UPDATED")
    mac = details.pop("contact_mac")
    assert actor == admin.id and details == {
        "user_id": customer.id, "fields": ["full_name", "email", "phone"],
        "email": {"from": customer.email, "to": "new.address@example.com"},
    }
    with app.app_context():
        from app.auth.services import contact_mac
        assert mac == contact_mac(customer.id, "Renamed Person", "+44 20 7946 0001")
    assert "Renamed" not in json.dumps(details) and "7946" not in json.dumps(details)


def test_role_change_logs_old_and_new_role_and_ends_the_users_sessions(app, admin_client, admin, customer):
    """Does promoting a customer to support log ROLE_CHANGED (from, to, acting admin) and end the
    promoted user's open session at their next request?"""
    customer_client = _client_for(app, customer)

    response = admin_client.post(_edit_url(customer.id), data=_form(customer, role="support"))

    assert response.status_code == 302
    assert _user(app, customer.id).role == "support"
    [(actor, details)] = _audit(app, "ROLE_CHANGED")
    assert actor == admin.id and details == {"user_id": customer.id, "from": "customer", "to": "support"}
    assert customer_client.get("/banking/dashboard").headers["Location"].startswith("/auth/login")


@pytest.mark.parametrize("role", ["support", "auditor", "admin"])
def test_a_customer_holding_accounts_stays_a_customer(app, admin_client, admin, customer, make_account, role):
    """Is making a customer who holds an account staff refused (400, with the reason; role,
    audit log and sessions as before), so no account is left that neither its owner nor an admin
    can move money out of, and no staff member holds money of their own? The refusal is on
    record: a USER_UPDATED row with the outcome "refused" (PCI DSS 10.2.1.2, 10.2.2)."""
    make_account(customer, "141.50")
    customer_client = _client_for(app, customer)

    response = admin_client.post(_edit_url(customer.id), data=_form(customer, role=role))

    assert response.status_code == 400
    assert identity.HOLDS_ACCOUNTS_MESSAGE in html.unescape(response.get_data(as_text=True))
    assert _user(app, customer.id).role == "customer"
    assert _audit(app, "ROLE_CHANGED") == []
    assert _audit(app, "USER_UPDATED") == [(admin.id, _refused(customer.id, "UserUpdateRefusedError", role, True,
                                                                identity.HOLDS_ACCOUNTS_MESSAGE))]
    assert customer_client.get("/banking/dashboard").status_code == 200


def test_a_customer_whose_accounts_are_all_closed_can_become_staff(app, admin_client, customer, make_account):
    """Does only an account that is not closed keep a customer from a staff role?"""
    make_account(customer, "0.00", status="closed")

    response = admin_client.post(_edit_url(customer.id), data=_form(customer, role="support"))

    assert response.status_code == 302 and _user(app, customer.id).role == "support"


def test_no_account_is_opened_for_a_user_who_stopped_being_a_customer(app, customer):
    """When a customer becomes staff while their request to open an account is under way (the
    signed-in user read before the change), is the account refused inside the transaction, with
    nothing written?"""
    with app.app_context():
        stale = db.session.get(User, customer.id)
        db.session.expunge(stale)
        db.session.execute(update(User).where(User.id == customer.id).values(role="support"))
        db.session.commit()
        with pytest.raises(banking.AccountNotFoundError):
            banking.open_account(stale, "checking", Decimal("10.00"))
        assert db.session.scalar(select(Account.id).where(Account.owner_id == customer.id)) is None
    assert _audit(app, "ACCOUNT_CREATED") == []


def test_deactivation_ends_sessions_and_blocks_sign_in(app, admin_client, customer):
    """Does unchecking is_active deactivate the user, end their open session, and make their
    correct password fail with the generic message?"""
    customer_client = _client_for(app, customer)

    response = admin_client.post(_edit_url(customer.id), data=_form(customer, is_active=None))

    assert response.status_code == 302 and _user(app, customer.id).is_active is False
    assert customer_client.get("/banking/dashboard").headers["Location"].startswith("/auth/login")
    again = app.test_client().post("/auth/login", data={"email": customer.email, "password": factories.DEFAULT_PASSWORD})
    assert again.status_code == 400 and "Invalid email or password." in again.get_data(as_text=True)
    [(_, details)] = _audit(app, "USER_UPDATED")
    assert details["fields"] == ["is_active"] and details["is_active"] == {"from": True, "to": False}


def test_reactivation_is_logged_apart_from_deactivation(app, admin_client, customer):
    """Do a deactivation and the reactivation after it log USER_UPDATED rows an auditor can tell
    apart: the active state from and to (PCI DSS 10.2.2, the outcome of the event)?"""
    admin_client.post(_edit_url(customer.id), data=_form(customer, is_active=None))
    response = admin_client.post(_edit_url(customer.id), data=_form(customer, is_active="y"))

    assert response.status_code == 302 and _user(app, customer.id).is_active is True
    assert [details["is_active"] for _, details in _audit(app, "USER_UPDATED")] == [
        {"from": True, "to": False}, {"from": False, "to": True}]


def test_details_edit_does_not_end_the_users_sessions(app, admin_client, customer):
    """Does a change of name only leave the user's open session working (only role changes and
    deactivation rotate the session token)?"""
    customer_client = _client_for(app, customer)

    admin_client.post(_edit_url(customer.id), data=_form(customer, full_name="Another Name"))

    assert customer_client.get("/banking/dashboard").status_code == 200


@pytest.mark.parametrize("changes", [{"role": "customer"}, {"is_active": None}])
def test_admin_cannot_change_own_role_or_deactivate_self(app, admin_client, admin, make_user, changes):
    """Is an admin refused (400, nothing changed) when demoting or deactivating themself, even
    with another admin present?"""
    make_user("admin")

    response = admin_client.post(_edit_url(admin.id), data=_form(admin, **changes))

    assert response.status_code == 400
    assert "You cannot change your own role or deactivate yourself." in html.unescape(response.get_data(as_text=True))
    user = _user(app, admin.id)
    assert (user.role, user.is_active) == ("admin", True)
    assert _audit(app, "ROLE_CHANGED") == []
    requested = (changes.get("role", "admin"), "is_active" not in changes)
    assert _audit(app, "USER_UPDATED") == [(admin.id, _refused(admin.id, "UserUpdateRefusedError", *requested,
                                                                "You cannot change your own role or deactivate yourself."))]


@pytest.mark.parametrize("changes", [{"role": "auditor"}, {"is_active": False}])
def test_last_active_admin_cannot_be_demoted_or_deactivated(app, admin, make_user, changes):
    """When the acting admin was deactivated meanwhile (a concurrent edit), does update_user still
    refuse to demote or deactivate the only remaining active admin (DESIGN.md section 5)?"""
    acting = make_user("admin")
    with app.app_context():
        stale_actor = db.session.get(User, acting.id)
        db.session.expunge(stale_actor)
        db.session.execute(update(User).where(User.id == acting.id).values(is_active=False))
        db.session.commit()
        target = db.session.get(User, admin.id)
        fields = dict(full_name=target.full_name, email=target.email, phone=target.phone, role="admin",
                      is_active=True) | changes
        with pytest.raises(identity.UserUpdateRefusedError, match="last active administrator"):
            identity.update_user(stale_actor, admin.id, **fields)
    user = _user(app, admin.id)
    assert (user.role, user.is_active) == ("admin", True)
    assert _audit(app, "ROLE_CHANGED") == []
    requested = (changes.get("role", "admin"), changes.get("is_active", True))
    assert _audit(app, "USER_UPDATED") == [(acting.id, _refused(
        admin.id, "UserUpdateRefusedError", *requested, "The last active administrator cannot be demoted or deactivated."))]


def test_a_refused_email_change_is_on_record(app, admin_client, admin, customer, other_customer):
    """Is an edit refused because the email belongs to another user (in another case) answered
    400 with nothing changed, and on record as a refused USER_UPDATED naming the reason
    (PCI DSS 10.2.1.2: every action of an administrator; 10.2.2: with its outcome)?"""
    response = admin_client.post(_edit_url(customer.id), data=_form(customer, email=other_customer.email.upper()))

    assert response.status_code == 400
    assert _user(app, customer.id).email == customer.email
    assert _audit(app, "USER_UPDATED") == [(admin.id, _refused(customer.id, "DuplicateEmailError", "customer", True,
                                                                str(identity.DuplicateEmailError())))]


def test_another_admin_can_be_demoted_while_one_remains(app, admin_client, make_user):
    """Can an admin demote a second admin when the acting admin stays active?"""
    second = make_user("admin")

    response = admin_client.post(_edit_url(second.id), data=_form(second, role="auditor"))

    assert response.status_code == 302 and _user(app, second.id).role == "auditor"


def test_duplicate_email_is_a_form_error(app, admin_client, customer, other_customer):
    """Is taking another user's email (in any case) a form error with status 400, nothing saved?"""
    response = admin_client.post(_edit_url(customer.id), data=_form(customer, email=other_customer.email.upper()))

    assert response.status_code == 400
    assert "An account with this email already exists." in response.get_data(as_text=True)
    assert _user(app, customer.id).email == customer.email


@pytest.mark.parametrize("changes", [
    {"role": "superuser"}, {"role": ""}, {"full_name": "x" * 101}, {"full_name": ""},
    {"email": "not-an-email"}, {"email": "a" * 250 + "@example.com"}, {"phone": "12"}, {"phone": "call me"},
    {"email": "\u0430dmin@example.com"}, {"email": "admin@xn--exmple-4nf.org"},
])
def test_bad_edit_input_is_refused_without_change(app, admin_client, customer, changes):
    """Are unknown roles, oversized or empty names, malformed or non-ASCII (homograph) emails and
    phones a 400 that changes nothing (and never a 500)?"""
    response = admin_client.post(_edit_url(customer.id), data=_form(customer, **changes))

    assert response.status_code == 400
    user = _user(app, customer.id)
    assert (user.role, user.full_name, user.email) == ("customer", customer.full_name, customer.email)


def test_edit_of_a_missing_user_is_404(admin_client):
    """Do GET and POST on the edit page of a user id that does not exist answer 404?"""
    assert admin_client.get(_edit_url(999999)).status_code == 404
    assert admin_client.post(_edit_url(999999), data={"full_name": "x"}).status_code == 404


def test_a_missing_user_or_account_is_not_logged_as_a_refusal(app, admin):
    """Does an edit of a user id, or a freeze or unfreeze of an account id, that does not exist
    raise its not-found error (the 404) without a refused row: only refusals by a rule are on
    record, not ids that name nothing?"""
    from app.banking import services as banking

    with app.app_context():
        actor = db.session.get(User, admin.id)
        with pytest.raises(identity.UserNotFoundError):
            identity.update_user(actor, 999999, full_name="x", email="x@example.com", phone="+1 555 0100",
                                 role="customer", is_active=True)
        for change in (banking.freeze_account, banking.unfreeze_account):
            with pytest.raises(banking.AccountNotFoundError):
                change(actor, 999999)

    assert _audit(app, "USER_UPDATED") == []
    assert _audit(app, "ACCOUNT_FROZEN") == [] and _audit(app, "ACCOUNT_UNFROZEN") == []


def test_stored_names_are_escaped_on_admin_pages(app, admin_client, make_user):
    """Is a user's name containing HTML shown escaped on the users list and the edit page?"""
    evil = make_user("customer", full_name="<script>alert(1)</script>")

    for url in (USERS, _edit_url(evil.id)):
        body = admin_client.get(url).get_data(as_text=True)
        assert "<script>alert(1)</script>" not in body and "&lt;script&gt;" in body


# ---------------------------------------------------------------------------------------------
# Accounts list, freeze and unfreeze
# ---------------------------------------------------------------------------------------------


def test_accounts_list_shows_owner_status_balance_and_searches_by_number(admin_client, customer, make_account):
    """Does the accounts list show every account with owner and balance, and does the
    account_number search narrow it to matching numbers?"""
    one = make_account(customer, "1234.50")
    two = make_account(customer, "10.00", type="savings")

    everything = admin_client.get(ACCOUNTS).get_data(as_text=True)
    only_one = admin_client.get(ACCOUNTS, query_string={"account_number": one.account_number}).get_data(as_text=True)

    assert one.account_number in everything and two.account_number in everything
    assert "1,234.50" in everything and customer.email in everything
    assert one.account_number in only_one and two.account_number not in only_one


@pytest.mark.parametrize(("query", "field_message"), [
    ("12ab", "Use digits only."),
    ("1" * 13, "An account number has 12 digits; enter at most 12."),
    ("' OR 1=1 --", "Use digits only."),
])
def test_malformed_account_search_is_a_400_message(admin_client, query, field_message):
    """Is a search that is not up to 12 digits a 400 with a message saying what is wrong with
    it, never a 500?"""
    response = admin_client.get(ACCOUNTS, query_string={"account_number": query})

    body = response.get_data(as_text=True)
    assert response.status_code == 400 and "The search is not valid" in body
    assert field_message in body


def test_freeze_and_unfreeze_change_status_and_are_audited(app, admin_client, admin, customer, make_account):
    """Do freeze and unfreeze flip the status, log ACCOUNT_FROZEN / ACCOUNT_UNFROZEN with the
    acting admin, and redirect to the accounts list with a message?"""
    account = make_account(customer)

    frozen = admin_client.post(f"{ACCOUNTS}/{account.id}/freeze")
    assert frozen.status_code == 302 and frozen.headers["Location"].endswith(ACCOUNTS)
    assert _status(app, account.id) == "frozen"
    unfrozen = admin_client.post(f"{ACCOUNTS}/{account.id}/unfreeze")
    assert unfrozen.status_code == 302 and _status(app, account.id) == "active"

    [(actor, details)] = _audit(app, "ACCOUNT_FROZEN")
    assert actor == admin.id and details["account_id"] == account.id and details["owner_id"] == customer.id
    assert len(_audit(app, "ACCOUNT_UNFROZEN")) == 1


def test_freezing_a_frozen_account_changes_nothing_and_says_so(app, admin_client, customer, make_account):
    """Is freezing a frozen account (or unfreezing an active one) a no-op with a message and no
    audit row?"""
    frozen = make_account(customer, status="frozen")  # with the ACCOUNT_FROZEN row of its freeze
    active = make_account(customer)
    recorded = _audit(app, "ACCOUNT_FROZEN")

    admin_client.post(f"{ACCOUNTS}/{frozen.id}/freeze")
    page = admin_client.get(ACCOUNTS).get_data(as_text=True)
    assert "already frozen; nothing changed" in page
    admin_client.post(f"{ACCOUNTS}/{active.id}/unfreeze")
    assert "already active; nothing changed" in admin_client.get(ACCOUNTS).get_data(as_text=True)
    assert _audit(app, "ACCOUNT_FROZEN") == recorded and _audit(app, "ACCOUNT_UNFROZEN") == []


def test_closed_account_cannot_be_unfrozen(app, admin_client, admin, customer, make_account):
    """Is unfreezing (or freezing) a closed account refused with a message, status unchanged,
    and each refusal on record with its reason (PCI DSS 10.2.1.2, 10.2.2)?"""
    closed = make_account(customer, "0", status="closed")

    admin_client.post(f"{ACCOUNTS}/{closed.id}/unfreeze")
    admin_client.post(f"{ACCOUNTS}/{closed.id}/freeze")

    assert _status(app, closed.id) == "closed"
    assert "cannot be changed" in admin_client.get(ACCOUNTS).get_data(as_text=True)
    for action, status in (("ACCOUNT_UNFROZEN", "active"), ("ACCOUNT_FROZEN", "frozen")):
        assert _audit(app, action) == [(admin.id, {"account_id": closed.id, "outcome": "refused", "to": status,
                                                   "reason": f"A closed account cannot be changed to {status}."})]


def test_freeze_of_a_missing_account_is_404(admin_client):
    """Do freeze and unfreeze of an account id that does not exist answer 404?"""
    assert admin_client.post(f"{ACCOUNTS}/999999/freeze").status_code == 404
    assert admin_client.post(f"{ACCOUNTS}/999999/unfreeze").status_code == 404


def test_freeze_needs_post(admin_client, customer, make_account):
    """Is a GET on the freeze URL refused (405), so a link or image can't freeze an account?"""
    account = make_account(customer)

    assert admin_client.get(f"{ACCOUNTS}/{account.id}/freeze").status_code == 405


def test_frozen_account_refuses_transfers_until_unfrozen(app, admin_client, customer, make_account, client, auth):
    """While an account is frozen, is the owner's transfer from it refused (400, nothing moved),
    and does it work again after unfreezing?"""
    source = make_account(customer, "50.00")
    target = make_account(customer, "0", type="savings")
    auth.login(customer.email)
    admin_client.post(f"{ACCOUNTS}/{source.id}/freeze")

    def transfer():
        return client.post("/banking/transfer/internal", data={
            "source_account": source.id, "target_account": target.id, "amount": "5.00",
            "idempotency_key": factories.issued_key(app, customer.id)})

    refused = transfer()
    assert refused.status_code == 400 and "frozen" in refused.get_data(as_text=True)
    admin_client.post(f"{ACCOUNTS}/{source.id}/unfreeze")
    assert transfer().status_code == 302
    with app.app_context():
        assert db.session.get(Account, source.id).balance == Decimal("45.00")


def test_freeze_service_refuses_non_admins(app, customer, make_account):
    """Does freeze_account refuse an actor who is not an admin, even when called directly?"""
    account = make_account(customer)
    with app.app_context():
        actor = db.session.get(User, customer.id)
        with pytest.raises(Exception, match="Only administrators"):
            banking.freeze_account(actor, account.id)
    assert _status(app, account.id) == "active"


def test_email_that_normalizes_to_another_users_is_a_duplicate(app, admin_client, customer, other_customer):
    """Is an email that differs from another user's only by Unicode width or case in the domain
    (full-width `ｅ`) refused as a duplicate, so one mailbox never belongs to two users?"""
    local, domain = other_customer.email.split("@")
    lookalike = f"{local}@{domain.replace('e', chr(0xFF45), 1)}"

    response = admin_client.post(_edit_url(customer.id), data=_form(customer, email=lookalike))

    assert response.status_code == 400
    assert "An account with this email already exists." in response.get_data(as_text=True)
    assert _user(app, customer.id).email == customer.email


@pytest.mark.parametrize("path", ["/banking/admin/users/9223372036854775808/edit",
                                  "/banking/admin/users/0/edit", "/banking/admin/users/-1/edit"])
def test_ids_beyond_the_database_range_are_404(admin_client, path):
    """Is an id of 0, negative, or too large for the database a 404 rather than a 500?"""
    assert admin_client.get(path).status_code == 404


@pytest.mark.parametrize("spelling", ["\u0661", "\u0967", "\uff11", "01", "001", "1.0", " 1"],
                         ids=["arabic-indic", "devanagari", "fullwidth", "leading zero", "two zeros", "decimal", "space"])
def test_an_id_is_spelled_one_way_only(admin_client, admin, spelling):
    """Is a path id written only in plain ASCII digits without leading zeros (app/routing.py)?
    Other scripts' digits and zero-padded ids are other spellings of the same id: one URL per
    object, the same rule as the query-string ids (parse_id), a 404 for anything else."""
    assert admin.id == 1
    assert admin_client.get("/banking/admin/users/1/edit").status_code == 200
    assert admin_client.get(f"/banking/admin/users/{spelling}/edit").status_code == 404
    assert admin_client.post(f"{ACCOUNTS}/{spelling}/freeze").status_code == 404


@pytest.mark.parametrize("action", ["freeze", "unfreeze"])
def test_freeze_of_an_id_beyond_the_database_range_is_404(admin_client, action):
    """Is freezing account 2**63 (or a longer number) a 404 rather than a 500?"""
    assert admin_client.post(f"{ACCOUNTS}/9223372036854775808/{action}").status_code == 404
    assert admin_client.post(f"{ACCOUNTS}/{'9' * 30}/{action}").status_code == 404


def test_admin_transfer_reason_is_in_the_audit_row(app, admin_client, admin, customer, make_account):
    """Does the TRANSFER_CREATED row of an admin transfer carry the reason the admin gave?"""
    source = make_account(customer, "50.00")
    target = make_account(customer, "0.00", type="savings")

    response = admin_client.post(f"/banking/transfer/internal?owner_user_id={customer.id}", data={
        "source_account": source.id, "target_account": target.id, "amount": "5.00",
        "description": "Customer asked by phone, ticket 7", "idempotency_key": factories.issued_key(app, admin.id)})

    assert response.status_code == 302
    [(actor, details)] = _audit(app, "TRANSFER_CREATED")
    assert actor == admin.id and details["reason_given"] == "Customer asked by phone, ticket 7"


def test_admin_reason_is_in_the_audit_row_of_a_refused_form(app, admin_client, admin, customer, other_customer,
                                                            make_account):
    """When an admin's transfer form is refused by validation (a source account that is not the
    customer's), does its TRANSFER_FAILED row still carry the reason the admin gave?"""
    source = make_account(customer, "50.00")
    foreign = make_account(other_customer, "50.00")

    response = admin_client.post(f"/banking/transfer/external?owner_user_id={customer.id}", data={
        "source_account": foreign.id, "target_account_number": source.account_number, "amount": "5.00",
        "description": "Customer asked by phone, ticket 8", "idempotency_key": factories.issued_key(app, admin.id)})

    assert response.status_code == 400
    [(actor, details)] = _audit(app, "TRANSFER_FAILED")
    assert actor == admin.id and details["reason"] == "InvalidForm" and details["fields"] == ["source_account"]
    assert details["acting_role"] == "admin" and details["reason_given"] == "Customer asked by phone, ticket 8"
