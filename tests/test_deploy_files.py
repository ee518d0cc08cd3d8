"""The shipped config example and unit file stay true to the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from appliance.config import AppConfig, load_config

ROOT = Path(__file__).resolve().parent.parent


def keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    found = set()
    for name, field in model.model_fields.items():
        found.add(prefix + name)
        annotation: Any = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found |= keys(annotation, f"{prefix}{name}.")
    return found


def flatten(tree: dict[str, Any], prefix: str = "", sections: set[str] | None = None) -> set[str]:
    """Dotted keys of a YAML tree, descending only into config sections (not into maps such as
    ``detection.objects``, whose keys are labels)."""
    sections = keys(AppConfig) if sections is None else sections
    found = set()
    for name, value in tree.items():
        found.add(prefix + name)
        if isinstance(value, dict) and any(key.startswith(f"{prefix}{name}.") for key in sections):
            found |= flatten(value, f"{prefix}{name}.", sections)
    return found


def test_config_example_lists_every_setting_with_its_default() -> None:
    path = ROOT / "deploy" / "config.example.yaml"
    assert flatten(yaml.safe_load(path.read_text())) == keys(AppConfig)
    assert load_config(path, environ={}) == AppConfig()


def test_unit_runs_what_the_role_installs() -> None:
    unit = (ROOT / "deploy" / "appliance.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "Restart=on-failure" in unit
    assert "ExecStart=/opt/appliance/venv/bin/python -m appliance --config /etc/appliance/config.yaml" in unit
    assert "StateDirectory=appliance" in unit
    # What one client, a leak or a flood may cost, and a writable working directory (lgpio's pipe).
    for line in ("LimitNOFILE=", "MemoryMax=", "TasksMax=", "WorkingDirectory=%S/appliance", "MALLOC_ARENA_MAX=2"):
        assert line in unit, line


def test_the_role_copies_every_file_of_the_package() -> None:
    role_vars = yaml.safe_load((ROOT / "ansible/roles/appliance/vars/main.yml").read_text())
    copied = {path for pattern in role_vars["appliance_package_globs"] for path in ROOT.glob(pattern)
              if path.is_file()}
    shipped = {path for path in (ROOT / "appliance").rglob("*")
               if path.is_file() and "__pycache__" not in path.parts}
    assert shipped - copied == set()
    # Each pattern globs one folder only, as Ansible's fileglob lookup does.
    assert all("*" not in pattern.rsplit("/", 1)[0] for pattern in role_vars["appliance_package_globs"])
