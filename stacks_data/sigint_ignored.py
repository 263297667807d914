"""
Imported by the forkserver before anything else: executors/local.py puts it first in the server's preload
list (it lives outside that package, whose imports are heavy). From here on the forkserver ignores SIGINT,
and so does every worker it forks (they inherit the disposition: multiprocessing restores, in each, the one
the server had before it took over its own signals). A Ctrl-C sent to the whole process group is the main
process's business: without this, one landing while the server imports the step's module (about half a
second) prints a traceback from inside multiprocessing. Nothing else imports it: in any other process it
would swallow Ctrl-C.
"""

import signal
import sys

if sys.argv[:1] == ["-c"] and "multiprocessing.forkserver" in sys.modules:  # the forkserver, and only it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
