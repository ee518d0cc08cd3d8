"""The documents stay true: links resolve, named paths exist, and the reference pages list what the
code has (every route, every MQTT topic, every configuration key), so nothing in them goes stale."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from appliance.config import MqttSettings
from appliance.mqtt.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
REPO_PATH = re.compile(r"`((?:appliance|tests|bench|deploy|scripts|ansible|requirements|docs)/[^`\s<]*)`")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def outside_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_every_link_resolves(doc: Path) -> None:
    broken = []
    for target in LINK.findall(outside_code(doc.read_text())):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:: nothing here may depend on them
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            broken.append(target)
    assert broken == [], f"{doc.name} links to what is not there: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_every_path_named_exists(doc: Path) -> None:
    missing = []
    for name in REPO_PATH.findall(doc.read_text()):
        name = name.rstrip(".,:;)")
        if not (list(ROOT.glob(name)) if "*" in name else (ROOT / name).exists()):
            missing.append(name)
    assert missing == [], f"{doc.name} names paths that do not exist: {missing}"


def test_the_readme_is_a_two_minute_read_with_both_commands_on_top() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    top = "\n".join(text.splitlines()[:12])
    assert "bash scripts/run.sh" in top and "bash scripts/test.sh" in top
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    linked = set(LINK.findall(text))
    assert {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")} <= linked, "every page is linked"


def test_the_configuration_page_lists_every_key_as_the_example_file_explains_it() -> None:
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "scripts" / "config_reference.py")
    assert spec and spec.loader
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    page = reference.PAGE.read_text()
    assert page == reference.render(page, reference.EXAMPLE.read_text()), \
        "docs/configuration.md is stale: run python scripts/config_reference.py"
    keys = [key for key, _, _ in reference.rows(reference.EXAMPLE.read_text())]
    assert len(keys) > 100 and "events.clip.pre_seconds" in keys and "server.auth.username" in keys


def routes() -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / "appliance" / "web").glob("*.py"):
        text = path.read_text()
        assert "@bp.route(" not in text, "the parser below reads @bp.get/put/post/delete only"
        for method, rule in re.findall(r"@bp\.(get|put|post|delete|patch)\(\"([^\"]+)\"", text):
            found.add((method.upper(), re.sub(r"<[^>]+>", "<>", rule)))
    return found


def test_the_http_page_lists_every_route_and_only_routes() -> None:
    text = (ROOT / "docs" / "http-api.md").read_text()
    documented = {(method, re.sub(r"<[^>]+>", "<>", path.split("?")[0]))
                  for method, path in re.findall(r"`(GET|PUT|POST|DELETE|PATCH) (/[^`\s]*)`", text)}
    code = routes()
    assert len(code) > 15
    assert code - documented == set(), "routes missing from docs/http-api.md"
    assert documented - code == set(), "docs/http-api.md names routes the code does not have"


def test_the_mqtt_page_lists_every_topic() -> None:
    text = (ROOT / "docs" / "mqtt.md").read_text()
    topics = Topics.from_settings(MqttSettings(host="broker"), hostname="cam")
    names = [name for name, value in vars(Topics).items() if isinstance(value, property)]
    assert len(names) > 15
    missing = [name for name in names
               if f"`{getattr(topics, name).removeprefix(topics.prefix + '/')}`" not in text
               and f"`{getattr(topics, name)}`" not in text.replace("homeassistant", topics.discovery_prefix)]
    assert missing == [], f"docs/mqtt.md does not name the topics of {missing}"
