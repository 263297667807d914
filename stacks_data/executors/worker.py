"""
The worker side of every executor: a step function run on one item, its setup, and its errors.

What every step gets from here, whatever executor runs it:
- a setup (e.g. loading the tokenizer) run once per worker process, read with worker_state();
- an error in a worker reaches the main process as one line naming the work item (`describe(item)`),
  never as a BaseException that does not pickle (a Rust panic) or a bare traceback.
"""

import traceback
from typing import Callable

from stacks_data.errors import UserError, WorkerError, from_os_error

IN_FLIGHT = 4  # items in flight per worker: enough to keep every worker busy, few enough to bound memory


def run_item(fn: Callable, item):
    """fn(item) in a worker, with any error but a UserError turned into a WorkerError (strings only: it
    pickles, whatever the error was)."""
    try:
        if _init_error is not None:
            raise _init_error
        return fn(item)
    except UserError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except OSError as e:
        if (user := from_os_error(e)) is not None:  # a full disk in a worker is still the disk
            raise user from None
        raise WorkerError(f"{type(e).__name__}: {e}", traceback=traceback.format_exc()) from None
    except BaseException as e:  # BaseException: a pyo3 PanicException is one
        raise WorkerError(f"{type(e).__name__}: {e}", traceback=traceback.format_exc()) from None


def named_result(get: Callable, item, describe: Callable):
    """get(), a WorkerError from it named after the item (here, in the main process: describe need not pickle)."""
    try:
        return get()
    except WorkerError as e:
        if e.where:
            raise
        raise WorkerError(e.what, f"while processing {describe(item)}", e.todo, e.traceback) from None


def worker_died(item, describe: Callable) -> WorkerError:
    """A worker process that died under its item: killed by the kernel's OOM killer, most likely."""
    return WorkerError("a worker process died (killed, or out of memory?)", f"while processing {describe(item)}",
                       "rerun the same command (finished work is kept); if it dies again, check memory "
                       "(dmesg) and pass a lower --num-workers")


_state = None  # this process's setup result: see worker_state()
_init_error: BaseException | None = None  # the setup's error, raised by this worker's first item


def worker_state():
    """In a step function run by an executor: what the map's setup factory returned in this process."""
    return _state


def set_worker_state(setup: tuple[Callable, tuple] | None) -> None:
    """Run a map's setup in this process; an error is kept and raised by the first item (run_item),
    so that it is reported like any error of that item."""
    global _state, _init_error
    _state, _init_error = None, None
    try:
        _state = setup[0](*setup[1]) if setup else None
    except BaseException as e:
        _init_error = e
