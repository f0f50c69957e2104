"""Attack suite: bodies that are not web forms of text fields (CWE-20, improper input
validation): a file where a form expects text, and JSON, against every field of every POST route
of the app's url_map.

No form of the bank takes a file or JSON. Flask-WTF fills a form from whatever the body holds:
from a multipart body's files beside its fields, and from `request.get_json()` for a JSON body
(the CSRF token may then come in the X-CSRFToken header). A file, a number or a list where a
field expects text reached its validators, and the length check raised TypeError: a 500 where
DESIGN.md section 6 wants a refusal. app/security.py's refuse_bodies_that_are_not_forms answers
such a body with a plain page before the form is read: 400 for a file, 415 for JSON (OWASP ASVS
4.0.3 13.1.5). CSRF is on, as in production, and every request carries a valid token, so that
without the refusal the form would be processed (and these tests would see it).
"""

from __future__ import annotations

import io
import json

import pytest

from app.security import FILE_UPLOAD_REFUSED, NOT_A_FORM_REFUSED
from tests.integration.test_headers_and_errors import assert_plain_error_page, assert_security_headers
from tests.security.attack_support import (
    REALISTIC_FORMS,
    allowed_principal,
    assert_unchanged,
    form_fields,
    is_signed_in,
    path_for,
    rules_for,
    snapshot,
)

POST_ROUTES = rules_for("POST")
FILE_CASES = [(rule, field) for rule in POST_ROUTES for field in form_fields(rule)]


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


def _customer_transfer_as_multipart(world, sessions, **fields):
    """POST the customer's realistic external transfer form, its valid token included and
    `fields` added or replaced, as a multipart body; returns the response."""
    form = REALISTIC_FORMS["/banking/transfer/external"](world, world.user("customer"))
    form |= {"csrf_token": sessions.token("customer")} | fields
    return sessions.client("customer").post(path_for("/banking/transfer/external", world), data=form,
                                            content_type="multipart/form-data")


def test_a_file_under_a_name_no_form_has_is_refused_too(world, sessions):
    """Is a file part under a name no field has (which no validator would ever look at)
    refused as well? No route takes files, so none is read at all."""
    before = snapshot(world.app)

    response = _customer_transfer_as_multipart(world, sessions, attachment=_file())

    assert_plain_error_page(response, 400)
    assert FILE_UPLOAD_REFUSED in response.get_data(as_text=True)
    assert_unchanged(world.app, before, "a file part beside a transfer form")


def test_a_multipart_form_of_text_fields_is_still_processed(world, sessions):
    """Is a multipart body with text parts only (a browser may send any form that way) still
    processed as the form it is, the transfer made: the refusal is about files, not the
    encoding?"""
    response = _customer_transfer_as_multipart(world, sessions)

    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].endswith("/banking/dashboard")


def test_a_file_sent_as_the_csrf_token_is_refused_before_the_csrf_check(world, sessions):
    """Is a file part named csrf_token answered with the upload refusal, not the CSRF failure:
    the refusal runs before anything, the CSRF check included, reads the form?"""
    before = snapshot(world.app)

    response = _customer_transfer_as_multipart(world, sessions, csrf_token=_file())

    assert_plain_error_page(response, 400)
    assert FILE_UPLOAD_REFUSED in response.get_data(as_text=True)
    assert_unchanged(world.app, before, "a file sent as the CSRF token")


JSON_VALUES = {"a number": 123, "a list": ["a"], "an object": {"a": 1}, "null": None}


@pytest.mark.parametrize("rule", POST_ROUTES)
@pytest.mark.parametrize("kind", list(JSON_VALUES))
def test_a_json_body_is_a_plain_415_that_changes_nothing(world, sessions, rule, kind):
    """Is the route's realistic form sent as JSON, every field's value replaced by `kind`, with
    a valid token in the X-CSRFToken header (which CSRFProtect accepts), refused with the plain
    415 page and the message, changing nothing and leaving the session as it was (no 500)?"""
    principal = allowed_principal(rule)
    client = sessions.client(principal)
    form = {name: JSON_VALUES[kind] for name in REALISTIC_FORMS[rule](world, world.user(principal))}
    before = snapshot(world.app)

    response = client.post(path_for(rule, world), data=json.dumps(form), content_type="application/json",
                           headers={"X-CSRFToken": sessions.token(principal)})

    assert_plain_error_page(response, 415)
    assert NOT_A_FORM_REFUSED in response.get_data(as_text=True)
    assert_security_headers(response)
    assert_unchanged(world.app, before, f"a JSON body of {kind}s to {rule}")
    assert is_signed_in(client) == (principal != "anonymous")


@pytest.mark.parametrize("body", ["[1, 2]", '"text"', "not json at all"])
def test_any_json_body_is_refused_even_one_that_is_no_object(world, sessions, body):
    """Is a JSON body that is no object (a list, a string) or no JSON at all refused the same
    way on the sign-in form, rather than reaching Flask-WTF's get_json?"""
    client = sessions.client("anonymous")

    response = client.post("/auth/login", data=body, content_type="application/json",
                           headers={"X-CSRFToken": sessions.token("anonymous")})

    assert_plain_error_page(response, 415)


def test_a_post_without_a_body_is_still_answered_as_an_empty_form(world, sessions):
    """Is a POST with no Content-Type and no body left to the form, which finds nothing in it
    (here: the CSRF check's plain 400), rather than refused as a non-form body?"""
    client = sessions.client("customer")

    response = client.post(path_for("/banking/transfer/external", world))

    assert response.status_code == 400
    assert NOT_A_FORM_REFUSED not in response.get_data(as_text=True)
