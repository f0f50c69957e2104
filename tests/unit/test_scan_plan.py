"""scan/run_scan.py's plan for the wapiti runs: which customer the admin's transfer forms act for,
and the order the roles' runs start in (README "Outside scanners")."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from scan import run_scan

SEEDED = ("customer", "customer2", "edit_target", "transfer_owner", "support", "auditor", "admin")


def _seed_data() -> dict:
    """The shape scan/seed.py prints, with made-up ids and numbers."""
    return {
        "ticket_id": 7,
        "users": {name: {"id": number, "email": f"{name}@example.com", "role": "customer"}
                  for number, name in enumerate(SEEDED, start=1)},
        "accounts": {"edit_target": {"id": 4, "number": "100000000004"}},
    }


def test_the_admins_transfer_forms_act_for_a_customer_no_run_changes():
    """wapiti's blind SQL test compares pages: the admin's transfer pages show their owner's name
    and accounts, so the owner must be one no scanner signs in as and the admin doesn't edit."""
    data = _seed_data()
    owners = {int(parse_qs(urlsplit(url).query)["owner_user_id"][0])
              for url in run_scan.wapiti_start("admin", data) if url.startswith("/banking/transfer/")}
    assert owners == {data["users"]["transfer_owner"]["id"]}
    changed_by_a_run = {data["users"][name]["id"] for name in (*run_scan.SCAN_USERS, "edit_target")}
    assert not owners & changed_by_a_run


def test_support_starts_with_the_customer_run():
    """Support's crawl lists the tickets before the customer's run files hundreds more."""
    first = run_scan.WAPITI_ORDER[:3]
    assert "support" in first and "customer" in first
    assert sorted(run_scan.WAPITI_ORDER) == sorted(run_scan.WAPITI_ROLES)
