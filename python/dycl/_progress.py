"""Progress output people can read: bars only for work that lasts, plain lines in log files.

On a terminal, a tqdm bar appears once a stage has run for :data:`DELAY_S`
seconds (a stage of a few milliseconds shows nothing). When stderr is not a
terminal (a log file, a pipe, a batch job), no ``\\r`` updates are written:
each stage that lasted at least :data:`DELAY_S` gets one line when it ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

#: Seconds a stage must last before it shows a bar (terminal) or a line (log).
DELAY_S = 1.0

T = TypeVar("T")


def stderr_is_terminal() -> bool:
    """Whether progress goes to an interactive terminal."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def stage_line(desc: str, done: int, total: int | None, unit: str, seconds: float) -> None:
    """The one line a finished stage gets in a log file (the non-terminal form of a bar)."""
    amount = f"{done}/{total}" if total is not None and total != done else f"{done}"
    print(f"{desc}: {amount} {unit} in {seconds:.1f} s", file=sys.stderr, flush=True)


def bar(iterable: Iterable[T], desc: str, unit: str = "it", disable: bool = False,
        total: int | None = None) -> Iterator[T]:
    """Iterate ``iterable`` with a delayed bar (terminal) or one closing line (log file)."""
    if disable:
        yield from iterable
        return
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if stderr_is_terminal():
        from tqdm.auto import tqdm

        yield from tqdm(iterable, desc=desc, unit=unit, total=total, leave=False, delay=DELAY_S,
                        file=sys.stderr)
        return
    start = time.perf_counter()
    done = 0
    for item in iterable:
        yield item
        done += 1
    seconds = time.perf_counter() - start
    if seconds >= DELAY_S:
        stage_line(desc, done, total, unit, seconds)


class StageProgress:
    """A ``progress(stage, done, total)`` callback for the core: one delayed bar or line per stage."""

    def __init__(self) -> None:
        self._terminal = stderr_is_terminal()
        self._bar = None
        self._stage: str | None = None
        self._start = 0.0
        self._done = 0
        self._total = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self.close()
            self._stage, self._start = stage, time.perf_counter()
            if self._terminal:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc=stage, leave=False, delay=DELAY_S, file=sys.stderr)
        self._done, self._total = done, total
        if self._bar is not None and done > self._bar.n:
            self._bar.update(done - self._bar.n)  # update(), not refresh(): it honours the delay

    def close(self) -> None:
        """End the current stage (its bar goes away; in a log, a line if it lasted)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._stage is not None and not self._terminal:
            seconds = time.perf_counter() - self._start
            if seconds >= DELAY_S:
                stage_line(self._stage, self._done, self._total, "steps", seconds)
        self._stage = None


__all__ = ["DELAY_S", "StageProgress", "bar", "stage_line", "stderr_is_terminal"]
