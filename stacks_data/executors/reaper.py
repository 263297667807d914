"""
The reaper of a local Ray instance: `python -m stacks_data.executors.reaper DRIVER_PID`, stdin a pipe.

ray.init makes gcs_server and raylet die with the driver, but raylet's agents linger for a minute or two
after a SIGKILL. The reaper is started in a session of its own (a Ctrl-C to the driver's group does not
reach it), holding the read end of a pipe only the driver writes to: it notes every process of the
driver's tree (pid and start time, so a recycled pid is never killed), and once the pipe closes (the
driver is gone, however it ended) kills every one of them still running.
"""

import os
import select
import signal
import sys
import time


def start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def tree(roots: list[int]) -> set[int]:
    """Every descendant of `roots` (the reaper itself left out)."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and child != os.getpid():
                found.add(child)
                todo.append(child)
    return found


def reap(driver: int, lifeline: int, poll: float = 0.5) -> None:
    seen: dict[int, str | None] = {}
    while True:
        for pid in tree([driver, *seen]):
            seen.setdefault(pid, start_time(pid))
        if select.select([lifeline], [], [], poll)[0] and not os.read(lifeline, 1):
            break  # the driver is gone
    for _ in range(3):  # a process may fork while we kill: look again
        for pid in tree(list(seen)):
            seen.setdefault(pid, start_time(pid))
        for pid, started in seen.items():
            if started is not None and start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.2)


if __name__ == "__main__":
    reap(int(sys.argv[1]), sys.stdin.fileno())
