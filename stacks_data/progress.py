"""Progress bars and progress lines, one style for every step.

On a terminal, bars (tqdm), drawn only for work that lasts (after half a second), so quick steps and
early errors print nothing but their result. On a file or a pipe (a log, a scheduler's output), no bar
and no control character: a plain line now and then (tqdm's disable=None convention, as pip and
huggingface_hub do), so every line of the log is whole and an `error:` line always starts one. Lines
of results go through tqdm.write, so they never land in the middle of a bar.
"""

import sys
import time

from tqdm import tqdm

LINE_EVERY = 10.0  # seconds between two progress lines in a log


class DelayedBar(tqdm):
    """tqdm whose `delay` also holds for refreshes: tqdm's own refresh() (from set_postfix_str, or from
    tqdm.write putting bars back) draws a bar before its delay, and close() then leaves that line
    unfinished, so the next line printed is glued to it."""

    def refresh(self, nolock=False, lock_args=None):
        if self.disable or self._time() < self.start_t + self.delay:
            return
        super().refresh(nolock, lock_args)
        self.last_print_t = self._time()  # shown: close() ends its line


class ProgressLines:
    """A bar's interface for a file or a pipe: every LINE_EVERY seconds one plain line on stderr, e.g.
    `tokenize: 12/48 shard (25%), out 11.52M tok/s`, and a last one at the end if any was printed."""

    def __init__(self, iterable=None, total=None, desc="", unit="it", unit_scale=False, file=None, **_):
        self.iterable, self.total, self.desc, self.unit, self.unit_scale = iterable, total, desc, unit, unit_scale
        self.file = file or sys.stderr
        self.n, self.postfix, self.printed = 0, "", False
        self.last = time.monotonic()

    def __iter__(self):
        for value in self.iterable:
            yield value
            self.update(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n=1) -> None:
        self.n += n
        if time.monotonic() - self.last >= LINE_EVERY:
            self._line()

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        if self.printed:  # the log says where it ended
            self._line()

    def _line(self) -> None:
        size = (lambda v: tqdm.format_sizeof(v)) if self.unit_scale else (lambda v: f"{v:,}")
        done = f"{size(self.n)}/{size(self.total)} {self.unit}" if self.total else f"{size(self.n)} {self.unit}"
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        print(f"{self.desc}: {done}{share}" + (f", {self.postfix}" if self.postfix else ""), file=self.file, flush=True)
        self.last, self.printed = time.monotonic(), True


def bar(**kwargs):
    """A progress bar on a terminal, progress lines elsewhere (`file`: stderr by default)."""
    if kwargs.get("file", sys.stderr).isatty():
        return DelayedBar(delay=0.5, dynamic_ncols=True, **kwargs)
    return ProgressLines(**kwargs)


def say(line: str) -> None:
    tqdm.write(line)
