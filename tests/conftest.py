"""Shared fixtures: an appliance served for real on loopback, built per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from appliance.runtime import Appliance
from tests.helpers import make_config


@pytest.fixture
def start_appliance(tmp_path: Any) -> Iterator[Callable[..., Appliance]]:
    """Start an in-process appliance (real cheroot server on 127.0.0.1, free port); stopped after."""
    started: list[Appliance] = []

    def start(backend: Any = None, parts: dict[str, Any] | None = None, **sections: Any) -> Appliance:
        """``parts`` go to Appliance as keywords: monotonic, pin_factory, button_clock."""
        config = make_config(tmp_path, **sections)
        appliance = Appliance(config, backend=backend, **(parts or {}))
        appliance.start()
        started.append(appliance)
        return appliance

    yield start
    for appliance in reversed(started):
        appliance.stop()
