"""
`stacks-data verify` against `sha256sum` over the same files, in the same run, page cache warm.

    python bench/bench_verify.py [--dataset DIR] [--num-workers N] [--trials 3] [--deep]

Without --dataset, the shared samples' full dataset is built first in a temporary folder: step 1 on
../shared/data/corpus (8 shards, vocab 32768), CORE eval on the eval bundle, SFT on MMLU + GSM8K from
../shared/data/hub with a synthetic SmolTalk (bench_sft.py's) and the word list, chat eval on the hub.
Then, each a whole command, best of --trials: `sha256sum` over every file the manifests list (the
floor: one read and one hash of every byte) and `stacks-data verify DIR` (target: at least 0.5x the speed
of sha256sum); with --deep also `stacks-data verify DIR --deep` (every token read, every .pt loaded).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import bench_sft  # noqa: E402
from stacks_data.cli import run_step  # noqa: E402
from stacks_data.dataset.manifest import find_manifests  # noqa: E402

SHARED = bench_sft.SHARED


def build(work: str, num_workers: int) -> str:
    common = ["--out-dir", work, "--dataset-name", "bench", "--skip-upload", "--num-workers", str(num_workers)]
    run_step("pretrain", ["--parquet-dir", os.path.join(SHARED, "corpus"), "--num-shards", "8",
                          "--tok-train-shards", "4", "--shard-size", "2000000",
                          "--baselines-dir", os.path.join(SHARED, "tokenizers"), *common])
    run_step("core-eval", ["--eval-bundle", os.path.join(SHARED, "eval_bundle"), *common])
    texts = bench_sft.corpus_texts(os.path.join(SHARED, "corpus", "shard_00000.parquet"))
    mirror = bench_sft.build_mirror(work, os.path.join(SHARED, "hub"), texts, 4600)
    run_step("sft", ["--hf-mirror", mirror, "--words-file", os.path.join(SHARED, "words", "words_alpha.txt"),
                     "--simple-spelling-size", "20000", "--spelling-bee-size", "8000", *common])
    run_step("chat-eval", ["--hf-mirror", os.path.join(SHARED, "hub"), *common[:-2]])
    return os.path.join(work, "bench")


def listed_files(dataset: str) -> list[str]:
    files = []
    for manifest in find_manifests(dataset):
        files += [os.path.join(dataset, f["path"]) for f in json.load(open(manifest))["files"]]
    return files


def best_time(command: list[str], trials: int) -> float:
    best = float("inf")
    for _ in range(trials):
        t = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="a dataset folder to check (default: build the shared samples' one)")
    parser.add_argument("--num-workers", type=int, default=os.cpu_count())
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--deep", action="store_true", help="also time verify --deep (a minute on the shared samples)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        dataset = args.dataset or build(work, args.num_workers)
        files = listed_files(dataset)
        size = sum(map(os.path.getsize, files))
        for path in files:  # the page cache warm for all three
            with open(path, "rb") as f:
                while f.read(1 << 24):
                    pass
        verify = [sys.executable, "-m", "stacks_data", "verify", dataset, "--num-workers", str(args.num_workers)]
        floor = best_time(["sha256sum", *files], args.trials)
        ours = best_time(verify, args.trials)
        deep = best_time([*verify, "--deep"], 1) if args.deep else None
        print(f"{len(files)} files, {size / 1e6:.0f} MB, best of {args.trials}:")
        print(f"  sha256sum        {floor:6.2f} s  ({size / floor / 1e6:.0f} MB/s)")
        print(f"  verify           {ours:6.2f} s  ({size / ours / 1e6:.0f} MB/s): {floor / ours:.2f}x sha256sum "
              f"(target >= 0.5x)")
        if deep:
            print(f"  verify --deep    {deep:6.2f} s  ({size / deep / 1e6:.0f} MB/s)")


if __name__ == "__main__":
    main()
