"""Run Python source in a fresh process and measure it: wall time, and the peak RSS of the process and of
its largest worker (any descendant: forkserver workers, Ray workers). Shared by the bench scripts."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WRAPPER = """
import json, os, sys, threading, time
sys.path.insert(0, {root!r})


def status(pid):
    try:
        with open(f"/proc/{{pid}}/status") as f:
            return dict(line.split(":", 1) for line in f)
    except OSError:
        return {{}}


def sample_workers(peak, done):
    # workers are descendants: sample their RSS while they live, they are gone at the end
    me = os.getpid()
    while not done.is_set():
        parents = {{pid: int(status(pid).get("PPid", "0")) for pid in os.listdir("/proc") if pid.isdigit()}}
        for pid in parents:
            ancestor = parents.get(pid)
            while ancestor and ancestor != me:
                ancestor = parents.get(str(ancestor))
            if ancestor == me:
                peak[0] = max(peak[0], int(status(pid).get("VmRSS", "0 kB").split()[0]))
        time.sleep(0.05)


def main():
    peak, done = [0], threading.Event()
    threading.Thread(target=sample_workers, args=(peak, done), daemon=True).start()
    t0 = time.perf_counter()
{work}
    seconds = time.perf_counter() - t0
    done.set()
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so it would count the caller's memory
    print(json.dumps({{"seconds": seconds, "main_mb": int(status("self")["VmHWM"].split()[0]) / 1024,
                       "worker_mb": peak[0] / 1024}}))


if __name__ == "__main__":
    main()
"""


def measured(work: str) -> dict:
    """Run `work` (Python statements) in a fresh process: {"seconds", "main_mb", "worker_mb"}."""
    body = "\n".join("    " + line for line in work.strip().splitlines())
    result = subprocess.run([sys.executable, "-c", WRAPPER.format(root=ROOT, work=body)], capture_output=True,
                            text=True)
    if result.returncode:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])
