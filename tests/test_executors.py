"""A call that holds the GIL for long (rustbpe's training) runs in a worker of its own (executors.in_a_worker):
a signal still ends the run at once, and the worker does not outlive the run, even killed.

The call here is a regex that backtracks for a minute: like rustbpe's merges, it never releases the GIL.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from test_lifecycle import gone_within, ours

HOLDS_THE_GIL = """
import functools, re
from stacks_data.executors import in_a_worker
in_a_worker(functools.partial(re.fullmatch, r"(a|aa)+b"), "a" * 44)
"""


def started_worker() -> subprocess.Popen:
    run = subprocess.Popen([sys.executable, "-c", HOLDS_THE_GIL], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True, text=True)
    deadline = time.time() + 30
    while len(ours(run.pid)) < 3:  # the run, the forkserver, the worker (and the resource tracker)
        assert run.poll() is None and time.time() < deadline, run.stderr.read()
        time.sleep(0.05)
    time.sleep(0.5)  # well into the call
    return run


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["INT", "KILL"])
def test_a_call_that_holds_the_gil_neither_delays_a_signal_nor_outlives_the_run(how):
    run = started_worker()
    sent = time.monotonic()
    os.kill(run.pid, how)
    try:
        run.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        pytest.fail(f"the run waited for the call after {how.name}")
    assert time.monotonic() - sent < 2
    assert gone_within(run.pid, 2), f"left after {how.name}: {ours(run.pid)}"
