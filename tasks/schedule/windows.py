"""Sending windows: when a message may go out, in the subscriber's local time."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from models.errors import NoWindow
from models.settings import get_settings

DEFAULT_WINDOWS = ("09:00-20:00",)

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*-\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


@dataclass(frozen=True)
class Window:
    """A daily time range [start, end) in local time; end 24:00 is written as None."""

    start: time
    end: time | None

    def __str__(self) -> str:
        end = "24:00" if self.end is None else _clock(self.end)
        return f"{_clock(self.start)}-{end}"


def _clock(moment: time) -> str:
    return moment.strftime("%H:%M:%S" if moment.second else "%H:%M")


def parse_windows(texts: Sequence[str]) -> list[Window]:
    """Parse "HH:MM-HH:MM" ranges (seconds optional, end may be 24:00); they must not overlap."""
    windows = []
    for text in texts:
        match = _WINDOW.match(text)
        if not match:
            raise ValueError(f"window {text!r} is not HH:MM-HH:MM (for example 09:00-20:00)")
        h1, m1, s1, h2, m2, s2 = (int(g) if g else 0 for g in match.groups())
        if h1 > 23 or m1 > 59 or s1 > 59 or m2 > 59 or s2 > 59 or h2 > 24 or (h2 == 24 and (m2 or s2)):
            raise ValueError(f"window {text!r} has a time outside 00:00-24:00")
        start = time(h1, m1, s1)
        end = None if h2 == 24 else time(h2, m2, s2)
        if end is not None and end <= start:
            raise ValueError(f"window {text!r} ends before it starts; a window must end after its start on the same day")
        windows.append(Window(start, end))
    windows.sort(key=lambda w: w.start)
    for earlier, later in zip(windows, windows[1:]):
        if earlier.end is None or earlier.end > later.start:
            raise ValueError(f"windows {earlier} and {later} overlap; give ranges that do not overlap")
    if not windows:
        raise ValueError("no window given: give at least one HH:MM-HH:MM range")
    return windows


def zone_for(time_zones: Sequence[str], region: str | None, account_zone: str) -> str:
    """The subscriber's zone from the zones phonenumbers gives for the number: the only one, else the
    country's zone from NOTIFLOW_COUNTRY_ZONES, else the account's."""
    usable = [z for z in time_zones if z != "Etc/Unknown"]
    if len(usable) == 1:
        return usable[0]
    return get_settings().country_zones.get(region or "", account_zone)


@dataclass(frozen=True)
class Slot:
    """An instant a message may go out at, and when the window it lies in closes (both UTC)."""

    start: datetime
    end: datetime


def wall_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The first instant of `day` whose wall-clock time in `zone` is `at` or later, in UTC.

    Usually the wall time itself; in a DST gap (02:30 on a spring-forward day does not exist) it is
    the moment the clocks jump, the first instant at or after that wall time. In a DST overlap it is
    the first occurrence.
    """
    first = datetime.combine(day, at, zone).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == datetime.combine(day, at):
        return first
    # In a gap: search between the instant the wall time maps to under each offset.
    low = datetime.combine(day, at, zone).replace(fold=1).astimezone(UTC)
    low, high = min(low, first), max(low, first)
    target = datetime.combine(day, at)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= target:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def _slot_in_zone(earliest: datetime, windows: Sequence[Window], zone: ZoneInfo) -> Slot:
    local_day = earliest.astimezone(zone).date()
    for offset in range(-1, 3):
        day = local_day + timedelta(days=offset)
        for window in windows:
            start = wall_instant(day, window.start, zone)
            end = wall_instant(day + timedelta(days=1), time(0), zone) if window.end is None else wall_instant(day, window.end, zone)
            if earliest < end and start < end:
                return Slot(max(earliest, start), end)
    raise AssertionError("a day always has a window")  # parse_windows refuses an empty list


def next_slot(earliest: datetime, windows: Sequence[Window], zones: Sequence[str]) -> Slot:
    """The first instant at or after `earliest` (aware) inside a window in every one of `zones`,
    with the moment the first of those windows closes; NoWindow if none within a week."""
    infos = [ZoneInfo(z) for z in zones]
    moment = earliest.astimezone(UTC)
    limit = moment + timedelta(days=8)
    while moment < limit:
        slots = [_slot_in_zone(moment, windows, zone) for zone in infos]
        start = max(s.start for s in slots)
        if start == moment:
            return Slot(moment, min(s.end for s in slots))
        moment = start
    raise NoWindow(f"no moment lies inside the windows ({', '.join(map(str, windows))}) in every one of the zones {', '.join(zones)}")
