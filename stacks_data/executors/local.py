"""
The local executor: a step's function over work items in worker processes of this machine.

Results come back in item order with at most IN_FLIGHT * num_workers items in flight, so outputs do not
depend on the number of workers and memory stays bounded however many items there are. With one worker
everything runs in this process (same results, no IPC).

The workers are managed here, not through concurrent.futures.ProcessPoolExecutor: its shutdown can wait
forever once a worker is gone (its queue-feeder thread blocked on a pipe nobody reads, joined by
shutdown(wait=True); CPython's tracker has several such reports), and Ctrl-C or SIGTERM must end a run in
seconds, every time. So:
- each worker has two pipes of its own: items in (written by a daemon thread of ours, so the main thread
  never blocks on a write while a worker blocks writing a result) and results out, read by the main
  thread with connection.wait, together with every worker's process sentinel: a worker that dies is
  seen at once, and its items fail in order with one line;
- stopping never waits without a deadline: the workers are asked to stop (their pipes close), then
  terminated, then killed, each after a short wait;
- workers never outlive the main process: each holds the read end of a "lifeline" pipe of its own whose
  only write end is the main process's, and ends the moment it closes (finished, failed, interrupted or
  SIGKILLed): on Linux the kernel kills it then, even inside native code that holds the GIL. The
  forkserver and the resource tracker then see their last client gone and exit too;
- Ctrl-C is the main process's business: workers ignore SIGINT, so it prints no worker tracebacks;
- results cross without a copy in the main process beyond the pipe's own: a worker pickles an answer with
  its arrays' bytes out of band (pickle protocol 5) and writes those bytes raw after it; the main process
  reads them straight into the arrays' memory (os.readv), so a token costs it one read, not the three
  copies of Connection.recv (its reads, its buffer, then unpickling). The main process's time per token
  is the step's Amdahl ceiling (bench/bench_pretrain.py measures it).
"""

import fcntl
import multiprocessing
import os
import pickle
import queue
import signal
import threading
from multiprocessing import connection, forkserver, resource_tracker
from typing import Callable, Iterable, Iterator

import numpy as np

from stacks_data import interrupts
from stacks_data.errors import UserError, WorkerError
from stacks_data.executors.worker import IN_FLIGHT, named_result, run_item, set_worker_state, worker_died

STOP_WAIT = 0.5  # seconds a worker gets to end by itself, then again after SIGTERM, before SIGKILL
PIPE_BYTES = 1 << 20  # a result pipe's capacity (Linux's default, 64 KB, means 16x the reads and wake-ups)
_READY = "ready"


def ordered_map(fn: Callable, items: Iterable, num_workers: int, setup: tuple[Callable, tuple] | None = None,
                describe: Callable = repr, on_done: Callable | None = None) -> Iterator:
    """fn(item) for every item, in order (Executor.map's contract, with local worker processes)."""
    if num_workers < 1:
        raise ValueError("num_workers must be at least 1")
    on_done = on_done or (lambda item: None)
    if num_workers == 1:
        set_worker_state(setup)
        try:
            yield from _in_this_process(fn, items, describe, on_done)
        finally:
            set_worker_state(None)
        return
    pool = _Pool(fn, num_workers, setup)
    yield from pool.mapped(items, describe, on_done)
    pool.stop()


def in_a_worker(fn: Callable, item, describe: Callable = repr):
    """fn(item) in a worker process of its own, for a call into native code that holds the GIL for long
    (rustbpe's training: a minute and more on a real corpus). In this process it would hold off every
    signal handler until it returns; there, a signal still ends the run within seconds (the worker is
    stopped like any other), and the worker ends with this process however that ends (_die_with_parent)."""
    pool = _Pool(fn, 1, None)
    try:
        return next(pool.mapped([item], describe, lambda item: None))
    finally:
        pool.stop()


def _in_this_process(fn: Callable, items: Iterable, describe: Callable, on_done: Callable) -> Iterator:
    """One worker: the items run here, in turn, with this process's worker state (set_worker_state)."""
    for item in items:
        result = named_result(lambda: run_item(fn, item), item, describe)
        on_done(item)
        yield result


class StartedPool:
    """A pool for fn and setup, started now on a thread of its own: the forkserver's start and each
    worker's setup (loading the tokenizer, its self-check) run while the caller does other work, off the
    critical path (with one worker, the setup runs on that thread, for this process). `with
    StartedPool(...) as started:` then started.ordered_map(...) as many times as wanted (ordered_map's
    contract); the block's end stops the workers."""

    def __init__(self, fn: Callable, num_workers: int, setup: tuple[Callable, tuple] | None):
        self.fn, self.setup, self.num_workers, self.pool, self.error = fn, setup, num_workers, None, None
        self.thread = threading.Thread(target=self._start, daemon=True)

    def _start(self) -> None:
        try:
            if self.num_workers == 1:
                set_worker_state(self.setup)  # its error, if any, is raised by the first item (run_item)
            else:
                self.pool = _Pool(self.fn, self.num_workers, self.setup)
        except BaseException as e:  # raised in the caller's thread, by its first map
            self.error = e

    def __enter__(self) -> "StartedPool":
        self.thread.start()
        return self

    def ordered_map(self, items: Iterable, describe: Callable = repr, on_done: Callable | None = None) -> Iterator:
        while self.thread.is_alive():
            self.thread.join(0.1)  # in slices: a signal's handler runs between them
        if self.error is not None:
            raise self.error
        if self.num_workers == 1:
            yield from _in_this_process(self.fn, items, describe, on_done or (lambda item: None))
            return
        if self.pool is None:
            raise WorkerError("the worker pool was stopped after an error", "the worker pool", "rerun the same command")
        pool = self.pool
        try:
            yield from pool.mapped(items, describe, on_done or (lambda item: None))
        except BaseException:
            self.pool = None  # stopped by mapped: not to be used again
            raise

    def __exit__(self, *exc) -> None:
        while self.thread.is_alive():  # a start cut short by the caller's error: let it end, then stop it
            self.thread.join(0.1)
        if self.num_workers == 1:
            set_worker_state(None)
        if self.pool is not None:
            self.pool.stop(abandoned=exc[0] is not None)
            self.pool = None


class _Worker:
    """One worker process, its two pipes, and the items it holds."""

    def __init__(self, context, fn: Callable, setup):
        tasks_out, self.tasks = context.Pipe(duplex=False)
        self.results, results_in = context.Pipe(duplex=False)
        try:
            fcntl.fcntl(self.results.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except (AttributeError, OSError):  # not Linux, or above the system's limit: the default then
            pass
        # a lifeline of its own: the kernel signals one owner per pipe end (see _die_with_parent)
        self.lifeline, self.keep_alive = context.Pipe(duplex=False)
        self.process = context.Process(target=_work, args=(fn, setup, tasks_out, results_in, self.lifeline),
                                       daemon=True)
        self.process.start()
        tasks_out.close()  # the worker's ends: closed here, so that either side sees the other go
        results_in.close()
        self.held: list[int] = []  # indices of the items sent to it and not answered yet
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._send, daemon=True).start()

    def submit(self, index: int, item) -> None:
        self.held.append(index)
        self.outbox.put((index, item))

    def _send(self) -> None:
        """Writes the items to the worker (a thread: a large item never blocks the main thread); a worker
        that is gone ends it."""
        try:
            while (task := self.outbox.get()) is not None:
                self.tasks.send(task)
        except (OSError, ValueError):  # the worker is gone (EPIPE), or its pipe closed
            pass
        finally:
            self.tasks.close()

    def stop(self) -> None:
        self.outbox.put(None)  # its writer closes the pipe: the worker reads EOF and exits


class _Pool:
    def __init__(self, fn: Callable, num_workers: int, setup):
        # forkserver, not fork: the parent may hold rayon/arrow threads whose locks a forked child would
        # inherit; the server is a fresh single-threaded process (with the step's module imported once)
        # that forks the workers, so they start in milliseconds instead of re-importing everything
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["stacks_data.sigint_ignored", fn.__module__])
        _start_helpers()
        self.workers: list[_Worker] = []
        try:
            with interrupts.deferred():
                # Ctrl-C / SIGTERM wait until every worker has started: one whose parent is gone halfway
                # through its start-up prints a traceback from inside multiprocessing
                for _ in range(num_workers):
                    self.workers.append(_Worker(context, fn, setup))
                for w in self.workers:
                    if w.results.recv() != _READY:
                        raise EOFError
        except (EOFError, OSError):
            self.stop(abandoned=True)
            raise WorkerError("a worker process died while starting", "the worker pool",
                              "rerun the same command; if it dies again, check memory (dmesg)") from None
        except BaseException:  # the signal held back during the start-up, raised as it ends
            self.stop(abandoned=True)
            raise
        finally:
            for w in self.workers:
                w.lifeline.close()  # the worker's end

    def mapped(self, items: Iterable, describe: Callable, on_done: Callable) -> Iterator:
        """ordered(), with the pool stopped when the map fails, is interrupted or is abandoned by its
        consumer: no worker goes on (a map that ends well leaves it ready for another)."""
        try:
            yield from self.ordered(items, describe, on_done)
        except BaseException:
            self.stop(abandoned=True)
            raise

    def ordered(self, items: Iterable, describe: Callable, on_done: Callable) -> Iterator:
        sent: dict[int, object] = {}  # index -> item, until its result is yielded
        answers: dict[int, tuple[bool, object]] = {}  # index -> (done well, result or error), until yielded
        items, exhausted, next_in, next_out = iter(items), False, 0, 0
        alive = list(self.workers)
        while True:
            while not exhausted and next_in - next_out < IN_FLIGHT * len(self.workers):
                item = next(items, _END)
                if item is _END:
                    exhausted = True
                    break
                sent[next_in] = item
                if alive:
                    min(alive, key=lambda w: len(w.held)).submit(next_in, item)
                else:
                    answers[next_in] = (False, None)
                next_in += 1
            if next_out in answers:
                done_well, result = answers.pop(next_out)
                item = sent.pop(next_out)
                next_out += 1
                if done_well:
                    yield result
                elif result is None:
                    raise worker_died(item, describe)
                else:
                    named_result(_raiser(result), item, describe)
                continue
            if exhausted and next_out == next_in:
                return
            if not alive:  # cannot happen: every item not answered is held by a living worker
                raise RuntimeError("no worker left to wait for")
            by_pipe = {w.results: w for w in alive}
            by_sentinel = {w.process.sentinel: w for w in alive}
            for ready in connection.wait([*by_pipe, *by_sentinel]):
                w = by_pipe.get(ready) or by_sentinel[ready]
                if w not in alive:
                    continue
                if not _read_answers(w, answers, sent, on_done):  # it died: its items fail, in turn
                    alive.remove(w)
                    for index in w.held:
                        answers[index] = (False, None)
                    w.held.clear()

    def stop(self, abandoned: bool = False) -> None:
        """End every worker within about 3 * STOP_WAIT seconds, whatever state it is in. abandoned: the
        run is failing or interrupted, so the forkserver goes too (now: left to end with this process,
        it would take a second or two to unload what it preloaded, after the run says it is over)."""
        for w in self.workers:
            w.keep_alive.close()  # the lifeline: each worker ends as soon as it is closed
            w.stop()
        for signal_to_send in (None, signal.SIGTERM, signal.SIGKILL):
            living = [w.process for w in self.workers if w.process.is_alive()]
            if not living:
                break
            for process in living:
                if signal_to_send is not None:
                    try:
                        os.kill(process.pid, signal_to_send)
                    except ProcessLookupError:
                        pass
            connection.wait([p.sentinel for p in living], timeout=STOP_WAIT)
        for w in self.workers:
            if not w.process.is_alive():
                w.process.join(0)  # reaped: no zombie, and multiprocessing forgets it
            w.results.close()
        if abandoned:
            _end_forkserver()


def _read_answers(w: _Worker, answers: dict, sent: dict, on_done: Callable) -> bool:
    """Read what worker w has answered; False when it is gone."""
    try:
        while w.results.poll():
            index, done_well, result = _receive(w.results)
            w.held.remove(index)
            answers[index] = (done_well, result)
            if done_well:
                on_done(sent[index])
    except (EOFError, OSError):
        return False
    return w.process.is_alive()


def _receive(results) -> tuple:
    """One answer of a worker (_send's): its pickle, then its arrays' bytes, read into their own memory."""
    payload, sizes = results.recv()
    buffers = []
    for size in sizes:
        buffer = memoryview(np.empty(size, np.uint8))  # not zeroed: every byte is read into it
        done = 0
        while done < size:  # the worker is writing them now; a worker gone midway is EOF
            n = os.readv(results.fileno(), [buffer[done:]])
            if not n:
                raise EOFError
            done += n
        buffers.append(buffer)
    return pickle.loads(payload, buffers=buffers)


def _raiser(error: BaseException) -> Callable:
    def get():
        raise error

    return get


_END = object()


def _end_forkserver() -> None:
    """Kill this process's forkserver, then reap and forget it, so that the next pool starts a new one.
    Not forgotten, a pool started at once would find it not yet reaped, take it for alive
    (forkserver.ensure_running checks with WNOHANG) and fail to start its workers. multiprocessing has
    no public way to stop it, hence its private pid and _stop; it holds nothing to clean up."""
    server = forkserver._forkserver
    pid = getattr(server, "_forkserver_pid", None)
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        server._stop()  # waits for the killed server (milliseconds), removes its socket, forgets it
    except OSError:  # already reaped or its socket gone: forget it all the same
        server._forkserver_pid = server._forkserver_alive_fd = server._forkserver_address = None


def _start_helpers() -> None:
    """Start the forkserver and the resource tracker. A Ctrl-C sent to the whole process group must not
    hit them, or a worker, halfway through a start-up (a traceback from inside multiprocessing): they end
    with this process's lifeline, not with Ctrl-C. The forkserver ignores SIGINT from its first import
    on (sigint_ignored.py, preloaded first; its workers inherit that), the resource tracker from its
    own start; what is left is the forkserver's interpreter start, these few milliseconds with SIGINT
    blocked in this thread. Not ignored here: a Ctrl-C meant for this process is never lost."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


# ------------------------------------------------------------------------------------ in the worker


def _work(fn: Callable, setup, tasks, results, lifeline) -> None:
    """A worker process: the setup, then items until its pipe closes (or the main process is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(lifeline)
    threading.Thread(target=_exit_with_parent, args=(lifeline,), daemon=True).start()
    set_worker_state(setup)
    try:
        results.send(_READY)
        while True:
            index, item = tasks.recv()
            try:
                answer = (index, True, run_item(fn, item))
            except BaseException as e:  # a UserError or WorkerError (run_item), or an interrupt
                error = e if isinstance(e, UserError) else WorkerError(f"{type(e).__name__}: {e}")
                answer = (index, False, error)
            try:
                _send(results, answer)
            except (TypeError, AttributeError, ValueError, pickle.PicklingError) as e:  # a bug of ours
                _send(results, (index, False, WorkerError(f"the result does not pickle ({type(e).__name__}: {e})")))
    except (EOFError, OSError):  # the main process closed our pipes (done or stopping), or is gone
        pass
    os._exit(0)


def _send(results, answer) -> None:
    """An answer to the main process (see _receive): pickled with its arrays' bytes out of band, then
    those bytes, written from the arrays' own memory."""
    buffers = []
    payload = pickle.dumps(answer, protocol=5, buffer_callback=buffers.append)  # raises before anything is sent
    raw = [b.raw() for b in buffers]
    results.send((payload, [r.nbytes for r in raw]))
    for r in raw:
        done = 0
        while done < r.nbytes:
            done += os.write(results.fileno(), r[done:])


def _die_with_parent(lifeline) -> None:
    """The kernel ends this worker (SIGKILL) the moment the lifeline's write end closes, whatever it is
    doing: the lifeline's thread (_exit_with_parent) needs the GIL, which native code may hold for minutes
    (rustbpe's training). The pipe signals its reader's owner when its last writer goes (O_ASYNC, with
    F_SETSIG for the signal). Linux only; elsewhere the thread alone, as for a main process gone before
    this call (the thread sees it before any work starts)."""
    if not hasattr(fcntl, "F_SETSIG"):
        return
    fd = lifeline.fileno()
    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGKILL)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)


def _exit_with_parent(lifeline) -> None:
    try:
        lifeline.recv_bytes()  # nothing is ever sent: this returns only when the write end closes
    except (EOFError, OSError):
        pass
    os._exit(1)
