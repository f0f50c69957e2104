"""SECURITY.md stays true: it has a row for every requirement the bank answers for, each row names
code and at least one test, and every test it names exists (a renamed or deleted test fails here,
so the document can't point at proofs that are gone)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = REPO / "SECURITY.md"
TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")

ASVS = ["2.1.1", "2.1.2", "2.1.7", "2.1.9", "2.2.1", "2.4.1", "2.5.4", "2.7", "2.8", "3.2.1", "3.3.1", "3.3.2",
        *[f"3.4.{n}" for n in range(1, 6)], "4.1.1", "4.1.3", "4.2.1", "4.2.2", "4.3.1", "5.1.3", "5.1.5", "5.2.1",
        "5.3.3", "5.3.4", "7.1.1", "7.2.1", "7.2.2", "7.3.3", "7.4.1", "8.2.1", *[f"11.1.{n}" for n in range(1, 7)],
        "14.2.1", *[f"14.4.{n}" for n in range(1, 8)]]
REQUIRED = ([f"ASVS {number}" for number in ASVS] + ["NIST SP 800-63B 5.1.1.2", "NIST SP 800-63B 5.2.2"]
            + [f"PCI DSS {number}" for number in ("8.2.8", "8.3.4", "8.3.6", "8.4.2", "10.2.1", "10.2.2", "10.3.2",
                                                  "10.3.4")])


def rows() -> dict[str, list[str]]:
    """Requirement (first cell) → the cells of its row, from the table of SECURITY.md."""
    table: dict[str, list[str]] = {}
    for line in DOCUMENT.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.replace("\\|", "¦").strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 5 and cells[0] != "requirement" and not cells[0].startswith("---"):
            table[cells[0]] = cells
    return table


def test_every_required_requirement_has_a_row_with_code_and_a_test():
    """Does each requirement listed in issue 6 have a row saying how, where, and with which test?"""
    table = rows()
    missing = [requirement for requirement in REQUIRED if requirement not in table]
    assert missing == []
    for requirement in REQUIRED:
        _, summary, how, code, tests = table[requirement]
        assert summary and how and code, requirement
        assert TEST_REFERENCE.search(tests), f"{requirement} names no test"


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_test_named_in_the_document_exists():
    """Does every `tests/...py::test_name` in SECURITY.md name a test function that exists?"""
    references = TEST_REFERENCE.findall(DOCUMENT.read_text(encoding="utf-8"))
    assert len(references) > 60
    absent = [f"{path}::{name}" for path, name in references
              if not (REPO / path).is_file() or name not in _test_functions(REPO / path)]
    assert absent == []


@pytest.mark.parametrize("reference", ["`tests/unit/test_money.py::test_no_such_test`",
                                       "`tests/no/such/file.py::test_parse_amount_rejects_none`"])
def test_the_existence_check_can_fail(reference):
    """Would a reference to a missing test or file be caught (so a pass means something)?"""
    path, name = TEST_REFERENCE.search(reference).groups()
    assert not (REPO / path).is_file() or name not in _test_functions(REPO / path)
