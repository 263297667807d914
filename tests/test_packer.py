"""Step 1's main process (ordering, packing, cutting, hashing and writing shards on its threads) gives the
same shards for any number of workers, fed synthetic encoded row groups of known content and random sizes."""

import hashlib
import os
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stacks_data.dataset.binfile import read_bin
from stacks_data.executors import Executor
from stacks_data.steps.pretrain.pretokenize import pretokenize
from stacks_data.steps.pretrain.resume import ResumeState

BOS = 7


def synthetic_row_group(task):
    """tokenize_row_group's result for a row group, made up from its name: documents of random lengths
    (1 to 5,000 tokens, a few empty row groups), each a BOS then tokens that say where they come from."""
    path, group, _, _ = task
    rng = np.random.default_rng([int(os.path.basename(path)[6:11]), group])
    lengths = rng.integers(1, 5000, size=int(rng.integers(0, 40)))
    bos = np.concatenate(([0], np.cumsum(lengths + 1)[:-1])).astype(np.int64) if len(lengths) else np.zeros(0, np.int64)
    tokens = rng.integers(BOS + 1, 65535, size=int((lengths + 1).sum()), dtype=np.uint16)
    tokens[bos] = BOS
    return tokens, len(lengths), int(lengths.sum()), 0, bos


class Synthetic:
    """An executor running synthetic_row_group instead of the encoder, in real worker processes."""

    def __init__(self, num_workers: int):
        self.executor = Executor(num_workers)

    def map(self, fn, items, setup=None, describe=repr, on_done=None):
        return self.executor.map(synthetic_row_group, items, describe=describe, on_done=on_done)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Parquet files with random numbers of row groups (what the packer reads of them: how many)."""
    folder = tmp_path_factory.mktemp("packer")
    rng = random.Random(22)
    paths = []
    for i in range(6):
        rows = rng.randint(1, 40)
        paths.append(str(folder / f"shard_{i:05d}.parquet"))
        pq.write_table(pa.table({"text": ["x"] * rows}), paths[-1], row_group_size=rng.randint(1, 8))
    return paths


def expected_stream(paths: list[str]) -> dict[str, np.ndarray]:
    """Each split's tokens: its files' row groups in order (val: the last file)."""
    def stream(files):
        parts = [synthetic_row_group((p, g, 0, "text"))[0] for p in files for g in range(pq.ParquetFile(p).num_row_groups)]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint16)
    return {"val": stream(paths[-1:]), "train": stream(paths[:-1])}


@pytest.mark.parametrize("shard_size", [9_973, 100_000])
def test_any_number_of_workers_gives_the_same_shards(inputs, tmp_path, shard_size):
    expected = expected_stream(inputs)
    made = {}
    for num_workers in (1, 3, 8):
        out = tmp_path / f"n{num_workers}"
        stats, records = pretokenize("unused", inputs, str(out), shard_size, Synthetic(num_workers), False, "text",
                                     "tiktoken", ResumeState(str(tmp_path / f"state{num_workers}.json"), {}),
                                     bos_id=BOS)
        files = {name: (out / name).read_bytes() for name in sorted(os.listdir(out))}
        for path, size, sha256 in records:  # the records (the manifest's) are the files' bytes
            data = files[os.path.basename(path)]
            assert (len(data), hashlib.sha256(data).hexdigest()) == (size, sha256)
        made[num_workers] = files
        for split, tokens in expected.items():
            names = sorted(n for n in files if n.startswith(split))
            got = np.concatenate([read_bin(str(out / n)) for n in names]) if names else np.zeros(0, np.uint16)
            whole = len(tokens) if split == "val" else len(tokens) // shard_size * shard_size  # train drops its tail
            assert np.array_equal(got, tokens[:whole]), (num_workers, split)
            assert all(len(read_bin(str(out / n))) == shard_size for n in names[:-1])
            assert stats[split]["tokens"] == whole
    assert all(files == made[1] for files in made.values())
