"""
Step 1 downloading and tokenizing at the same time, against each half alone, in the same run.

    python bench/bench_stream.py [--corpus ../shared/data/corpus] [--shards 40] [--vocab-size 32768]

The corpus files are repeated to --shards shards and served from a loopback HTTP server throttled to
one fixed bandwidth for all connections, chosen so that downloading alone takes about as long as
tokenizing alone. Measured, each as the real command in a fresh process:
- tokenize alone: the step with every shard already on disk (--parquet-dir);
- download alone: the same shards fetched by the step's downloader (same parallelism), nothing else;
- full run: the step from an empty --parquet-dir and the server (--base-url), both halves overlapped;
- full run with --max-cached-shards 3.
The tokenizer is trained once beforehand and reused by every run (the same training shards), so each
measures the shards' work. Target: full run <= 1.15 x max(download alone, tokenize alone) (without
the overlap it would be their sum). Peak RSS of the main process and of the largest worker, per run.
"""

import argparse
import glob
import http.server
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peak_memory import ROOT, measured  # noqa: E402



class ThrottledServer(http.server.ThreadingHTTPServer):
    """Serves `root` over loopback, all connections together at most `rate` bytes/s (a token bucket)."""

    daemon_threads = True

    def __init__(self, root: str, rate: float):
        super().__init__(("127.0.0.1", 0), ThrottledHandler)
        self.root, self.rate, self.lock, self.next_free = root, rate, threading.Lock(), time.monotonic()

    def wait_for(self, nbytes: int) -> None:
        with self.lock:  # book the slot, then sleep outside the lock
            start = max(self.next_free, time.monotonic())
            self.next_free = start + nbytes / self.rate
        time.sleep(max(0.0, self.next_free - time.monotonic()))


class ThrottledHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        path = os.path.join(self.server.root, self.path.strip("/"))
        if not os.path.isfile(path):
            return self.send_error(404)
        with open(path, "rb") as f:
            body = f.read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(0, len(body), 1 << 16):
            chunk = body[i:i + (1 << 16)]
            self.server.wait_for(len(chunk))
            self.wfile.write(chunk)


def step(flags: list[str]) -> str:
    return f"from stacks_data.cli import run_step\nrun_step('pretrain', {flags!r})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "data", "corpus"))
    parser.add_argument("--shards", type=int, default=40)
    parser.add_argument("--vocab-size", type=int, default=32768)
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args()
    corpus = sorted(glob.glob(os.path.join(args.corpus, "*.parquet")))
    assert corpus, f"no parquet files in {args.corpus}"

    with tempfile.TemporaryDirectory() as work:
        served, local = os.path.join(work, "served"), os.path.join(work, "local")
        os.makedirs(served)
        os.makedirs(local)
        for i in range(args.shards):
            for folder in (served, local):
                os.symlink(os.path.abspath(corpus[i % len(corpus)]), os.path.join(folder, f"shard_{i:05d}.parquet"))
        total = sum(os.path.getsize(os.path.join(served, n)) for n in os.listdir(served))
        common = ["--dataset-name", "ds", "--num-shards", str(args.shards), "--tok-train-shards", "2",
                  "--vocab-size", str(args.vocab_size), "--num-workers", str(args.num_workers), "--skip-upload",
                  "--baselines-dir", work, "--shard-size", "10000000"]

        # the tokenizer, trained once; every run below reuses it (a copy in its output folder)
        measured(step(["--parquet-dir", local, "--out-dir", os.path.join(work, "trained"), *common]))
        trained = os.path.join(work, "trained", "ds", "tokenizer")

        def fresh(name: str) -> str:
            out = os.path.join(work, name)
            shutil.copytree(trained, os.path.join(out, "ds", "tokenizer"))
            return out

        tokenize = measured(step(["--parquet-dir", local, "--out-dir", fresh("tokenize"), *common]))
        rate = total / tokenize["seconds"]  # download alone should take about as long
        server = ThrottledServer(served, rate)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        print(f"{args.shards} shards, {total / 1e6:.0f} MB; server throttled to {rate / 1e6:.1f} MB/s")

        names = [f"shard_{i:05d}.parquet" for i in range(args.shards)]
        download = measured(f"""
from concurrent.futures import ThreadPoolExecutor
from stacks_data.sources.corpus import Shards
shards = Shards({names!r}, {os.path.join(work, 'download')!r}, {url!r}, "text")
with ThreadPoolExecutor(4) as pool:  # ShardStream's parallel downloads
    list(pool.map(shards.fetch, shards.names))
""")
        runs = {}
        for name, extra in (("full run", []), ("full run, --max-cached-shards 3", ["--max-cached-shards", "3"])):
            cache = os.path.join(work, f"cache-{len(runs)}")
            os.makedirs(cache)
            runs[name] = measured(step(["--parquet-dir", cache, "--base-url", url, "--out-dir", fresh(f"full{len(runs)}"),
                                        *common, *extra]))
        server.shutdown()

    longest = max(download["seconds"], tokenize["seconds"])
    print(f"download alone {download['seconds']:.1f}s, tokenize alone {tokenize['seconds']:.1f}s "
          f"(sum {download['seconds'] + tokenize['seconds']:.1f}s)")
    for name, run in runs.items():
        print(f"{name}: {run['seconds']:.1f}s = {run['seconds'] / longest:.2f}x the longer half (target <= 1.15x); "
              f"peak RSS main {run['main_mb']:.0f} MB, largest worker {run['worker_mb']:.0f} MB")
    print(f"tokenize alone: peak RSS main {tokenize['main_mb']:.0f} MB, largest worker {tokenize['worker_mb']:.0f} MB")


if __name__ == "__main__":
    main()
