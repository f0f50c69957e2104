"""Attack suite: cross-site request forgery (CWE-352) against every POST route, as every principal.

The routes come from the app's own url_map (a new POST route without a realistic form in
attack_support.REALISTIC_FORMS fails test_every_post_route_has_a_realistic_form); `<id>`
arguments are real objects (an active account to freeze, a frozen one to unfreeze, a customer to
promote, the victim's ticket). Each form is one the route would accept, were its csrf_token there.
DESIGN.md section 6: "CSRF first for every POST ... a POST without a valid token is 400 whoever
sends it".
"""

from __future__ import annotations

import pytest

from tests.integration.test_csrf import assert_csrf_refused
from tests.security.attack_support import (
    PRINCIPALS,
    REALISTIC_FORMS,
    assert_unchanged,
    audit_since,
    is_signed_in,
    last_audit_id,
    page_token,
    path_for,
    rules_for,
    sign_in,
    snapshot,
)

POST_ROUTES = rules_for("POST")


def test_every_post_route_has_a_realistic_form():
    """CSRF (CWE-352), coverage: does every POST route of the app's url_map have a realistic form
    to forge (and no form name a route that is gone)?"""
    assert sorted(REALISTIC_FORMS) == POST_ROUTES


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("rule", POST_ROUTES)
def test_post_without_token_is_refused_and_changes_nothing(world, sessions, rule, principal):
    """CSRF (CWE-352), missing token: when this principal's browser is made to POST this route's
    form (valid in every other respect) without a csrf_token, is the answer the plain CSRF 400
    page, with no row added or changed anywhere (audit log included) and the session as it was?"""
    client = sessions.client(principal)
    sessions.token(principal)  # the session holds a CSRF value, as a real visitor's would
    form = REALISTIC_FORMS[rule](world, world.user(principal))
    before, audit_head = snapshot(world.app), last_audit_id(world.app)

    response = client.post(path_for(rule, world), data=form)

    assert_csrf_refused(response)
    assert_unchanged(world.app, before, f"a POST to {rule} without a token by {principal}")
    assert audit_since(world.app, audit_head) == []
    assert is_signed_in(client) == (principal != "anonymous")


# rule -> (who sends it, fields changed so the form fails only after the CSRF check, expected
# status, path override): the control cases leave the shared world as it was.
CONTROLS = {
    "/auth/login": ("anonymous", {"email": "nobody-control@example.com"}, 400, None),
    "/auth/register": ("anonymous", {"phone": "not a phone"}, 400, None),
    "/auth/logout": ("victim", {}, 302, None),  # not a principal of the cases above, whose sessions are kept
    "/auth/profile": ("customer", {"phone": "not a phone"}, 400, None),
    "/auth/change-password": ("customer", {"confirm_password": "does not match"}, 400, None),
    "/banking/open-account": ("customer", {"type": "gold"}, 400, None),
    "/banking/transfer/internal": ("customer", {"amount": "0.00"}, 400, None),
    "/banking/transfer/external": ("customer", {"amount": "0.00"}, 400, None),
    "/banking/admin/users/<id:user_id>/edit": ("admin", {"phone": "not a phone"}, 400, None),
    # Freezing the frozen account and unfreezing the active one change nothing and say so.
    "/banking/admin/accounts/<id:account_id>/freeze":
        ("admin", {}, 302, lambda w: f"/banking/admin/accounts/{w.accounts['victim_frozen'].id}/freeze"),
    "/banking/admin/accounts/<id:account_id>/unfreeze":
        ("admin", {}, 302, lambda w: f"/banking/admin/accounts/{w.accounts['victim_checking'].id}/unfreeze"),
    "/support/create": ("customer", {"subject": ""}, 400, None),
    "/support/tickets/<id:ticket_id>": ("support", {"status": "closed-forever"}, 400, None),
    # No password step pending: back to the login page.
    "/auth/mfa": ("anonymous", {}, 302, None),
    # A code that is not the offered key's: a form error.
    "/auth/mfa/setup": ("customer", {"code": "000000"}, 400, None),
    # No second factor to turn off: to the enrolment page.
    "/auth/mfa/disable": ("customer", {}, 302, None),
}


@pytest.mark.parametrize("rule", POST_ROUTES)
def test_control_the_form_with_its_token_gets_past_the_check(world, rule):
    """CSRF (CWE-352), the control: does the same form with the session's own token get past
    the CSRF check to the route's own answer (a form error, or a redirect that changes nothing),
    so the refusals above are the missing token's doing and not a broken form?"""
    principal, changes, status, path = CONTROLS[rule]
    client = sign_in(world, principal)
    form = REALISTIC_FORMS[rule](world, world.user(principal)) | changes | {"csrf_token": page_token(client)}

    response = client.post(path(world) if path else path_for(rule, world), data=form)

    assert response.status_code == status
    assert "The form expired or was not sent by this site" not in response.get_data(as_text=True)
