"""The rule behind the markers: a missing tool skips a test with the reason, but fails it in CI."""

from __future__ import annotations

import pytest

from tests.conftest import NEEDS
from tests.helpers import require


def test_outside_ci_a_missing_tool_skips_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="mosquitto is not installed"):
        require(False, "mosquitto is not installed")


def test_in_ci_a_missing_tool_fails_and_says_which(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run this test, but: debootstrap is missing"):
        require(False, "debootstrap is missing")
    require(True, "present tools change nothing")


def test_every_registered_marker_says_what_it_needs(pytestconfig: pytest.Config) -> None:
    registered = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    expected = {"broker", "browser", "camera", "arm64", "deploy", "rtsp", "root", "recording", "detection", "notify",
                "mse"}
    assert expected <= registered
    assert set(NEEDS) == expected
