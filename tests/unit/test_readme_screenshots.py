"""The README's screenshots are the browser suite's (`make screenshots` writes them into
docs/screenshots/): every picture the README shows exists, is a 1280 x 800 PNG, and is one the
journeys take, so a renamed page or a stale link is noticed."""

from __future__ import annotations

import re
import struct
from pathlib import Path

from tests.e2e.browser.pages import HEIGHT, README_SHOTS, WIDE

REPO = Path(__file__).resolve().parents[2]
IMAGE = re.compile(r"!\[[^\]]+\]\(([^)\s]+)\)")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_readme_shows_each_screenshot_the_browser_journeys_take():
    """Does the README show exactly the README screenshots, each a 1280 x 800 PNG in
    docs/screenshots/?"""
    images = IMAGE.findall((REPO / "README.md").read_text(encoding="utf-8"))

    assert sorted(images) == sorted(f"docs/screenshots/{name}.png" for name in README_SHOTS)
    for image in images:
        header = (REPO / image).read_bytes()[:24]
        assert header[:8] == PNG_SIGNATURE, image
        assert struct.unpack(">II", header[16:24]) == (WIDE, HEIGHT), image
