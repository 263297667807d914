"""
Threads of this process for I/O-bound work (hashing files: hashlib and file reads release the GIL).

thread_map(fn, items, n) gives fn(item) in item order, at most IN_FLIGHT * n items in flight. The
threads are daemons and nothing joins them: a Ctrl-C or SIGTERM ends the run at once, not after the
file being hashed (which may be tens of GB), and no process is started, so a short check costs nothing
to set up.
"""

import queue
import threading
from typing import Callable, Iterable, Iterator

from stacks_data.executors.worker import IN_FLIGHT


def thread_map(fn: Callable, items: Iterable, num_threads: int) -> Iterator:
    todo: queue.SimpleQueue = queue.SimpleQueue()
    pending = []  # (done event, result box) per item in flight, in item order

    def work() -> None:
        while (task := todo.get()) is not None:
            item, done, box = task
            try:
                box.append((True, fn(item)))
            except BaseException as e:  # raised in the caller's thread, in its turn
                box.append((False, e))
            done.set()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(num_threads)]
    for t in threads:
        t.start()
    try:
        for item in items:
            done, box = threading.Event(), []
            todo.put((item, done, box))
            pending.append((done, box))
            if len(pending) >= IN_FLIGHT * num_threads:
                yield _result(*pending.pop(0))
        while pending:
            yield _result(*pending.pop(0))
    finally:
        for _ in threads:
            todo.put(None)


def _result(done: threading.Event, box: list):
    while not done.wait(0.1):  # in slices: a signal's handler runs between them
        pass
    ok, value = box[0]
    if not ok:
        raise value
    return value
