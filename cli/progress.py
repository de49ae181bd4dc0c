"""A live progress line for long commands (uploads, imports), standard library only.

On a terminal the line is redrawn in place; elsewhere (CI logs, pipes) a plain line is printed every
`interval` seconds and once at the end, so a log shows progress without thousands of lines.
The formatting helpers are pure, and the clock is injected, so all of it is testable without waiting.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from typing import TextIO

DEFAULT_INTERVAL_SECONDS = 5.0  # between plain lines when not on a terminal
REDRAW_SECONDS = 0.1  # at most ten redraws a second on a terminal
MIN_BAR, MAX_BAR = 10, 30  # bar width in cells
MIN_STATS = 20  # columns kept for the numbers beside a bar; with less room there is no bar
CLEAR_TO_END = "\x1b[K"
SEPARATOR = "  "  # between the segments of a line


def format_count(n: int) -> str:
    return f"{n:,}"


def format_bytes(n: float) -> str:
    """Decimal units, as in "MB/s": 999 B, 1.5 kB, 12.3 MB, 1.02 GB."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if n < 100 else f"{n:.0f} {unit}"
    raise AssertionError("unreachable")


def format_rate(per_second: float | None, unit: str) -> str:
    """`unit` "bytes" gives "12.3 MB/s"; any other unit gives "1,234 rows/s"; unknown gives "-- <unit>/s"."""
    if per_second is None or not math.isfinite(per_second) or per_second <= 0:
        return "-- MB/s" if unit == "bytes" else f"-- {unit}/s"
    if unit == "bytes":
        return f"{format_bytes(per_second)}/s"
    return f"{per_second:,.0f} {unit}/s"


def format_duration(seconds: float | None) -> str:
    """MM:SS below an hour, else H:MM:SS; "--:--" when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def eta(done: float, total: float, per_second: float | None) -> float | None:
    """Seconds until `total` at `per_second`; None while the rate is unknown."""
    if per_second is None or per_second <= 0 or total <= 0:
        return None
    return max(total - done, 0) / per_second


def fraction(done: float, total: float) -> float | None:
    """done/total clamped to [0, 1]; None when the total is unknown (0)."""
    return min(max(done / total, 0.0), 1.0) if total > 0 else None


def bar(part: float, width: int, *, fill: str = "#", empty: str = "-") -> str:
    """`[###---]` with `width` cells between the brackets."""
    filled = int(part * width)
    return "[" + fill * filled + empty * (width - filled) + "]"


def bar_width(columns: int, label: str) -> int:
    """Cells for the bar on a terminal of `columns`: a quarter of what the label leaves, within
    [MIN_BAR, MAX_BAR]; 0 when too narrow. It depends on nothing else, so it stays put as the numbers
    beside it grow."""
    free = columns - 1 - len(label) - len(" [] 100% ")  # one column spare: no wrap
    if free < MIN_BAR + MIN_STATS:
        return 0
    return min(max(free // 4, MIN_BAR), MAX_BAR)


def render(label: str, part: float | None, segments: Sequence[str], *, columns: int | None) -> str:
    """One progress line: label, bar, percentage, then the segments (most important first).

    `columns` None renders the plain form for logs: no bar, every segment. On a terminal the line fits
    `columns`: the segments that do not fit beside the bar are left out, from the last."""
    percent = "" if part is None else f"{part * 100:3.0f}%"
    if columns is None:
        return _joined(label, percent, SEPARATOR.join(segments))
    width = bar_width(columns, label) if part is not None else 0
    head = _joined(label, bar(part, width) if width and part is not None else "", percent)
    room = columns - 1 - len(head) - 1
    kept: list[str] = []
    for segment in segments:
        if len(SEPARATOR.join([*kept, segment])) > room:
            break
        kept.append(segment)
    if not kept and segments:  # not even the first fits: show what fits of it
        return _joined(head, segments[0])[: columns - 1]
    return _joined(head, SEPARATOR.join(kept))


def render_lines(
    label: str, part: float | None, segments: Sequence[str], detail: Sequence[str], *, columns: int
) -> list[str]:
    """The terminal form: the line of `render`, and the detail segments indented below it."""
    lines = [render(label, part, segments, columns=columns)]
    if detail:
        lines.append((" " * (len(label) + 1) + SEPARATOR.join(detail))[: columns - 1])
    return lines


def _joined(*parts: str) -> str:
    return " ".join(part for part in parts if part)


class RateMeter:
    """Average rate since the first measurement (stable enough for a whole upload)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._start = clock()

    def elapsed(self) -> float:
        return self._clock() - self._start

    def rate(self, done: float) -> float | None:
        elapsed = self.elapsed()
        return done / elapsed if elapsed > 0 else None


class ProgressLine:
    """A status line on `stream` (stderr: stdout stays clean for results and --json), with an optional
    detail line below it on a terminal (off a terminal, the details end the one plain line)."""

    def __init__(
        self,
        stream: TextIO,
        label: str,
        *,
        tty: bool | None = None,
        columns: int | None = None,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.label = label
        self.tty = stream.isatty() if tty is None else tty
        self._columns = columns
        self._interval = interval if not self.tty else REDRAW_SECONDS
        self._clock = clock
        self._last_drawn: float | None = None
        self._drawn = 0  # terminal lines drawn and not ended yet; the cursor is on the last

    def update(
        self, part: float | None, segments: Sequence[str], detail: Sequence[str] = (), *, force: bool = False
    ) -> None:
        """Draw now if forced, on the first call, or when the interval has passed since the last draw."""
        now = self._clock()
        if not force and self._last_drawn is not None and now - self._last_drawn < self._interval:
            return
        self._last_drawn = now
        if self.tty:
            self._redraw(render_lines(self.label, part, segments, detail, columns=self.columns()))
        else:
            self.stream.write(render(self.label, part, [*segments, *detail], columns=None) + "\n")
        self.stream.flush()

    def finish(self, part: float | None, segments: Sequence[str], detail: Sequence[str] = ()) -> None:
        """The last state, always drawn, and the lines ended."""
        self.update(part, segments, detail, force=True)
        self.end()

    def end(self) -> None:
        """End the lines on a terminal (before a message, a prompt or an error)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0

    def _redraw(self, lines: list[str]) -> None:
        # Back to the start of the first line drawn, then over every line (a line no longer needed
        # is blanked, so nothing stale stays on screen).
        up = f"\x1b[{self._drawn - 1}A" if self._drawn > 1 else ""
        count = max(len(lines), self._drawn)
        padded = lines + [""] * (count - len(lines))
        self.stream.write("\r" + up + "\n".join(line + CLEAR_TO_END for line in padded))
        self._drawn = count

    def columns(self) -> int:
        """The width of the terminal the line is drawn on (stdout may be redirected while stderr is not)."""
        if self._columns:
            return self._columns
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            return shutil.get_terminal_size().columns
