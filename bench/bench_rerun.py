"""
The "nothing to do" rerun of a complete step-1 folder against hashing that folder, in the same run.

    python bench/bench_rerun.py [--corpus ../shared/data/corpus] [--size-mb 500] [--trials 3]

A rerun calls a folder complete only once it has checked every file (each shard's sha256 against the one
recorded when it was made, the other files against the manifest), so its floor is one hash of every
byte. The corpus files are repeated (as shard_00000, shard_00001, ...) until step 1's shards hold about
--size-mb MB; step 1 runs once, then, each a whole command, best of --trials with the page cache warm:
`sha256sum` over every file the manifest lists, and the same `stacks-data pretrain` command again.
Target: the rerun takes at most the sha256sum time plus 1 s.
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_verify import best_time, listed_files  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
TOKENS_PER_PARQUET_BYTE = 0.55  # the shared corpus with a 32k vocab: how many input files make --size-mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=os.path.join(SHARED, "corpus"))
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    corpus = sorted(glob.glob(os.path.join(args.corpus, "*.parquet")))
    average = sum(map(os.path.getsize, corpus)) / len(corpus)
    count = max(4, round(args.size_mb * 1e6 / (2 * TOKENS_PER_PARQUET_BYTE * average)))
    with tempfile.TemporaryDirectory() as work:
        parquet = os.path.join(work, "parquet")
        os.makedirs(parquet)
        for i in range(count):
            os.symlink(os.path.abspath(corpus[i % len(corpus)]), os.path.join(parquet, f"shard_{i:05d}.parquet"))
        command = [sys.executable, "-m", "stacks_data", "pretrain", "--parquet-dir", parquet, "--out-dir", work,
                   "--dataset-name", "ds", "--num-shards", str(count), "--tok-train-shards", "2",
                   "--shard-size", "20000000", "--skip-upload", "--baselines-dir", os.path.join(SHARED, "tokenizers")]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        files = listed_files(os.path.join(work, "ds"))
        size = sum(map(os.path.getsize, files))
        floor = best_time(["sha256sum", *files], args.trials)  # (also warms the page cache)
        rerun = best_time(command, args.trials)
        said = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        assert "nothing to do" in said, said
        print(f"step 1 folder: {len(files)} files, {size / 1e6:.0f} MB ({count} input files), best of {args.trials}:")
        print(f"  sha256sum            {floor:6.2f} s  ({size / floor / 1e6:.0f} MB/s)")
        print(f"  rerun, nothing to do {rerun:6.2f} s: {rerun - floor:+.2f} s over sha256sum (target <= +1 s)")


if __name__ == "__main__":
    main()
