"""Ctrl-C and SIGTERM held back across the few moments that must not be cut, delivered when they end.

A KeyboardInterrupt raised in the middle of importing torch (inside a C++ callback) aborts the
process; one raised while a worker pool starts leaves a child halfway through its start-up, which
prints a traceback. Such moments run under deferred().
"""

import contextlib
import os
import signal
import sys
import threading


@contextlib.contextmanager
def deferred():
    """SIGINT and SIGTERM that arrive in the block are delivered when it ends (main thread only:
    elsewhere Python runs no signal handlers anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    caught = []
    handlers = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in signals}
    try:
        yield
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        if caught:
            os.kill(os.getpid(), caught[0])


def import_torch():
    """torch, imported with the signals deferred (heavy: only the steps that write .pt files pay for it)."""
    if "torch" not in sys.modules:
        with deferred():
            import torch  # noqa: F401
    return sys.modules["torch"]
