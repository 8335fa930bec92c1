"""Sending windows: when a message may go out, in the subscriber's local time."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DEFAULT_WINDOWS = ("09:00-20:00",)

# The zone used when a number maps to several (a Russian mobile number maps to eleven): the zone
# most of the country's subscribers live in. A country not listed uses the account's zone.
COUNTRY_ZONES = {
    "RU": "Europe/Moscow",
    "KZ": "Asia/Almaty",
    "US": "America/New_York",
    "CA": "America/Toronto",
    "BR": "America/Sao_Paulo",
    "MX": "America/Mexico_City",
    "AU": "Australia/Sydney",
    "ID": "Asia/Jakarta",
    "UA": "Europe/Kyiv",
    "ES": "Europe/Madrid",
    "PT": "Europe/Lisbon",
}

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*-\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


@dataclass(frozen=True)
class Window:
    """A daily time range [start, end) in local time; end 24:00 is written as None."""

    start: time
    end: time | None

    def __str__(self) -> str:
        end = "24:00" if self.end is None else self.end.strftime("%H:%M")
        return f"{self.start.strftime('%H:%M')}-{end}"


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
    """The subscriber's zone from the zones phonenumbers gives for the number."""
    usable = [z for z in time_zones if z != "Etc/Unknown"]
    if len(usable) == 1:
        return usable[0]
    return COUNTRY_ZONES.get(region or "", account_zone)


def _local(day: date, at: time, zone: ZoneInfo) -> datetime:
    # Round-tripping through UTC moves a wall time that falls in a DST gap to the real instant after it.
    return datetime.combine(day, at, zone).astimezone(UTC)


def next_send_time(earliest: datetime, windows: Sequence[Window], zone: str) -> datetime:
    """The first instant at or after `earliest` (aware) that lies inside one of the windows, in UTC."""
    tz = ZoneInfo(zone)
    local_day = earliest.astimezone(tz).date()
    for offset in range(3):
        day = local_day + timedelta(days=offset)
        for window in windows:
            start = _local(day, window.start, tz)
            end = _local(day + timedelta(days=1), time(0), tz) if window.end is None else _local(day, window.end, tz)
            if earliest < end:
                return max(earliest, start).astimezone(UTC)
    raise AssertionError("a day always has a window")  # parse_windows refuses an empty list
