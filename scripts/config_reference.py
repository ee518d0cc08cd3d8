"""Write the key reference of docs/configuration.md from deploy/config.example.yaml.

The example file is the one place each key is explained, and tests/test_deploy_files.py holds it to
the code (every key of ``AppConfig``, each with its default). This turns it into the table of the
configuration page, between the two marker lines; tests/test_docs.py fails when the page is not what
this script would write. Usage: ``python scripts/config_reference.py`` (rewrites the page).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "config.example.yaml"
PAGE = ROOT / "docs" / "configuration.md"
BEGIN = "<!-- keys: written by scripts/config_reference.py from deploy/config.example.yaml -->"
END = "<!-- end of keys -->"

KEY = re.compile(r"^(?P<indent> *)(?P<key>[a-z_][a-z0-9_]*):(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$")
MORE = re.compile(r"^ +#\s?(?P<comment>.*)$")


def rows(example: str) -> list[tuple[str, str, str]]:
    """(dotted key, default as written, explanation) for every key, in the file's order."""
    found: list[list[str]] = []
    path: list[tuple[int, str]] = []  # (indent, key) of the sections above the current line
    for line in example.splitlines():
        if match := KEY.match(line):
            indent = len(match["indent"])
            while path and path[-1][0] >= indent:
                path.pop()
            dotted = ".".join([key for _, key in path] + [match["key"]])
            value = match["value"].strip()
            found.append([dotted, value, (match["comment"] or "").strip()])
            if not value:  # a section: the keys indented below it are its own
                path.append((indent, match["key"]))
        elif found and (more := MORE.match(line)) and not line.startswith("#"):
            found[-1][2] = f"{found[-1][2]} {more['comment'].strip()}".strip()
    return [(key, value, comment) for key, value, comment in found]


def table(example: str) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| key | default | what it is |", "| --- | --- | --- |"]
    for key, value, comment in rows(example):
        default = f"`{cell(value)}`" if value else "*(section)*"
        lines.append(f"| `{key}` | {default} | {cell(comment)} |")
    return "\n".join(lines)


def render(page: str, example: str) -> str:
    """The page with its key table written anew from the example file."""
    head, found, rest = page.partition(BEGIN + "\n")
    if not found or END not in rest:
        raise ValueError(f"{PAGE.name} lacks the marker lines {BEGIN!r} ... {END!r}")
    return head + BEGIN + "\n" + table(example) + "\n" + END + rest.partition(END)[2]


def main() -> int:
    PAGE.write_text(render(PAGE.read_text(), EXAMPLE.read_text()))
    print(f"wrote the key table of {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
