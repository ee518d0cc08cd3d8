"""A weekly schedule of armed spans, in a time zone: is it armed at a moment, and when does that change.

Spans are wall-clock times on weekdays ("22:00 to 06:30 on Fridays": Friday night into Saturday), so
they follow the clocks through daylight saving: on the night the clocks go back the span is an hour
longer, on the night they go forward an hour shorter, as a person means it. A time that does not exist
that night (02:30 when 02:00 jumps to 03:00) is taken as the moment the clocks reach it (zoneinfo's
``fold=0`` rule); one that happens twice means its first time. Everything is computed from epoch
seconds, so the answer never depends on the machine's own time zone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from appliance.config import WEEKDAYS, ArmedSpan


def system_zone() -> ZoneInfo:
    """The machine's IANA time zone: ``TZ``, else ``/etc/timezone``, else the ``/etc/localtime`` link; UTC
    when none names one (a Pi image's default)."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    try:
        link = os.readlink("/etc/localtime")
        candidates.append(link.split("zoneinfo/", 1)[1] if "zoneinfo/" in link else "")
    except OSError:
        pass
    for name in candidates:
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def _at(day: date, clock: str, zone: ZoneInfo) -> float:
    """Epoch seconds of the wall-clock ``clock`` (HH:MM, 24:00 = the next midnight) on ``day`` in ``zone``."""
    hours, minutes = (int(part) for part in clock.split(":"))
    if hours == 24:
        day, hours = day + timedelta(days=1), 0
    return datetime.combine(day, time(hours, minutes), tzinfo=zone).timestamp()


class WeeklySchedule:
    """The armed spans of a week; ``armed(t)`` and ``next_change(t)`` for epoch seconds ``t``."""

    def __init__(self, spans: Sequence[ArmedSpan], zone: ZoneInfo) -> None:
        self.spans = list(spans)
        self.zone = zone

    def __bool__(self) -> bool:
        return bool(self.spans)

    def _intervals(self, around: float) -> list[tuple[float, float]]:
        """The spans' (start, end) from two days before ``around`` to eight after, in epoch seconds."""
        today = datetime.fromtimestamp(around, self.zone).date()
        found = []
        for offset in range(-2, 9):
            day = today + timedelta(days=offset)
            weekday = WEEKDAYS[day.weekday()]
            for span in self.spans:
                if weekday not in span.days:
                    continue
                start = _at(day, span.start, self.zone)
                end_day = day if span.end > span.start or span.end == "24:00" else day + timedelta(days=1)
                end = _at(end_day, span.end, self.zone)
                if end > start:
                    found.append((start, end))
        return sorted(found)

    def armed(self, t: float) -> bool:
        return any(start <= t < end for start, end in self._intervals(t))

    def next_change(self, t: float) -> float | None:
        """The first moment after ``t`` at which ``armed`` differs from now; None if it never does."""
        now = self.armed(t)
        edges = sorted({edge for interval in self._intervals(t) for edge in interval if edge > t})
        return next((edge for edge in edges if self.armed(edge) != now), None)

    def local(self, t: float) -> datetime:
        return datetime.fromtimestamp(t, self.zone)
