"""docs/architecture.md matches the code: every path it names exists, every class and function it
names is defined or used in the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"


def code_text() -> str:
    return "\n".join(path.read_text() for folder in ("appliance", "tests", "bench") for path in
                     (ROOT / folder).rglob("*.py"))


def test_every_path_and_name_in_the_architecture_page_exists() -> None:
    text = DOC.read_text()
    code = code_text()
    names = {token.removesuffix("()") for token in re.findall(r"`([^`\n]+)`", text)}
    checked = 0
    missing = []
    for name in sorted(names):
        is_path = re.fullmatch(r"[\w./-]+\.(py|yaml|toml|sh|md)", name)
        if is_path or name.startswith(("appliance/", "tests/", "deploy/")):
            checked += 1
            if not (ROOT / name).exists():
                missing.append(name)
        elif re.fullmatch(r"[A-Z][A-Za-z0-9]+", name) or re.fullmatch(r"_?[a-z]+(_[a-z0-9]+)+", name):
            checked += 1
            if not re.search(rf"\b{re.escape(name)}\b", code):
                missing.append(name)
    assert checked > 40, "the page names fewer things than expected: is the parser still right?"
    assert missing == [], f"docs/architecture.md names what the code does not have: {missing}"
