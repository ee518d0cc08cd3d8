"""Arming by a weekly schedule in a real time zone, and by hand until its next change; the clock is the test's."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from appliance.arming.control import ArmControl
from appliance.arming.schedule import WeeklySchedule
from appliance.config import ArmedSpan, ConfigError, load_config

BERLIN = ZoneInfo("Europe/Berlin")
NIGHTS = [ArmedSpan(days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"], start="22:00", end="06:30")]


def at(text: str) -> float:
    """Epoch seconds of a Berlin wall-clock time, ``2026-12-07 23:00``."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=BERLIN).timestamp()


class Clock:
    def __init__(self, when: str) -> None:
        self.now = at(when)

    def __call__(self) -> float:
        return self.now

    def set(self, when: str) -> None:
        self.now = at(when)


def test_an_overnight_span_arms_from_evening_to_morning() -> None:
    nights = WeeklySchedule(NIGHTS, BERLIN)
    assert not nights.armed(at("2026-12-07 21:59"))
    assert nights.armed(at("2026-12-07 22:00")) and nights.armed(at("2026-12-08 03:00"))
    assert not nights.armed(at("2026-12-08 06:30"))
    assert nights.next_change(at("2026-12-07 12:00")) == at("2026-12-07 22:00")
    assert nights.next_change(at("2026-12-07 23:00")) == at("2026-12-08 06:30")


def test_weekdays_choose_the_night_a_span_starts_on() -> None:
    friday = WeeklySchedule([ArmedSpan(days=["fri"], start="22:00", end="06:00")], BERLIN)
    assert friday.armed(at("2026-12-12 05:00"))  # Saturday morning: Friday's night
    assert not friday.armed(at("2026-12-13 05:00"))  # Sunday morning: Saturday has no span
    assert friday.next_change(at("2026-12-12 07:00")) == at("2026-12-18 22:00")  # a week on


def test_daylight_saving_nights_are_as_long_as_the_clocks_say() -> None:
    nights = WeeklySchedule(NIGHTS, BERLIN)
    # 2026-03-29: clocks go forward at 02:00; the night of the 28th is 7.5 h, not 8.5 h.
    start, end = at("2026-03-28 22:00"), nights.next_change(at("2026-03-28 22:30"))
    assert end == at("2026-03-29 06:30") and end - start == 7.5 * 3600
    # 2026-10-25: clocks go back at 03:00; that night is 9.5 h.
    start, end = at("2026-10-24 22:00"), nights.next_change(at("2026-10-24 22:30"))
    assert end == at("2026-10-25 06:30") and end - start == 9.5 * 3600
    # A span that starts in the hour that does not exist begins when the clocks get there.
    gap = WeeklySchedule([ArmedSpan(days=["sun"], start="02:30", end="05:00")], BERLIN)
    assert gap.armed(at("2026-03-29 03:45")) and not gap.armed(at("2026-03-29 01:59"))


def test_by_hand_until_the_schedules_next_change_and_kept_across_restarts(tmp_path: Path) -> None:
    clock = Clock("2026-12-07 23:00")
    heard = []
    arming = ArmControl(WeeklySchedule(NIGHTS, BERLIN), tmp_path / "arming.json", clock)
    arming.add_listener(heard.append)
    assert arming.poll().public() == {"armed": True, "reason": "schedule", "until": at("2026-12-08 06:30")}
    state = arming.set(False, source="page")
    assert (state.armed, state.reason, state.until) == (False, "manual until Tue 06:30", at("2026-12-08 06:30"))
    clock.set("2026-12-08 02:00")
    again = ArmControl(WeeklySchedule(NIGHTS, BERLIN), tmp_path / "arming.json", clock)  # a restart at night
    assert again.state().armed is False and again.state().reason.startswith("manual until")
    clock.set("2026-12-08 06:30")  # the schedule changes: its word again (disarmed by day)
    assert again.state() == arming.state()
    assert arming.poll().reason == "schedule" and not arming.state().armed
    clock.set("2026-12-08 22:00")
    assert arming.poll().armed
    assert [s.armed for s in heard] == [True, False, False, True]


def test_without_a_schedule_it_is_armed_until_disarmed(tmp_path: Path) -> None:
    arming = ArmControl(WeeklySchedule([], BERLIN), tmp_path / "arming.json", Clock("2026-12-07 12:00"))
    assert arming.state().public() == {"armed": True, "reason": "no schedule", "until": None}
    assert arming.set(False).public() == {"armed": False, "reason": "manual", "until": None}
    with pytest.raises(ValueError, match="'armed' must be true or false"):
        arming.set("no")  # type: ignore[arg-type]


def test_schedule_settings_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    for text, message in (("arming:\n  schedule: [{start: '25:00'}]\n", "expected HH:MM"),
                          ("arming:\n  schedule: [{days: [monday]}]\n", "arming.schedule.0.days"),
                          ("arming:\n  timezone: Mars/Olympus\n", "unknown time zone")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(path, environ={})
