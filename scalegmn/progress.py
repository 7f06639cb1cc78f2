"""Progress bars for long work (data generation, training epochs, evaluation).

On a terminal: a tqdm bar with count, rate and ETA, redrawn in place. When stderr is not a
terminal (a log file, a pipe, a batch job): the same text as plain lines, one every
``$SCALEGMN_PROGRESS_INTERVAL`` seconds (default 30) plus the first and the last, with no
carriage returns, so a log shows the rate and the ETA of a long step while it runs.
"""
from __future__ import annotations

import os
import sys

#: seconds between lines when stderr is not a terminal (``$SCALEGMN_PROGRESS_INTERVAL``)
LOG_INTERVAL = 30.0
#: bars of short steps (evaluation) appear only once the step has run this long (seconds)
QUIET_SECONDS = 2.0


class _Lines:
    """A file for tqdm that writes each in-place redraw (``'\\r' + text``) as one line."""

    def __init__(self, fp):
        self.fp = fp

    def write(self, s: str):
        text = s.replace("\r", "").rstrip()
        if text:
            self.fp.write(text + "\n")

    def flush(self):
        self.fp.flush()


def bar(total: int, desc: str, unit: str = "it", enabled: bool = True, leave: bool = True,
        quiet: bool = False, initial: int = 0, file=None):
    """A tqdm bar over ``total`` units, or ``None`` when not ``enabled``.

    ``quiet``: a short step's bar, shown only after ``QUIET_SECONDS``. ``initial``: units done
    before (a resumed job; not counted in the rate). ``file``: where to write (default
    ``sys.stderr``, looked up at call time)."""
    if not enabled:
        return None
    from tqdm import tqdm
    fp = sys.stderr if file is None else file
    delay = QUIET_SECONDS if quiet else 0.0
    try:
        tty = fp.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty:
        return tqdm(total=total, desc=desc, unit=unit, leave=leave, delay=delay, file=fp,
                    initial=initial, dynamic_ncols=True)
    raw = os.environ.get("SCALEGMN_PROGRESS_INTERVAL", str(LOG_INTERVAL))
    try:
        interval = float(raw)
    except ValueError:
        raise ValueError(f"SCALEGMN_PROGRESS_INTERVAL must be a number of seconds, got "
                         f"{raw!r}") from None
    return tqdm(total=total, desc=desc, unit=unit, leave=leave, delay=delay, file=_Lines(fp),
                initial=initial, mininterval=interval, maxinterval=max(interval, 1.0),
                miniters=1, ascii=True, ncols=100)


def duration(seconds: float) -> str:
    """``'45 s'``, ``'3 min 20 s'``, ``'2 h 05 min'``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
