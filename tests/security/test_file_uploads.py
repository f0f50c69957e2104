"""Attack suite: a file sent where a form expects text (CWE-20, improper input validation),
against every field of every POST route of the app's url_map.

No form of the bank takes a file. Flask-WTF merges a multipart body's files into the form data,
so a file part named like a text field reached that field as a FileStorage, and its length
validator raised TypeError: a 500 where DESIGN.md section 6 wants a 400 with a clear message.
app/security.py's refuse_file_uploads answers such a body with the plain 400 page before the
form is read. CSRF is on, as in production, and every request carries a valid token, so that
without the refusal the form would be processed (and these tests would see it).
"""

from __future__ import annotations

import io

import pytest

from app.security import FILE_UPLOAD_REFUSED
from tests.integration.test_headers_and_errors import assert_plain_error_page, assert_security_headers
from tests.security.attack_support import (
    REALISTIC_FORMS,
    Sessions,
    allowed_principal,
    assert_unchanged,
    form_fields,
    is_signed_in,
    path_for,
    populated_app,
    rules_for,
    snapshot,
)

POST_ROUTES = rules_for("POST")
FILE_CASES = [(rule, field) for rule in POST_ROUTES for field in form_fields(rule)]


@pytest.fixture(scope="module")
def world(test_backend):
    with populated_app(test_backend, WTF_CSRF_ENABLED=True) as populated:
        yield populated


@pytest.fixture(scope="module")
def sessions(world):
    return Sessions(world)


def _file() -> tuple[io.BytesIO, str, str]:
    return io.BytesIO(b"1000.00"), "amount.txt", "text/plain"


def test_every_post_route_has_fields_to_try():
    """Do the cases below cover the routes (a form_fields that found nothing would leave a
    route untested)?"""
    assert POST_ROUTES and all(form_fields(rule) for rule in POST_ROUTES if rule in REALISTIC_FORMS)


@pytest.mark.parametrize(("rule", "field"), FILE_CASES)
def test_a_file_in_place_of_a_text_field_is_a_plain_400_that_changes_nothing(world, sessions, rule, field):
    """Is the route's realistic form, a valid token included, with `field` sent as a file part,
    refused with the plain 400 page, the message and the security headers, changing nothing
    and leaving the session as it was (no 500)?"""
    principal = allowed_principal(rule)
    client = sessions.client(principal)
    form = REALISTIC_FORMS[rule](world, world.user(principal)) | {"csrf_token": sessions.token(principal)}
    form[field] = _file()
    before = snapshot(world.app)

    response = client.post(path_for(rule, world), data=form, content_type="multipart/form-data")

    assert_plain_error_page(response, 400)
    assert FILE_UPLOAD_REFUSED in response.get_data(as_text=True)
    assert_security_headers(response)
    assert_unchanged(world.app, before, f"a file sent as {field} to {rule}")
    assert is_signed_in(client) == (principal != "anonymous")


def test_a_file_under_a_name_no_form_has_is_refused_too(world, sessions):
    """Is a file part under a name no field has (which no validator would ever look at)
    refused as well? No route takes files, so none is read at all."""
    client = sessions.client("customer")
    form = REALISTIC_FORMS["/banking/transfer/external"](world, world.user("customer"))
    form |= {"csrf_token": sessions.token("customer"), "attachment": _file()}
    before = snapshot(world.app)

    response = client.post(path_for("/banking/transfer/external", world), data=form,
                           content_type="multipart/form-data")

    assert_plain_error_page(response, 400)
    assert FILE_UPLOAD_REFUSED in response.get_data(as_text=True)
    assert_unchanged(world.app, before, "a file part beside a transfer form")


def test_a_multipart_form_of_text_fields_is_still_processed(world, sessions):
    """Is a multipart body with text parts only (a browser may send any form that way) still
    processed as the form it is, the transfer made: the refusal is about files, not the
    encoding?"""
    client = sessions.client("customer")
    form = REALISTIC_FORMS["/banking/transfer/external"](world, world.user("customer"))
    form |= {"csrf_token": sessions.token("customer")}

    response = client.post(path_for("/banking/transfer/external", world), data=form,
                           content_type="multipart/form-data")

    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].endswith("/banking/dashboard")
