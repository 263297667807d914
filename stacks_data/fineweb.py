"""
The pretraining corpus: FineWeb-Edu parquet shards `shard_00000.parquet` ... `shard_01822.parquet`.

Shards live in a local folder; missing ones are downloaded from `base_url`. A shard already in the
folder is used as it is, so a folder filled by hand works offline.
"""

import os
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from stacks_data.download import download
from stacks_data.parquet import open_parquet

BASE_URL = "https://huggingface.co/datasets/karpathy/fineweb-edu-100b-shuffle/resolve/main"
NUM_AVAILABLE_SHARDS = 1823  # shard_00000 .. shard_01822
MAX_PARALLEL_DOWNLOADS = 8


def default_parquet_dir() -> str:
    base = os.environ.get("NANOCHAT_BASE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "nanochat")
    return os.path.join(base, "base_data")


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def ensure_shards(indices: list[int], parquet_dir: str, base_url: str = BASE_URL) -> list[str]:
    """Paths of the shards `indices` in parquet_dir, downloading the missing ones (in parallel)."""
    for i in indices:
        if not 0 <= i < NUM_AVAILABLE_SHARDS:
            raise ValueError(f"shard index {i} out of range: the corpus has shards 0..{NUM_AVAILABLE_SHARDS - 1}")
    paths = [os.path.join(parquet_dir, shard_name(i)) for i in indices]
    missing = [(i, p) for i, p in zip(indices, paths) if not os.path.exists(p)]
    if missing:
        token = os.environ.get("HF_TOKEN")

        def fetch(item):
            i, path = item
            # a shard is only renamed into place once its parquet footer and `text` column check out
            download(f"{base_url.rstrip('/')}/{shard_name(i)}", path, token=token,
                     verify=lambda p: open_parquet(p, ["text"]))

        with ThreadPoolExecutor(min(MAX_PARALLEL_DOWNLOADS, len(missing))) as pool:
            for _ in tqdm(pool.map(fetch, missing), total=len(missing), desc=f"download to {parquet_dir}",
                          unit="shard"):
                pass
    return paths
