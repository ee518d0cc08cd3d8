"""Test-only stand-in for ``pykms`` (kms++'s bindings), which picamera2 imports for its DRM preview.

Raspberry Pi OS installs kms++ from its own archive (python3-kms++); Debian, and so the test root,
has no such package, and the test machine has no display. The appliance never opens a preview, so
nothing here is ever used: any use fails loudly instead of pretending a screen exists.
"""

from __future__ import annotations

from typing import Any


class _NoDisplay:
    """Any attribute: a placeholder for the formats picamera2 lists at import; any call: an error."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, item: str) -> _NoDisplay:
        return _NoDisplay(f"{self._name}.{item}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"pykms.{self._name}: no DRM display on the test machine (a test-only stand-in)")


def __getattr__(name: str) -> _NoDisplay:
    return _NoDisplay(name)
