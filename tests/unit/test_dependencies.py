"""Dependencies are pinned (OWASP ASVS 4.0.3 14.2.1, 14.2.4): every line of the requirements files
names one exact version, and every package those need is pinned too, so an install can't pick
up an unreviewed release of anything."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!-]+)")


def pins(path: Path) -> dict[str, str]:
    """name -> version of a requirements file, following `-r` includes; any other line fails."""
    found: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            found |= pins(path.parent / line[3:].strip())
            continue
        match = PIN.fullmatch(line)
        assert match, f"{path.name}: not pinned to one exact version: {line!r}"
        found[canonicalize_name(match["name"])] = match["version"]
    return found


@pytest.mark.parametrize("filename", ["requirements.txt", "requirements-dev.txt", "requirements-bench.txt"])
def test_vulnerable_components_every_requirement_is_an_exact_pin(filename):
    """Use of unpinned components (CWE-1357): is every requirement `name==version`?"""
    assert pins(REPO / filename)


@pytest.mark.parametrize("filename", ["requirements.txt", "requirements-dev.txt"])
def test_vulnerable_components_every_dependency_of_a_pin_is_pinned(filename):
    """Use of unpinned components (CWE-1357): does each pinned package's own runtime dependencies
    (as installed here, markers evaluated) appear pinned in the same set, at the installed version?"""
    pinned = pins(REPO / filename)
    unpinned = set()
    for name, version in pinned.items():
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} is pinned but not installed in this environment")
        assert distribution.version == version, f"{name}: installed {distribution.version}, pinned {version}"
        for text in distribution.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            if canonicalize_name(requirement.name) not in pinned:
                unpinned.add(f"{requirement.name} (needed by {name})")
    assert sorted(unpinned) == []
