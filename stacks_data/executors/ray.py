"""
The Ray executor: a step's work items as Ray tasks, on a cluster or on a Ray instance of our own.

Same contract as the local executor: the same step function runs unchanged, results come back in
item order with at most IN_FLIGHT * num_workers in flight, the setup runs once per worker process (read with
worker_state()), and an error is one line naming the item. A task whose worker dies (a node
lost, an OOM kill) is retried elsewhere by Ray (max_retries); one that fails for good stops the step
as the local executor would, with what was packed so far resumable.

Only imported when --executor ray is chosen: Ray is an optional extra (pip install 'stacks-data[ray]').
"""

import collections
import hashlib
import logging
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
from typing import Callable, Iterable, Iterator

from stacks_data.errors import FlagError, NetworkError, UserError, WorkerError
from stacks_data.executors.worker import IN_FLIGHT, named_result, run_item, set_worker_state

MAX_RETRIES = 3
START_CLUSTER = "start one with `ray start --head` (then --ray-address auto), or drop --ray-address to start a local one"


def _ray():
    try:
        import ray
    except ImportError:
        raise FlagError("Ray is not installed", "--executor ray", "pip install 'stacks-data[ray]'") from None
    return ray


def connect(address: str | None, num_workers: int) -> int:
    """Join the cluster at `address` (--ray-address, else $RAY_ADDRESS), else start a local instance
    of num_workers CPUs that dies with this process; returns the CPUs available to our tasks."""
    ray = _ray()
    if ray.is_initialized():
        return int(ray.cluster_resources().get("CPU", num_workers))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")  # we read every result, or cancel it
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        if address != "auto":
            _check_reachable(address)  # else ray.init waits for an absent cluster, then exits the process
        try:
            _init(ray, address=address, **quiet)
        except ConnectionError as e:
            raise NetworkError(f"no Ray cluster to join ({e})", f"--ray-address {address}", START_CLUSTER) from None
        return int(ray.cluster_resources().get("CPU", num_workers))
    _start_reaper()
    _init(ray, address="local", num_cpus=num_workers, include_dashboard=False, **quiet)
    return num_workers


def _init(ray, **options) -> None:
    """ray.init, keeping our SIGTERM handler: Ray's own exits with status 15 and a log line, where a
    terminated run must unwind (stop its work, release its lock) and say so in one line (cli.py)."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(**options)
    finally:
        signal.signal(signal.SIGTERM, handler)


def _check_reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError):
        raise NetworkError("nothing answers there", f"--ray-address {address}", START_CLUSTER) from None


def ray_map(fn: Callable, items: Iterable, num_workers: int, setup: tuple[Callable, tuple] | None,
            describe: Callable, on_done: Callable | None, address: str | None) -> Iterator:
    """local.ordered_map, as Ray tasks."""
    ray = _ray()
    num_workers = connect(address, num_workers)
    task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_ray_item)
    setup_key = hashlib.sha256(pickle.dumps(setup)).hexdigest()
    fn_ref, setup_ref = ray.put(fn), ray.put(setup)  # shipped once, not with every task
    pending = collections.deque()
    watcher = _DoneWatcher(on_done) if on_done else None
    try:
        for item in items:
            ref = task.remote(fn_ref, item, setup_key, setup_ref)
            pending.append((ref, item))
            if watcher:
                watcher.add(ref, item)
            if len(pending) >= IN_FLIGHT * num_workers:
                yield _result(*pending.popleft(), describe)
        while pending:
            yield _result(*pending.popleft(), describe)
    finally:
        if watcher:
            watcher.stop()
        for ref, _ in pending:  # failed, interrupted or abandoned: items nobody will read are dropped
            ray.cancel(ref)


class _DoneWatcher:
    """Calls on_done(item) as tasks finish, in whatever order (a thread waiting on Ray)."""

    def __init__(self, on_done: Callable):
        self.on_done, self.refs, self.lock = on_done, {}, threading.Lock()
        self.stopped = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def add(self, ref, item) -> None:
        with self.lock:
            self.refs[ref] = item

    def stop(self) -> None:
        self.stopped.set()

    def _run(self) -> None:
        import ray

        while not self.stopped.is_set():
            with self.lock:
                refs = list(self.refs)
            if not refs:
                self.stopped.wait(0.05)
                continue
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0.1, fetch_local=False)
            for ref in ready:
                with self.lock:
                    item = self.refs.pop(ref)
                if self.stopped.is_set():  # the map is over (failed, or abandoned): nothing more to free
                    return
                self.on_done(item)


_setup_key = None  # in a Ray worker process: whose setup the worker state holds


def _ray_item(fn: Callable, item, setup_key: str, setup):
    """One item in a Ray worker process: the map's setup once per process, then worker.run_item."""
    global _setup_key
    if _setup_key != setup_key:
        set_worker_state(setup)
        _setup_key = setup_key
    return run_item(fn, item)


def _result(ref, item, describe: Callable):
    import ray.exceptions

    try:
        return named_result(lambda: _unwrap(ref), item, describe)
    except ray.exceptions.RayError as e:  # the worker died more often than Ray retries (WorkerCrashedError, OOM)
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(e).splitlines()[0])  # Ray colours its messages
        raise WorkerError(f"{type(e).__name__}: {message}", f"while processing {describe(item)}") from None


def _unwrap(ref):
    import ray
    import ray.exceptions

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, UserError):  # what run_item raised: a UserError or a WorkerError
            raise e.cause from None
        raise


# A local instance must die with this process: the reaper (reaper.py) kills what is left of it.
_reaper_lifeline = None


def _start_reaper() -> None:
    global _reaper_lifeline
    read, _reaper_lifeline = os.pipe()
    subprocess.Popen([sys.executable, "-m", "stacks_data.executors.reaper", str(os.getpid())], stdin=read,
                     start_new_session=True)
    os.close(read)
    os.set_inheritable(_reaper_lifeline, False)  # Ray's processes must not hold it open
