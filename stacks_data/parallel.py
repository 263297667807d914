"""
The executor: run a step's function over work items in worker processes, results in input order.

Steps are plain functions of one item; this module decides where they run. At most
`2 * num_workers` items are in flight, so memory stays bounded however many items there are, and
results come back in item order, so outputs do not depend on the number of workers.
With num_workers == 1 everything runs in this process (same results, no IPC).
"""

import collections
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator


def ordered_map(fn: Callable, items: Iterable, num_workers: int,
                initializer: Callable | None = None, initargs: tuple = ()) -> Iterator:
    if num_workers < 1:
        raise ValueError("num_workers must be at least 1")
    if num_workers == 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(fn, items)
        return
    # forkserver, not fork: the parent may hold rayon/arrow threads whose locks a forked child would
    # inherit; the server is a fresh single-threaded process (with the step's module imported once)
    # that forks the workers, so they start in milliseconds instead of re-importing everything
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([fn.__module__])
    with ProcessPoolExecutor(num_workers, mp_context=context, initializer=initializer,
                             initargs=initargs) as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * num_workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
