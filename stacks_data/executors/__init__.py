"""
The executors: run a step's function over work items, results in input order.

Steps are plain functions of one item; an Executor decides where they run: `local` worker processes
(local.py) or tasks on a Ray cluster (ray.py, imported only when chosen: Ray is an optional extra).
Both run the same worker runtime (worker.py: the setup once per worker process, read with
worker_state(); errors as one line naming the item), keep at most IN_FLIGHT * num_workers items in
flight and give results in item order, so outputs do not depend on the number of workers or the
executor. reaper.py ends a local Ray instance's processes with the run. in_a_worker runs one call in a
local worker of its own: native code that holds the GIL for long (rustbpe's training) cannot then hold
off the main process's signal handlers.
"""

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from stacks_data.executors.local import StartedPool, in_a_worker, ordered_map
from stacks_data.executors.worker import IN_FLIGHT, run_item, worker_state

__all__ = ["EXECUTORS", "Executor", "IN_FLIGHT", "in_a_worker", "ordered_map", "run_item", "worker_state"]

EXECUTORS = ("local", "ray")


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
        on_done(item) is called as soon as a worker has done an item without error (before its
        result's turn comes): e.g. to free the input it read.
        """
        if self.kind == "ray":
            from stacks_data.executors.ray import ray_map

            return ray_map(fn, items, self.num_workers, setup, describe, on_done, self.ray_address)
        return ordered_map(fn, items, self.num_workers, setup, describe, on_done)

    @contextlib.contextmanager
    def started(self, fn: Callable, setup: tuple[Callable, tuple] | None = None):
        """`with executor.started(fn, setup) as e:` e maps like this executor; the workers for fn and setup
        start now, beside the block's other work (local processes: their start-up is then off the
        critical path; with one worker, the setup runs beside the block, for this process), and e's maps
        of that fn and setup use them. With Ray, e is this executor."""
        if self.kind != "local":
            yield self
            return
        with StartedPool(fn, self.num_workers, setup) as pool:
            yield _WithStartedPool(self, pool)


@dataclass(frozen=True)
class _WithStartedPool:
    """An Executor whose maps of one fn and setup run on a pool started ahead (Executor.started)."""

    executor: Executor
    pool: StartedPool

    def map(self, fn: Callable, items: Iterable, setup: tuple[Callable, tuple] | None = None,
            describe: Callable = repr, on_done: Callable | None = None) -> Iterator:
        if fn is self.pool.fn and setup == self.pool.setup:
            return self.pool.ordered_map(items, describe, on_done)
        return self.executor.map(fn, items, setup, describe, on_done)
