"""
The executors: run a step's function over work items, results in input order.

Steps are plain functions of one item; an Executor decides where they run: `local` worker processes
(here) or tasks on a Ray cluster (ray_executor.py). At most `IN_FLIGHT * num_workers` items are in flight, so
memory stays bounded however many items there are, and results come back in item order, so outputs
do not depend on the number of workers or the executor. With one local worker everything runs in
this process (same results, no IPC).

What every step gets from here, whatever it does:
- a setup (e.g. loading the tokenizer) run once per worker process, read with worker_state();
- an error in a worker reaches the main process as one line naming the work item (`describe(item)`),
  never as a BaseException that does not pickle (a Rust panic) or a bare traceback;
- local workers never outlive the main process: each holds the read end of a "lifeline" pipe whose
  only write end is the main process's, and exits the moment it closes, whether the main process
  finished, failed, was interrupted or was killed with SIGKILL. The forkserver and the resource
  tracker then see their last client gone and exit too;
- Ctrl-C is the main process's business: workers ignore SIGINT, so it prints no worker tracebacks.
"""

import collections
import multiprocessing
import os
import signal
import threading
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import forkserver, resource_tracker
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from stacks_data import interrupts
from stacks_data.errors import UserError, WorkerError, from_os_error

EXECUTORS = ("local", "ray")
IN_FLIGHT = 4  # items in flight per worker: enough to keep every worker busy, few enough to bound memory


@dataclass(frozen=True)
class Executor:
    """Where a step's work items run: `local` worker processes, or tasks on a Ray cluster."""

    num_workers: int
    kind: str = "local"
    ray_address: str | None = None  # with kind "ray": a cluster to join (else a local Ray instance)

    def map(self, fn: Callable, items: Iterable, setup: tuple[Callable, tuple] | None = None,
            describe: Callable = repr, on_done: Callable | None = None) -> Iterator:
        """fn(item) for every item, in order.

        setup = (factory, args): factory(*args) runs once per worker process (e.g. loads the
        tokenizer); fn reads its result with worker_state(). describe(item) names an item in errors.
        on_done(item) is called, from any thread, as soon as a worker has done an item without error
        (before its result's turn comes): e.g. to free the input it read.
        """
        if self.kind == "ray":
            from stacks_data.ray_executor import ray_map

            return ray_map(fn, items, self.num_workers, setup, describe, on_done, self.ray_address)
        return ordered_map(fn, items, self.num_workers, setup, describe, on_done)


def ordered_map(fn: Callable, items: Iterable, num_workers: int, setup: tuple[Callable, tuple] | None = None,
                describe: Callable = repr, on_done: Callable | None = None) -> Iterator:
    """Executor(num_workers).map(...): local worker processes."""
    if num_workers < 1:
        raise ValueError("num_workers must be at least 1")
    on_done = on_done or (lambda item: None)
    if num_workers == 1:
        set_worker_state(setup)
        try:
            for item in items:
                result = named_result(lambda: run_item(fn, item), item, describe)
                on_done(item)
                yield result
        finally:
            set_worker_state(None)
        return
    # forkserver, not fork: the parent may hold rayon/arrow threads whose locks a forked child would
    # inherit; the server is a fresh single-threaded process (with the step's module imported once)
    # that forks the workers, so they start in milliseconds instead of re-importing everything
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([fn.__module__])
    lifeline, keep_alive = context.Pipe(duplex=False)
    _start_helpers()
    with interrupts.deferred():
        # Ctrl-C / SIGTERM wait until every worker has started: one whose parent is gone halfway
        # through its start-up prints a traceback from inside multiprocessing
        arrived = context.Barrier(num_workers)
        pool = ProcessPoolExecutor(num_workers, mp_context=context, initializer=_start_worker,
                                   initargs=(lifeline, setup, arrived))
        # one task per worker that waits for all of them: the pool starts every worker now
        for future in [pool.submit(_arrive) for _ in range(num_workers)]:
            future.result()
    try:
        pending = collections.deque()
        for item in items:
            future = pool.submit(run_item, fn, item)
            # done well only: a failed or cancelled item's input is still needed by the rerun
            future.add_done_callback(lambda f, item=item: f.cancelled() or f.exception() or on_done(item))
            pending.append((future, item))
            if len(pending) >= IN_FLIGHT * num_workers:
                future, done = pending.popleft()
                yield named_result(future.result, done, describe)
        while pending:
            future, done = pending.popleft()
            yield named_result(future.result, done, describe)
    except BaseException:
        # failed, interrupted or abandoned by the consumer: stop the workers now rather than letting
        # them finish items nobody will read
        keep_alive.close()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    keep_alive.close()


def _start_helpers() -> None:
    """Start the forkserver and the resource tracker ignoring SIGINT (for the few milliseconds of their
    spawn this process ignores it too): an ignored signal stays ignored across exec, so a Ctrl-C sent
    to the whole process group cannot hit one of them, or a worker forked by the forkserver, halfway
    through its start-up (a traceback from inside multiprocessing). They end with this process's
    lifeline, not with Ctrl-C."""
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
        resource_tracker.ensure_running()
    finally:
        signal.signal(signal.SIGINT, handler)


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
    except BrokenProcessPool:  # a worker was killed: by the kernel's OOM killer, most likely
        raise WorkerError("a worker process died (killed, or out of memory?)", f"while processing {describe(item)}",
                          "rerun the same command (finished work is kept); if it dies again, check memory "
                          "(dmesg) and pass a lower --num-workers") from None


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


_arrived = None  # a barrier of all the pool's workers: see _arrive


def _start_worker(lifeline, setup: tuple[Callable, tuple] | None, arrived) -> None:
    global _arrived
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(lifeline,), daemon=True).start()
    set_worker_state(setup)
    _arrived = arrived


def _arrive() -> None:
    _arrived.wait()  # a worker holding this task cannot take another: so each one comes from another worker


def _exit_with_parent(lifeline) -> None:
    try:
        lifeline.recv_bytes()  # nothing is ever sent: this returns only when the write end closes
    except (EOFError, OSError):
        pass
    os._exit(1)
