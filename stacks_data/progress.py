"""Progress bars and progress lines, one style for every step.

Bars appear only for work that lasts (after half a second), so quick steps and early errors print
nothing but their result; lines go through tqdm.write, so they never land in the middle of a bar.
"""

from tqdm import tqdm


class DelayedBar(tqdm):
    """tqdm whose `delay` also holds for refreshes: tqdm's own refresh() (from set_postfix_str, or from
    tqdm.write putting bars back) draws a bar before its delay, and close() then leaves that line
    unfinished, so the next line printed is glued to it."""

    def refresh(self, nolock=False, lock_args=None):
        if self.disable or self._time() < self.start_t + self.delay:
            return
        super().refresh(nolock, lock_args)
        self.last_print_t = self._time()  # shown: close() ends its line


def bar(**kwargs) -> tqdm:
    return DelayedBar(delay=0.5, dynamic_ncols=True, **kwargs)


def say(line: str) -> None:
    tqdm.write(line)
