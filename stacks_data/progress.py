"""Progress bars and progress lines, one style for every step.

Bars appear only for work that lasts (after half a second), so quick steps and early errors print
nothing but their result; lines go through tqdm.write, so they never land in the middle of a bar.
"""

from tqdm import tqdm


def bar(**kwargs) -> tqdm:
    return tqdm(delay=0.5, dynamic_ncols=True, **kwargs)


def say(line: str) -> None:
    tqdm.write(line)
