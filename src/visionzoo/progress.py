"""The progress display of training and evaluation: a bar on a terminal, lines in a log."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A progress bar on stderr (``\\r`` updates on a terminal; a line every 25 % or 30 s
    otherwise)."""

    def __init__(self, total: int, desc: str, mode: str = "auto", stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.mode = ("bar" if tty else "lines") if mode == "auto" else mode
        self.total, self.desc = total, desc
        self.last_draw, self.last_line, self.last_quarter = 0.0, time.monotonic(), 0
        self.drawn = False

    def update(self, done: int, elapsed: float, text: str) -> None:
        if self.mode == "off" or self.total <= 0:
            return
        now = time.monotonic()
        frac = done / self.total
        eta = elapsed / max(done, 1) * (self.total - done) if done else 0.0
        line = f"{self.desc} {frac:4.0%} {done}/{self.total}  {text}  ETA {format_duration(eta)}"
        if self.mode == "bar":
            if now - self.last_draw < 0.2 and done < self.total:
                return
            width = 20
            filled = int(width * frac)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r{self.desc} [{bar}] {frac:4.0%} {done}/{self.total}  {text}  "
                              f"ETA {format_duration(eta)} \x1b[K")
            self.stream.flush()
            self.last_draw, self.drawn = now, True
        else:
            quarter = int(frac * 4)
            if quarter > self.last_quarter or now - self.last_line >= 30:
                self.stream.write(line + "\n")
                self.stream.flush()
                self.last_quarter, self.last_line = quarter, now

    def close(self) -> None:
        if self.mode == "bar" and self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
