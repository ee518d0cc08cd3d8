"""Debounce and long-press timing of the button state machine, with injected times only."""

from __future__ import annotations

import random

from appliance.panel.button import ButtonAction, ButtonLogic

SHORT, LONG = ButtonAction.SHORT, ButtonAction.LONG


def run(logic: ButtonLogic, edges: list[tuple[bool, float]], until: float) -> list[ButtonAction]:
    """Feed edges in time order and tick at every deadline the logic asks for, as the watcher does."""
    actions: list[ButtonAction] = []
    level = logic.pressed
    pending = sorted(edges, key=lambda e: e[1])
    while True:
        deadline = logic.next_deadline()
        next_edge = pending[0][1] if pending else None
        if next_edge is not None and (deadline is None or next_edge < deadline):
            level, at = pending.pop(0)
            actions += logic.edge(level, at)
        elif deadline is not None and deadline <= until:
            actions += logic.tick(level, deadline)
        else:
            return actions


def test_a_clean_press_is_one_short_press() -> None:
    assert run(ButtonLogic(0.05, 3.0), [(True, 0.0), (False, 0.2)], until=10) == [SHORT]


def test_bounces_on_press_and_release_are_one_short_press() -> None:
    press = [(i % 2 == 0, 1.0 + i * 0.004) for i in range(7)]  # ends pressed
    release = [(i % 2 == 1, 1.3 + i * 0.003) for i in range(9)]  # ends released
    assert run(ButtonLogic(0.05, 3.0), press + release, until=10) == [SHORT]


def test_a_tap_shorter_than_the_window_is_still_seen() -> None:
    logic = ButtonLogic(0.05, 3.0)
    assert logic.edge(True, 0.0) == []
    assert logic.edge(False, 0.02) == []  # inside the window: looks like a bounce
    assert logic.next_deadline() == 0.05
    assert logic.tick(False, 0.05) == [SHORT]  # the settle tick reads the real level


def test_a_long_press_fires_at_the_hold_time_and_never_also_toggles() -> None:
    logic = ButtonLogic(0.05, 3.0)
    logic.edge(True, 0.0)
    assert logic.tick(True, 0.05) == []
    assert logic.next_deadline() == 3.0
    assert logic.tick(True, 3.0) == [LONG]
    assert logic.next_deadline() is None  # nothing more to wait for while held: no busy loop
    assert logic.edge(False, 5.0) == []
    assert logic.tick(False, 5.05) == []


def test_release_after_the_hold_time_without_a_tick_is_long() -> None:
    logic = ButtonLogic(0.05, 3.0)
    logic.edge(True, 0.0)
    assert logic.edge(False, 3.2) == [LONG]


def test_idle_logic_asks_for_no_ticks() -> None:
    logic = ButtonLogic(0.05, 3.0)
    assert logic.next_deadline() is None
    logic.edge(True, 0.0)
    logic.edge(False, 0.5)
    logic.tick(False, 0.55)
    assert logic.next_deadline() is None


def burst(rng: random.Random, start: float, ends_pressed: bool) -> list[tuple[bool, float]]:
    """An odd number of edges, at most ~40 ms in all, alternating and ending at the final level."""
    count = rng.randrange(1, 8, 2)
    at, edges = start, []
    for i in range(count):
        edges.append(((i % 2 == 0) == ends_pressed, at))
        at += rng.uniform(0.0005, 0.006)
    return edges


def test_random_bounce_bursts_are_exactly_one_action_per_press() -> None:
    rng = random.Random(42)
    for _ in range(300):
        debounce = 0.05
        hold = 3.0
        t = 0.0
        edges: list[tuple[bool, float]] = []
        expected = []
        for _press in range(rng.randint(1, 4)):
            t += rng.uniform(0.2, 1.0)
            edges += burst(rng, t, ends_pressed=True)
            duration = rng.choice([rng.uniform(0.1, 2.5), rng.uniform(3.2, 5.0)])
            t += duration
            edges += burst(rng, t, ends_pressed=False)
            expected.append(SHORT if duration < hold else LONG)
        assert run(ButtonLogic(debounce, hold), edges, until=t + 10) == expected
