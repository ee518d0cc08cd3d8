"""Push-button logic: debounce, short press and long press, as a pure state machine.

gpiozero's mock pins ignore ``bounce_time`` and real contacts bounce for a few milliseconds, so the
debounce is ours and is tested. The machine is fed raw edges with their times and asked to ``tick``
at ``next_deadline()``; it never reads a clock itself.

- An edge within ``debounce`` of the last accepted edge is a bounce and ignored. When the window
  ends, the caller ticks with the pin's real level, so a tap shorter than the window (whose release
  fell inside it) is still seen.
- A release before ``hold_time`` is a short press; holding for ``hold_time`` fires the long press at
  that moment, and its release is not also a short press.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ButtonAction(enum.Enum):
    SHORT = "short"
    LONG = "long"


@dataclass
class ButtonLogic:
    """Edges and times in, actions out.

    Deadlines are compared in the same form ``next_deadline`` computes them (``start + span``), so a
    tick at exactly the deadline always counts despite floating-point rounding.
    """

    debounce: float
    hold_time: float
    pressed: bool = False
    _accepted_at: float = float("-inf")
    _pressed_at: float = 0.0
    _held: bool = False
    _settle_pending: bool = False

    def edge(self, level: bool, now: float) -> list[ButtonAction]:
        """A raw edge: ``level`` True means pressed."""
        if now < self._accepted_at + self.debounce:
            return []  # a bounce: the settle tick at the window's end reads the real level
        return self._accept(level, now)

    def tick(self, level: bool, now: float) -> list[ButtonAction]:
        """Called at ``next_deadline()`` with the pin's current level."""
        actions: list[ButtonAction] = []
        if self._settle_pending and now >= self._accepted_at + self.debounce:
            self._settle_pending = False
            actions += self._accept(level, now)  # no-op unless a bounce hid the last real edge
        if self.pressed and not self._held and now >= self._pressed_at + self.hold_time:
            self._held = True
            actions.append(ButtonAction.LONG)
        return actions

    def next_deadline(self) -> float | None:
        """When the caller must tick next: the end of the debounce window, or the hold time."""
        deadlines = [self._accepted_at + self.debounce] if self._settle_pending else []
        if self.pressed and not self._held:
            deadlines.append(self._pressed_at + self.hold_time)
        return min(deadlines) if deadlines else None

    def _accept(self, level: bool, now: float) -> list[ButtonAction]:
        if level == self.pressed:
            return []
        self._accepted_at = now
        self._settle_pending = True
        self.pressed = level
        if level:
            self._pressed_at = now
            self._held = False
            return []
        if self._held:
            return []  # the end of a long press is not also a short press
        if now >= self._pressed_at + self.hold_time:
            self._held = True
            return [ButtonAction.LONG]  # released after the hold time before a tick fired it
        return [ButtonAction.SHORT]
